#!/usr/bin/env python3
"""bench/step_vs_torch.py's dry run on the CPU: a batch of 2, the head alone and the last block
trained, one training step of graft's bench_step and of PyTorch eager per row. Every planned row
must be in the JSON and ok, the ratio must be graft's images/s over the row's, and training the
same batch must lower its loss on both sides (a step that computes nothing, or the wrong
gradient's sign, would not). bench_step itself must answer an impossible --fine-tune with exit 2
and one line naming the option.

Needs torch, torchvision, numpy, pillow, models/efficientnet_lite0.safetensors (scripts/setup.sh)
and a built bench/bench_step under GRAFT_BINARY_DIR (set by ctest).
Exit 0: pass, 1: fail, 77: skip."""
import importlib.util
import json
import os
import subprocess
import sys
import tempfile

from cli_util import SRC, check, finish

BUILD = os.environ.get('GRAFT_BINARY_DIR', os.path.join(SRC, 'build'))
EXE = os.path.join(BUILD, 'bench', 'bench_step')
MODEL = os.path.join(SRC, 'models', 'efficientnet_lite0.safetensors')
SCRIPT = os.path.join(SRC, 'bench', 'step_vs_torch.py')


def dry_run(tmp, env):
    out = os.path.join(tmp, 'step.json')
    p = subprocess.run([sys.executable, SCRIPT, '--build', BUILD, '--model', MODEL, '--device',
                        'cpu', '--fine-tune', '0,1', '--batch', '2', '--iters', '2', '--warmup',
                        '1', '--json', out], capture_output=True, text=True, env=env, timeout=300)
    check(p.returncode == 0, f'step_vs_torch.py exit {p.returncode}: {p.stderr[-500:]!r}')
    if not os.path.exists(out):
        check(False, 'step_vs_torch.py wrote no JSON')
        return
    rows = json.load(open(out))['rows']
    want = [(ft, impl) for ft in ('0', '1') for impl in ('graft', 'eager-fp32', 'eager-tf32')]
    check([(r['fine_tune'], r['impl']) for r in rows] == want, f'rows {rows}')
    graft = {r['fine_tune']: r for r in rows if r['impl'] == 'graft'}
    for r in rows:
        what = f'--fine-tune {r["fine_tune"]} {r["impl"]}'
        check(r['status'] == 'ok', f'{what}: {r.get("error")}')
        if r['status'] != 'ok':
            continue
        check(r['blocks'] == int(r['fine_tune']), f'{what}: {r["blocks"]} blocks trained')
        check(r['loss_last_step'] < r['loss_first_step'],
              f'{what}: loss {r["loss_first_step"]} -> {r["loss_last_step"]} did not fall')
        g = graft.get(r['fine_tune'], {})
        if g.get('status') == 'ok':
            check(abs(r['ratio'] - g['images_per_s'] / r['images_per_s']) < 1e-9,
                  f'{what}: ratio is graft images/s over the row\'s')


def bad_setting():
    p = subprocess.run([EXE, '--model', MODEL, '--fine-tune', '19'], capture_output=True,
                       text=True, timeout=60)
    lines = p.stderr.strip().splitlines()
    check(p.returncode == 2 and len(lines) == 1 and '--fine-tune 19' in lines[0] and not p.stdout,
          f'bench_step --fine-tune 19: exit {p.returncode}, {p.stderr!r}')


def main():
    for module in ('numpy', 'torch', 'torchvision', 'PIL'):
        if importlib.util.find_spec(module) is None:
            print(f'SKIP: {module} is not installed')
            return 77
    if not os.path.exists(MODEL):
        print(f'SKIP: {MODEL} is missing (scripts/setup.sh fetches it)')
        return 77
    if not os.path.exists(EXE):
        print(f'SKIP: {EXE} is not built')
        return 77
    env = dict(os.environ, OMP_WAIT_POLICY='passive')
    with tempfile.TemporaryDirectory() as tmp:
        bad_setting()
        dry_run(tmp, env)
    return finish()


if __name__ == '__main__':
    sys.exit(main())
