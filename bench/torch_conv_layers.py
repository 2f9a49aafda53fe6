#!/usr/bin/env python3
"""PyTorch's F.conv2d on every conv of EfficientNet-Lite0 at 224x224: the per-layer yardstick
beside bench_cuda_ops's hand kernels and cuDNN rows.

    python3 bench/torch_conv_layers.py --batches 32,256 --json OUT.json [--iters 20]
        [--repeats 5] [--layers all|dw] [--device cuda|cpu]

Each layer runs in four ways: NCHW fp32 with TF32 off, NCHW with TF32 allowed (PyTorch's
default for convolutions), and channels_last (NHWC, graft's layout) with TF32 off and allowed;
cudnn.benchmark is on, so each picks cuDNN's fastest algorithm after a warm-up. The conv alone,
no bias or activation (as the cuDNN rows; graft's hand kernel includes them). Where TF SAME
padding is asymmetric (the strided convs: one more pixel after than before) the input is padded
with F.pad first, as bench/torch_efficientnet_lite.py does, and the row times both the pad plus
the conv (`*_us`, what the model pays) and the conv on an input padded beforehand
(`*_conv_only_us`); symmetric padding goes to F.conv2d's own `padding`.

Timing: CUDA events around `--iters` back-to-back calls, the per-call time of each such run,
median over `--repeats` runs; inputs rotate among enough copies to outrun the L2 cache, as
bench_cuda_ops does.

Rows join with bench_cuda_ops --json rows on `key` = "GROUP | NAME | SHAPE" (for example
"conv b32 | dw 3x3 s1 | n32 112x112x32->112x112x32 k3 s1 g32"): the same layer list,
deduplicated the same way with the same count, and the same shape string. The rows "sum bN"
add each layer times its count, as bench_cuda_ops's do. A layer or way that fails is a row (or
a field) with status "failed" and the error, never absent; the JSON is rewritten after every
layer, with the layers not reached yet as status "not run", so a run stopped by a time limit
keeps what it measured.

--device cpu with --batches 1 --iters 1 checks the plumbing on a machine without a GPU (the
TF32 switches do nothing there).
"""
import argparse
import json
import math
import os
import statistics
import sys
import time

import torch
import torch.nn.functional as F

# EfficientNet-Lite0's block args (repeats, kernel, stride, expand, in, out), stem 32 and head
# 1280 channels: the same table as bench_cuda_ops.cpp's efficientnet_lite0_convs.
BLOCKS = [(1, 3, 1, 1, 32, 16), (2, 3, 2, 6, 16, 24), (2, 5, 2, 6, 24, 40),
          (3, 3, 2, 6, 40, 80), (3, 5, 1, 6, 80, 112), (4, 5, 2, 6, 112, 192),
          (1, 3, 1, 6, 192, 320)]
WAYS = ('nchw_fp32', 'nchw_tf32', 'nhwc_fp32', 'nhwc_tf32')


def same_padding(size, k, stride):
    """TF SAME along one axis: (output size, pad before, pad after), as graft's same_padding."""
    out = (size + stride - 1) // stride
    total = max((out - 1) * stride + k - size, 0)
    return out, total // 2, total - total // 2


def conv(n, h, cin, cout, k, stride, groups, act, residual, name):
    out, before, after = same_padding(h, k, stride)
    return {'n': n, 'h': h, 'cin': cin, 'cout': cout, 'k': k, 'stride': stride,
            'groups': groups, 'out': out, 'pad': (before, after), 'act': act,
            'residual': residual, 'name': name}


def lite0_convs(n):
    """[(layer, count)] in bench_cuda_ops's order; layers equal in shape, activation and residual
    are one row with a count, as there."""
    rows = []

    def add(c):
        same = {k: v for k, v in c.items() if k != 'name'}  # bench_cuda_ops's same(): not the name
        for r in rows:
            if {k: v for k, v in r[0].items() if k != 'name'} == same:
                r[1] += 1
                return
        rows.append([c, 1])

    add(conv(n, 224, 3, 32, 3, 2, 1, 'relu6', False, 'stem 3x3 s2'))
    h = 112
    for reps, k, s, e, i, o in BLOCKS:
        for j in range(reps):
            cin, stride = (o, 1) if j else (i, s)
            mid = cin * e
            if e != 1:
                add(conv(n, h, cin, mid, 1, 1, 1, 'relu6', False, 'expand 1x1'))
            add(conv(n, h, mid, mid, k, stride, mid, 'relu6', False, f'dw {k}x{k} s{stride}'))
            ho = (h + stride - 1) // stride
            add(conv(n, ho, mid, o, 1, 1, 1, 'none', stride == 1 and cin == o, 'project 1x1'))
            h = ho
    add(conv(n, 7, 320, 1280, 1, 1, 1, 'relu6', False, 'head 1x1'))
    return [(c, count) for c, count in rows]


def shape_str(c):
    """bench_cuda_ops's conv_str."""
    return (f"n{c['n']} {c['h']}x{c['h']}x{c['cin']}->{c['out']}x{c['out']}x{c['cout']} "
            f"k{c['k']} s{c['stride']} g{c['groups']}")


def key(group, name, shape):
    return f'{group} | {name} | {shape}'


class Timer:
    """Median per-call milliseconds of `iters` back-to-back calls, over `repeats` runs."""

    def __init__(self, device, iters, repeats, warm=3):
        self.device, self.iters, self.repeats, self.warm = device, iters, repeats, warm

    def __call__(self, f):
        for i in range(self.warm):
            f(i)
        runs = []
        if self.device == 'cuda':
            a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            torch.cuda.synchronize()
            for _ in range(self.repeats):
                a.record()
                for i in range(self.iters):
                    f(i)
                b.record()
                b.synchronize()
                runs.append(a.elapsed_time(b) / self.iters)
        else:
            for _ in range(self.repeats):
                t0 = time.perf_counter()
                for i in range(self.iters):
                    f(i)
                runs.append(1e3 * (time.perf_counter() - t0) / self.iters)
        return statistics.median(runs)


def l2_bytes(device):
    if device != 'cuda':
        return 0
    return getattr(torch.cuda.get_device_properties(0), 'L2_cache_size', 50 << 20)


def rotation(nbytes, l2):
    """Copies of an input that make a rotation outrun the L2 (2..16), as bench_cuda_ops."""
    if not l2 or not nbytes:
        return 1
    return max(2, min(16, math.ceil(2 * l2 / nbytes)))


def set_tf32(on):
    torch.backends.cudnn.allow_tf32 = on
    torch.backends.cuda.matmul.allow_tf32 = on


def time_layer(c, way, timer, l2, device, gen):
    """(pad + conv ms, conv-only ms or None): one way of one layer."""
    set_tf32(way.endswith('tf32'))
    fmt = torch.channels_last if way.startswith('nhwc') else torch.contiguous_format
    # Random on the device: the largest input is 308M floats at batch 256.
    x0 = torch.empty(c['n'], c['cin'], c['h'], c['h'], device=device).uniform_(-1, 1,
                                                                             generator=gen)
    w = torch.empty(c['cout'], c['cin'] // c['groups'], c['k'], c['k'], device=device).uniform_(
        -0.2, 0.2, generator=gen)
    x0, w = x0.contiguous(memory_format=fmt), w.contiguous(memory_format=fmt)
    rot = rotation(x0.numel() * 4, l2)
    xs = [x0] + [x0.clone(memory_format=fmt) for _ in range(rot - 1)]
    before, after = c['pad']
    s, g = c['stride'], c['groups']
    if before == after:
        t = timer(lambda i: F.conv2d(xs[i % rot], w, None, s, before, 1, g))
        return t, None
    pad = (before, after, before, after)  # left, right, top, bottom
    t = timer(lambda i: F.conv2d(F.pad(xs[i % rot], pad), w, None, s, 0, 1, g))
    padded = [F.pad(x, pad).contiguous(memory_format=fmt) for x in xs]
    xs.clear()  # the unpadded copies are not needed any more: free them before timing
    x0 = None
    t_conv = timer(lambda i: F.conv2d(padded[i % rot], w, None, s, 0, 1, g))
    return t, t_conv


def plan(args):
    """Every row the run will fill, as (row, layer, count); the layer is None for a sum row.
    Each starts as status "not run", so a run stopped by a time limit still lists what it
    missed."""
    planned = []
    for batch in args.batches:
        group = f'conv b{batch}'
        flops_sum, layers = 0.0, 0
        for c, count in lite0_convs(batch):
            if args.layers == 'dw' and c['groups'] == 1:
                continue
            shape = shape_str(c)
            flops = 2.0 * c['n'] * c['out'] * c['out'] * c['cout'] * c['k'] ** 2 * (
                c['cin'] // c['groups'])
            row = {'group': group, 'name': c['name'], 'shape': shape,
                   'key': key(group, c['name'], shape), 'count': count, 'batch': batch,
                   'flops': flops, 'status': 'not run',
                   'pad': ('symmetric' if c['pad'][0] == c['pad'][1] else
                           f'F.pad before the conv ({c["pad"][0]} before, {c["pad"][1]} after)'),
                   'errors': {}}
            row.update({f'{way}_us': None for way in WAYS})
            planned.append((row, c, count))
            flops_sum += count * flops
            layers += count
        name = ('conv forward, all layers' if args.layers == 'all'
                else 'depthwise convs, all layers')
        total = {'group': f'sum b{batch}', 'name': name,
                 'shape': f'n{batch} EfficientNet-Lite0 224x224', 'count': 1, 'batch': batch,
                 'flops': flops_sum, 'note': f'{layers} convs, each shape times its count',
                 'status': 'not run'}
        total['key'] = key(total['group'], total['name'], total['shape'])
        total.update({f'{way}_us': None for way in WAYS})
        planned.append((total, None, 1))
    return planned


def measure(row, c, timer, l2, device, gen):
    """Fills one layer's row: each way's time, or its error."""
    for way in WAYS:
        try:
            t, t_conv = time_layer(c, way, timer, l2, device, gen)
            row[f'{way}_us'] = round(1e3 * t, 3)
            row[f'{way}_conv_only_us'] = None if t_conv is None else round(1e3 * t_conv, 3)
        except (RuntimeError, ValueError, MemoryError) as e:
            row[f'{way}_us'] = row[f'{way}_conv_only_us'] = None
            row['errors'][way] = f'{type(e).__name__}: {str(e).splitlines()[0][:200]}'
            if device == 'cuda':
                torch.cuda.empty_cache()
    ok = [w for w in WAYS if row[f'{w}_us'] is not None]
    row['status'] = 'ok' if len(ok) == len(WAYS) else ('partial' if ok else 'failed')
    best = min(ok, key=lambda w: row[f'{w}_us']) if ok else None
    row['fastest'] = best
    row['fastest_us'] = row[f'{best}_us'] if best else None


def add_up(total, layer_rows):
    """A sum row from its batch's layer rows. A way missing on any layer has no sum: a sum of
    fewer layers would mislead."""
    for way in WAYS:
        times = [r[f'{way}_us'] for r in layer_rows]
        total[f'{way}_us'] = (None if any(t is None for t in times) else
                              round(sum(r['count'] * r[f'{way}_us'] for r in layer_rows), 3))
    have = [total[f'{way}_us'] is not None for way in WAYS]
    total['status'] = 'ok' if all(have) else ('partial' if any(have) else 'failed')


def run(args, save):
    """Measures every planned row in order, calling save(rows) after each so that the JSON on
    disk is always whole and up to date."""
    device = args.device
    if device == 'cuda' and not torch.cuda.is_available():
        sys.exit('torch_conv_layers: --device cuda but torch sees no GPU')
    torch.backends.cudnn.benchmark = True
    timer = Timer(device, args.iters, args.repeats, warm=3 if args.iters > 1 else 1)
    l2 = l2_bytes(device)
    gen = torch.Generator(device=device).manual_seed(1)
    planned = plan(args)
    rows = [row for row, _, _ in planned]
    save(rows)
    batch_rows = []
    for row, c, count in planned:
        if c is None:
            add_up(row, batch_rows)
            batch_rows = []
        else:
            measure(row, c, timer, l2, device, gen)
            batch_rows.append(row)
            print(f"{row['group']:9s} {c['name']:12s} {row['shape']:40s} x{count} " +
                  ' '.join(f"{w} {row[f'{w}_us'] if row[f'{w}_us'] is not None else 'FAILED'}"
                           for w in WAYS), flush=True)
        save(rows)
    return rows


def describe(device):
    if device == 'cuda':
        return torch.cuda.get_device_name()
    return f'cpu ({torch.get_num_threads()} threads)'


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--batches', default='32,256', help='comma-separated batch sizes')
    p.add_argument('--json', help='write the rows here')
    p.add_argument('--iters', type=int, default=20, help='back-to-back calls per timed run')
    p.add_argument('--repeats', type=int, default=5, help='timed runs; the median is kept')
    p.add_argument('--layers', choices=['all', 'dw'], default='all',
                   help='every conv, or only the depthwise ones')
    p.add_argument('--device', choices=['cuda', 'cpu'],
                   default='cuda' if torch.cuda.is_available() else 'cpu')
    args = p.parse_args(argv)
    try:
        args.batches = [int(b) for b in args.batches.split(',') if b]
    except ValueError:
        p.error(f'--batches {args.batches!r}: expected comma-separated integers')
    if not args.batches or min(args.batches) < 1 or args.iters < 1 or args.repeats < 1:
        p.error('--batches, --iters and --repeats must be positive')
    return args


def main(argv=None):
    args = parse_args(argv)
    t0 = time.perf_counter()
    result = {'device': describe(args.device), 'torch': torch.__version__,
              'cudnn': torch.backends.cudnn.version() if args.device == 'cuda' else None,
              'iters': args.iters, 'repeats': args.repeats, 'layers': args.layers,
              'ways': {'nchw_fp32': 'NCHW, TF32 off', 'nchw_tf32': 'NCHW, TF32 allowed',
                       'nhwc_fp32': 'channels_last, TF32 off',
                       'nhwc_tf32': 'channels_last, TF32 allowed'},
              'join_key': 'key = "group | name | shape", as bench_cuda_ops --json rows',
              'seconds': None, 'rows': []}

    def save(rows):
        if not args.json:
            return
        result['seconds'], result['rows'] = round(time.perf_counter() - t0, 1), rows
        tmp = args.json + '.tmp'
        with open(tmp, 'w') as f:
            json.dump(result, f, indent=1)
        os.replace(tmp, args.json)  # a reader never sees half a file

    rows = run(args, save)
    if args.json:
        print(f'wrote {args.json}')
    failed = [r['key'] for r in rows if r['status'] == 'failed']
    if failed:
        print(f'torch_conv_layers: {len(failed)} rows failed in every way: {failed[:3]}',
              file=sys.stderr)
    return 1 if failed else 0


if __name__ == '__main__':
    sys.exit(main())
