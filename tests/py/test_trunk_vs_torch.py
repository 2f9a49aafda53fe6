#!/usr/bin/env python3
"""bench/trunk_vs_torch.py's dry run on the CPU: a batch of 2 through graft's bench_trunk, the
eager PyTorch variants and, where the onnx and onnxruntime packages are installed, onnxruntime on
the exported graph cut to the trunk. graft's and onnxruntime's features must match the float64
PyTorch reference within TOLERANCE (relative to the largest feature), every row must be in the
JSON, and a graft run that fails must be a failed row and a non-zero exit. bench_trunk itself
must answer a wrong-sized input with exit 2 and one line naming the file.

Needs torch, numpy, models/efficientnet_lite0.safetensors (scripts/setup.sh) and a built
bench/bench_trunk (and graft, for the onnxruntime row) under GRAFT_BINARY_DIR (set by ctest);
scripts/bench-venv.sh makes an environment with the packages. Exit 0: pass, 1: fail, 77: skip."""
import importlib.util
import json
import os
import subprocess
import sys
import tempfile

from cli_util import SRC, check, finish

BUILD = os.environ.get('GRAFT_BINARY_DIR', os.path.join(SRC, 'build'))
EXE = os.path.join(BUILD, 'bench', 'bench_trunk')
MODEL = os.path.join(SRC, 'models', 'efficientnet_lite0.safetensors')
SCRIPT = os.path.join(SRC, 'bench', 'trunk_vs_torch.py')
# graft's CPU twins and PyTorch's fp32 convs sum in different orders; over the trunk's 49 convs
# they agree to about 2e-6 of the largest feature.
TOLERANCE = 1e-4
EAGER = ['eager-fp32', 'eager-tf32', 'channels_last-bf16']
ORT = (['onnxruntime'] if all(importlib.util.find_spec(m) for m in ('onnx', 'onnxruntime'))
       else [])


def compare(tmp, env):
    out = os.path.join(tmp, 'trunk.json')
    p = subprocess.run([sys.executable, SCRIPT, '--build', BUILD, '--model', MODEL, '--device',
                        'cpu', '--batches', '2', '--iters', '2', '--repeats', '1', '--warmup', '1',
                        '--variants', ','.join(EAGER + ORT), '--json', out],
                       capture_output=True, text=True, env=env, timeout=300)
    check(p.returncode == 0, f'trunk_vs_torch.py exit {p.returncode}: {p.stderr[-500:]!r}')
    if not os.path.exists(out):
        check(False, 'trunk_vs_torch.py wrote no JSON')
        return
    rows = {r['impl']: r for r in json.load(open(out))['rows']}
    check(sorted(rows) == sorted(['graft'] + EAGER + ORT), f'rows {sorted(rows)}')
    for impl, r in rows.items():
        check(r['status'] == 'ok', f'{impl}: {r.get("error")}')
        if r['status'] != 'ok':
            continue
        check(r['batch'] == 2 and r['images_per_s'] > 0, f'{impl}: batch and images/s')
        check(abs(r['ratio'] - rows['graft']['images_per_s'] / r['images_per_s']) < 1e-9,
              f'{impl}: ratio is graft images/s over the row\'s')
    g = rows.get('graft', {})
    if g.get('status') == 'ok':
        print(f'graft vs float64 reference: max rel diff {g["max_rel_diff"]:.2e}')
        check(g['max_rel_diff'] < TOLERANCE,
              f'graft features vs the float64 reference: {g["max_rel_diff"]:.2e} >= {TOLERANCE}')
    e = rows.get('eager-fp32', {})
    if e.get('status') == 'ok':  # the reference itself: PyTorch fp32 must agree with it too
        check(e['max_rel_diff'] < TOLERANCE, f'eager-fp32 vs float64: {e["max_rel_diff"]:.2e}')
    o = rows.get('onnxruntime', {})
    if o.get('status') == 'ok':  # the exported graph, cut to the trunk: the same fp32 features
        print(f'onnxruntime vs float64 reference: max rel diff {o["max_rel_diff"]:.2e}')
        check(o['max_rel_diff'] < TOLERANCE, f'onnxruntime vs float64: {o["max_rel_diff"]:.2e}')
        check('no Pad node' in o['notes'], f'onnxruntime notes: {o["notes"]}')
    elif not ORT:
        print('note: onnx or onnxruntime is not installed; the onnxruntime row was not run')
    b = rows.get('channels_last-bf16', {})
    if b.get('status') == 'ok':  # bf16 differs, but stays the same features
        check(1e-4 < b['max_rel_diff'] < 0.1, f'bf16 vs float64: {b["max_rel_diff"]:.2e}')


def graft_failure(tmp, env):
    out = os.path.join(tmp, 'failed.json')
    p = subprocess.run([sys.executable, SCRIPT, '--build', os.path.join(tmp, 'no-build'),
                        '--model', MODEL, '--device', 'cpu', '--batches', '1', '--iters', '1',
                        '--variants', 'eager-fp32', '--json', out],
                       capture_output=True, text=True, env=env, timeout=300)
    check(p.returncode == 1, f'graft missing: exit {p.returncode}, expected 1')
    rows = json.load(open(out))['rows'] if os.path.exists(out) else []
    check([r['impl'] for r in rows] == ['graft', 'eager-fp32'], f'rows {rows}')
    if rows:
        check(rows[0]['status'] == 'failed' and 'bench_trunk' in rows[0].get('error', ''),
              f'graft row {rows[0]}')
        check(rows[1]['status'] == 'ok' and rows[1]['ratio'] is None, f'eager row {rows[1]}')


def bad_input(tmp):
    short = os.path.join(tmp, 'short.f32')
    with open(short, 'wb') as f:
        f.write(b'\0' * 1000)
    p = subprocess.run([EXE, '--model', MODEL, '--input', short, '--shape', '1,224,224'],
                       capture_output=True, text=True, timeout=60)
    lines = p.stderr.strip().splitlines()
    check(p.returncode == 2 and len(lines) == 1 and short in lines[0] and not p.stdout,
          f'bench_trunk on a short input: exit {p.returncode}, {p.stderr!r}')


def main():
    for module in ('numpy', 'torch'):
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
        bad_input(tmp)
        compare(tmp, env)
        graft_failure(tmp, env)
    return finish()


if __name__ == '__main__':
    sys.exit(main())
