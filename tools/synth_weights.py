#!/usr/bin/env python3
"""Deterministic synthetic weights for a graft architecture, written in a SOURCE naming.

    synth_weights.py --arch resnet18 --naming torchvision -o resnet18_tv.safetensors

The file looks like a checkpoint exported from that source (its names, float32, plus the
int64 num_batches_tracked that PyTorch BatchNorm carries), so feeding it to convert.py
exercises the real name mapping, and loading it into the PyTorch model (make_fixtures.py)
gives reference logits without downloading pretrained weights.

Every value is a pure function of (canonical tensor name, element index): splitmix64 over
fnv1a64(name) ^ index, in integer arithmetic, then one float64 multiply and a cast. So the
file is bit-identical across runs and machines, and the same canonical tensor gets the same
values in every naming (a timm-named and a lukemelas-named Lite1 convert to the same file).
Standard library + numpy only.
"""

import argparse
import math
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import graftfile  # noqa: E402

_M64 = (1 << 64) - 1


def fnv1a64(text):
    h = 0xcbf29ce484222325
    for byte in text.encode('utf-8'):
        h = ((h ^ byte) * 0x100000001b3) & _M64
    return h


def uniform(name, count):
    """count values in [-1, 1), element i from splitmix64(fnv1a64(name) ^ i)."""
    z = np.arange(count, dtype=np.uint64) ^ np.uint64(fnv1a64(name))
    # numpy uint64 array arithmetic wraps modulo 2^64, which is what splitmix64 wants.
    z = z + np.uint64(0x9e3779b97f4a7c15)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xbf58476d1ce4e5b9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94d049bb133111eb)
    z = z ^ (z >> np.uint64(31))
    return (z >> np.uint64(11)).astype(np.float64) * (2.0 ** -52) - 1.0


def synth_tensor(name, shape, fc_in):
    """Values for one canonical tensor, scaled so activations stay O(1) through deep nets."""
    count = math.prod(shape)
    u = uniform(name, count)
    part = name.rsplit('.', 1)[1]
    if name.endswith('conv.weight'):
        fan_in = math.prod(shape[1:])
        v = u * math.sqrt(3.0 * 2.0 / fan_in)  # He: variance 2 / fan_in
    elif name.startswith('fc.'):
        v = u / math.sqrt(fc_in)  # PyTorch Linear's default range
    elif part == 'weight':
        v = 1.0 + 0.2 * u
    elif part == 'bias':
        v = 0.1 * u
    elif part == 'running_mean':
        v = 0.1 * u
    elif part == 'running_var':
        v = 1.0 + 0.5 * np.abs(u)
    else:
        raise ValueError(name)
    return v.astype(np.float32).reshape(shape)


def synth(arch, naming, num_classes=1000):
    """OrderedDict source name -> array, in the source model's order."""
    shapes = graftfile.canonical_shapes(arch, num_classes)
    names = graftfile.name_map(arch, naming, num_classes)
    out = {}
    for canon, shape in shapes.items():
        src = names[canon]
        out[src] = synth_tensor(canon, shape, shapes['fc.weight'][1])
        if canon.endswith('.bn.running_var'):
            # PyTorch BatchNorm's counter: present in real checkpoints, dropped by convert.py.
            out[src.rsplit('.', 1)[0] + '.num_batches_tracked'] = np.array(100, dtype=np.int64)
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--arch', required=True, choices=graftfile.ARCHS)
    ap.add_argument('--naming', required=True, choices=('torchvision', 'timm', 'lukemelas'))
    ap.add_argument('--num-classes', type=int, default=1000)
    ap.add_argument('-o', '--output', required=True)
    a = ap.parse_args(argv)
    if a.naming not in graftfile.NAMINGS[a.arch]:
        ap.error(f'--arch {a.arch} comes in {" or ".join(graftfile.NAMINGS[a.arch])} naming')
    tensors = synth(a.arch, a.naming, a.num_classes)
    graftfile.write_safetensors(a.output, tensors, {
        'synth': 'graft synth_weights.py v1', 'arch': a.arch, 'naming': a.naming})
    return 0


if __name__ == '__main__':
    sys.exit(main())
