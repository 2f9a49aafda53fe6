#!/usr/bin/env python3
"""A plain numpy forward pass of every graft architecture, read from graft weight files,
checked against the PyTorch fixtures in tests/fixtures/.

This closes the loop without torch: synth_weights.py -> convert.py -> a graft file whose
metadata (padding, bn_eps) alone decides the numerics -> the same logits PyTorch computed
from the source-named weights. If a name mapping, a padding rule or an eps is wrong, the
logits disagree. It is also a slow, obviously-correct twin of the C++ backbone: NHWC,
weights in PyTorch OIHW layout, batch norm applied as running statistics.

Run by ctest as a plain script: exit 0 pass, 1 fail, 77 skip. Standard library + numpy.
"""

import math
import os
import sys
import tempfile
import zipfile

try:
    import numpy as np
except ImportError:
    print('SKIP: numpy is not installed')
    sys.exit(77)

SRC = os.environ.get('GRAFT_SOURCE_DIR') or os.path.dirname(os.path.dirname(
    os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(SRC, 'tools'))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import convert  # noqa: E402
import graftfile  # noqa: E402
import synth_weights  # noqa: E402
from make_synth_models import SYNTH, is_graft_file  # noqa: E402
from test_converter import find_lite0  # noqa: E402


def pad_amounts(size, k, stride, padding):
    """(before, after, output size) along one axis."""
    if padding == 'tf_same':  # TensorFlow SAME: output ceil(size / stride), extra pad after
        out = math.ceil(size / stride)
        total = max((out - 1) * stride + k - size, 0)
        return total // 2, total - total // 2, out
    p = k // 2
    return p, p, (size + 2 * p - k) // stride + 1


def conv2d(x, w, stride, padding, depthwise=False, fill=0.0):
    """x NHWC, w OIHW (O x 1 x kh x kw when depthwise)."""
    n, h, wd, c = x.shape
    o, i, kh, kw = w.shape
    t, b, oh = pad_amounts(h, kh, stride, padding)
    l, r, ow = pad_amounts(wd, kw, stride, padding)
    xp = np.pad(x, ((0, 0), (t, b), (l, r), (0, 0)), constant_values=fill)
    taps = [xp[:, dy:dy + stride * (oh - 1) + 1:stride, dx:dx + stride * (ow - 1) + 1:stride, :]
            for dy in range(kh) for dx in range(kw)]
    if depthwise:
        return sum(tap * w[:, 0, dy, dx] for tap, (dy, dx) in
                   zip(taps, [(dy, dx) for dy in range(kh) for dx in range(kw)]))
    cols = np.concatenate(taps, axis=-1)  # N, oh, ow, kh*kw*C in (dy, dx, c) order
    return cols @ w.transpose(2, 3, 1, 0).reshape(kh * kw * i, o)


class Net:
    def __init__(self, tensors, meta):
        self.t = {k: v.astype(np.float64) for k, v in tensors.items()}
        self.padding = meta['padding']
        self.eps = float(meta['bn_eps'])

    def unit(self, x, name, stride=1, depthwise=False):
        """conv then batch norm with running statistics."""
        y = conv2d(x, self.t[name + '.conv.weight'], stride, self.padding, depthwise)
        if name + '.conv.bias' in self.t:
            y = y + self.t[name + '.conv.bias']
        g, b = self.t[name + '.bn.weight'], self.t[name + '.bn.bias']
        m, v = self.t[name + '.bn.running_mean'], self.t[name + '.bn.running_var']
        return (y - m) / np.sqrt(v + self.eps) * g + b

    def classify(self, x):
        return x.mean(axis=(1, 2)) @ self.t['fc.weight'].T + self.t['fc.bias']


def relu6(x):
    return np.clip(x, 0.0, 6.0)


def relu(x):
    return np.maximum(x, 0.0)


def forward(arch, tensors, meta, x):
    net = Net(tensors, meta)
    x = x.astype(np.float64)
    if arch in graftfile.RESNET_LAYERS:
        x = relu(net.unit(x, 'stem', 2))
        # 3x3/2 max pool, padding 1 (padded cells never win: fill with -inf)
        x = conv_max_pool(x)
        for i, b in enumerate(graftfile.blocks(arch)):
            p = f'blocks.{i}'
            if b.kind == 'basic':
                y = relu(net.unit(x, p + '.conv1', b.stride))
                y = net.unit(y, p + '.conv2')
            else:
                y = relu(net.unit(x, p + '.conv1'))
                y = relu(net.unit(y, p + '.conv2', b.stride))  # torchvision: stride on 3x3
                y = net.unit(y, p + '.conv3')
            x = relu(y + (net.unit(x, p + '.down', b.stride) if b.down else x))
        return net.classify(x)
    x = relu6(net.unit(x, 'stem', 2))
    for i, b in enumerate(graftfile.blocks(arch)):
        p = f'blocks.{i}'
        y = relu6(net.unit(x, p + '.expand')) if b.mid != b.cin else x
        y = relu6(net.unit(y, p + '.dw', b.stride, depthwise=True))
        y = net.unit(y, p + '.project')
        x = y + x if (b.stride == 1 and b.cin == b.cout) else y
    return net.classify(relu6(net.unit(x, 'head')))


def conv_max_pool(x):
    n, h, w, c = x.shape
    _, _, oh = pad_amounts(h, 3, 2, 'symmetric')
    _, _, ow = pad_amounts(w, 3, 2, 'symmetric')
    xp = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)), constant_values=-np.inf)
    return np.max([xp[:, dy:dy + 2 * (oh - 1) + 1:2, dx:dx + 2 * (ow - 1) + 1:2, :]
                   for dy in range(3) for dx in range(3)], axis=0)


def compare(arch, model_path):
    fx, fmeta = graftfile.read_safetensors(os.path.join(SRC, 'tests', 'fixtures',
                                                        arch + '.safetensors'))
    tensors, meta = graftfile.read_safetensors(model_path)
    got = forward(arch, tensors, meta, fx['input'])
    want = fx['logits'].astype(np.float64)
    err = np.abs(got - want).max() / np.abs(want).max()
    same_top1 = (got.argmax(1) == want.argmax(1)).all()
    return err, same_top1, [int(i) for i in got.argmax(1)]


def main():
    failed = 0
    with tempfile.TemporaryDirectory() as tmp:
        cases = []
        for arch, naming in SYNTH.items():
            src, out = os.path.join(tmp, arch + '.src'), os.path.join(tmp, arch + '.graft')
            synth_weights.main(['--arch', arch, '--naming', naming, '-o', src])
            if convert.main([src, '-o', out, '--arch', arch]) != 0:
                return 1
            cases.append((arch, out))
        found = find_lite0()
        if found is None:
            print('SKIP efficientnet_lite0: no pretrained checkpoint under models/ or .cache/')
        else:
            if isinstance(found, tuple):
                with zipfile.ZipFile(found[0]) as z:
                    found = z.extract(found[1], tmp)
            out = found
            if not is_graft_file(found):
                out = os.path.join(tmp, 'lite0.graft')
                if convert.main([found, '-o', out, '--arch', 'efficientnet_lite0']) != 0:
                    return 1
            cases.append(('efficientnet_lite0', out))
        for arch, path in cases:
            err, same, top1 = compare(arch, path)
            # The fixtures are float64 results rounded to float32, and so is this.
            ok = err < 1e-5 and same
            failed += not ok
            print(f'{"PASS" if ok else "FAIL"} {arch}: max |diff| / max |logit| = {err:.2e}, '
                  f'top-1 {top1}')
    return 1 if failed else 0


if __name__ == '__main__':
    sys.exit(main())
