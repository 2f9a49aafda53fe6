#!/usr/bin/env python3
"""One training step, graft against PyTorch eager on the same card: the fine-tuning goal.

    python3 bench/step_vs_torch.py --build build --model models/efficientnet_lite0.safetensors \\
        --json OUT.json [--device cuda|cpu] [--fine-tune 0,2,all] [--batch 32] [--iters N]
        [--repeats R] [--warmup W] [--variants eager-fp32,eager-tf32] [--seconds-per-row S]

Per --fine-tune setting (0: the head alone, the backbone still running forward; N: the last N
blocks; all), BUILD/bench/bench_step times graft's step (network_forward, network_backward,
network_update) on a batch of uint8 images, and then PyTorch runs the same recipe, built by
bench/pytorch_baseline.py (its Net: the frozen prefix under no_grad, the trained blocks with batch
norm folded into their convs, Dropout + Dense, label-smoothed cross-entropy, SGD with momentum and
the backbone at a tenth of the rate), one step being: normalise the uint8 batch already on the
device, boundary(), train_step() (zero_grad, forward, backward, step). Rows:

  eager-fp32   TF32 off for cuDNN convs and for matmuls: the same arithmetic as graft's
  eager-tf32   PyTorch's default TF32 settings (cuDNN convs may run on TF32 tensor cores)

Timing, for every row: warm-up steps, then `iters` back-to-back steps between two CUDA events
(the host clock on cpu), `repeats` times, median reported. ratio = graft's images/s over the row's
(above 1: graft is faster; the issue's goal is at least 1 against eager-fp32 for --fine-tune 2
and all). Every planned row is in the JSON from the start (status "not run") and is rewritten
after each one; a failed row keeps its error. Exit status: 0, or 1 when a graft row failed.
"""

import argparse
import datetime
import os
import sys

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, HERE)
import pytorch_baseline as baseline  # noqa: E402
import yardstick  # noqa: E402

VARIANTS = ['eager-fp32', 'eager-tf32']
DEFAULT_TF32 = (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32)
CLASSES = 5


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--build', default=os.path.join(REPO, 'build'),
                   help='build directory holding bench/bench_step')
    p.add_argument('--model',
                   default=os.path.join(REPO, 'models', 'efficientnet_lite0.safetensors'))
    p.add_argument('--json', required=True, help='results, rewritten after every row')
    p.add_argument('--device', choices=['cuda', 'cpu'],
                   default='cuda' if torch.cuda.is_available() else 'cpu')
    p.add_argument('--fine-tune', default='0,2,all', help='comma-separated settings')
    p.add_argument('--batch', type=int, default=None, help='images per step (32; 2 on cpu)')
    p.add_argument('--iters', type=int, help='steps per measurement (20; 1 on cpu)')
    p.add_argument('--repeats', type=int, help='measurements per row (5; 1 on cpu)')
    p.add_argument('--warmup', type=int, help='steps before timing (3; 1 on cpu)')
    p.add_argument('--variants', default=','.join(VARIANTS),
                   help=f'comma-separated, of {",".join(VARIANTS)}')
    p.add_argument('--seconds-per-row', type=float, default=120,
                   help='a row still running after this long fails')
    a = p.parse_args(argv)
    cuda = a.device == 'cuda'
    if cuda and not torch.cuda.is_available():
        p.error('--device cuda: PyTorch sees no CUDA device')
    a.fine_tune = a.fine_tune.split(',')
    a.batch = a.batch or (32 if cuda else 2)
    a.iters = a.iters or (20 if cuda else 1)
    a.repeats = a.repeats or (5 if cuda else 1)
    a.warmup = a.warmup if a.warmup is not None else (3 if cuda else 1)
    a.variants = a.variants.split(',')
    unknown = [v for v in a.variants if v not in VARIANTS]
    if unknown:
        p.error(f'--variants: unknown {unknown}; known: {VARIANTS}')
    if a.batch < 1:
        p.error('--batch must be >= 1')
    if not os.path.isfile(a.model):
        p.error(f'--model {a.model}: no such file (scripts/setup.sh fetches it)')
    return a


def run_graft(args, ft):
    exe = os.path.join(args.build, 'bench', 'bench_step')
    r = yardstick.run_program(
        exe, ['--model', args.model, '--fine-tune', ft, '--batch', str(args.batch), '--device',
              args.device, '--classes', str(CLASSES), '--iters', str(args.iters), '--repeats',
              str(args.repeats), '--warmup', str(args.warmup)], args.seconds_per_row)
    return {'ms': r['ms_per_step']['median'], 'ms_min': r['ms_per_step']['min'],
            'host_ms': r['host_ms_per_step'], 'loss_first': r['loss_first_step'],
            'loss_last': r['loss_last_step'], 'blocks': r['fine_tune_blocks'],
            'notes': 'hand-written fp32 kernels, batch norm folded at load; uint8 batch copied '
                     'from pinned memory on the copy stream each step'}


class NoTally:
    """The baseline's Tally reads accuracy for the epoch; a timed step needs none of it."""

    def add(self, logits, labels, loss):
        self.loss = loss


def torch_net(args, ft):
    argv = ['--split', '-', '--model', args.model, '--device', args.device, '--fine-tune', ft,
            '--seed', '1']
    b = baseline.parse_args(argv)
    net = baseline.Net(CLASSES, b)
    net.train_backbone = net.backbone.trained_blocks > 0
    net.head.train()
    return net


def run_torch(args, ft, variant):
    if variant == 'eager-fp32':
        torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    else:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = DEFAULT_TF32
    torch.backends.cudnn.benchmark = True  # fixed shapes, as bench/pytorch_baseline.py runs
    net = torch_net(args, ft)
    pre = net.backbone.pre
    dev = args.device
    g = torch.Generator().manual_seed(2)
    size = pre['input_size']
    images = torch.randint(0, 256, (args.batch, size, size, 3), generator=g,
                           dtype=torch.uint8).to(dev)
    labels = (torch.arange(args.batch) % CLASSES).to(dev)
    mean = torch.tensor(pre['mean'], device=dev).view(1, 3, 1, 1)
    std = torch.tensor(pre['std'], device=dev).view(1, 3, 1, 1)
    tally = NoTally()

    def step():
        x = images.permute(0, 3, 1, 2).float().div_(255).sub_(mean).div_(std)
        x = x.contiguous(memory_format=torch.channels_last)
        net.train_step(net.backbone.boundary(x), labels, tally)

    step()
    loss_first = tally.loss.item()
    for _ in range(args.warmup):
        step()
    cuda = dev == 'cuda'
    if cuda:
        torch.cuda.synchronize()
    t = yardstick.time_calls(step, cuda, args.iters, args.repeats)
    tf32 = (f'cudnn.allow_tf32={torch.backends.cudnn.allow_tf32}, '
            f'matmul.allow_tf32={torch.backends.cuda.matmul.allow_tf32}')
    return {**t, 'loss_first': loss_first, 'loss_last': tally.loss.item(),
            'blocks': net.backbone.trained_blocks,
            'notes': f'channels_last fp32, {tf32}; normalise on the device included'}


def main(argv=None):
    args = parse_args(argv)
    plan = [(ft, impl) for ft in args.fine_tune for impl in ['graft'] + args.variants]
    doc = {
        'what': 'one training step (forward, backward, update) from a uint8 batch, '
                'EfficientNet-Lite0 with the head alone or the last blocks trained',
        'device': args.device,
        'device_name': (torch.cuda.get_device_name() if args.device == 'cuda'
                        else f'cpu ({torch.get_num_threads()} torch threads)'),
        'torch': torch.__version__,
        'model': args.model,
        'batch': args.batch,
        'iters': args.iters, 'repeats': args.repeats, 'warmup': args.warmup,
        'date': datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%d %H:%M UTC'),
        'rows': [{'fine_tune': ft, 'impl': impl, 'status': 'not run'} for ft, impl in plan],
    }
    yardstick.write_json(args.json, doc)
    graft_ips, graft_failed = {}, False
    for i, (ft, impl) in enumerate(plan):
        row = {'fine_tune': ft, 'impl': impl, 'status': 'ok'}
        yardstick.arm(args.seconds_per_row)
        try:
            t = run_graft(args, ft) if impl == 'graft' else run_torch(args, ft, impl)
            yardstick.disarm()
            ips = args.batch / (t['ms'] / 1000)
            if impl == 'graft':
                graft_ips[ft] = ips
            row.update({'blocks': t['blocks'], 'images_per_s': ips, 'ms_per_step': t['ms'],
                        'ms_per_step_min': t['ms_min'], 'host_ms_per_step': t['host_ms'],
                        'ratio': graft_ips[ft] / ips if ft in graft_ips else None,
                        'loss_first_step': t['loss_first'], 'loss_last_step': t['loss_last'],
                        'notes': t['notes']})
        except Exception as e:  # noqa: BLE001 - any failure is a row, never a crash
            yardstick.disarm()
            graft_failed |= impl == 'graft'
            lines = [ln for ln in str(e).splitlines() if ln.strip()]
            row.update({'status': 'failed',
                        'error': f'{type(e).__name__}: {lines[0] if lines else ""}'})
        finally:
            torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = DEFAULT_TF32
            if args.device == 'cuda':
                torch.cuda.empty_cache()
        doc['rows'][i] = row
        yardstick.write_json(args.json, doc)
        if row['status'] == 'ok':
            ratio = f'{row["ratio"]:.2f}' if row['ratio'] else '  - '
            print(f'--fine-tune {ft:4s} {impl:11s} {row["images_per_s"]:9.1f} img/s  '
                  f'{row["ms_per_step"]:8.2f} ms  ratio {ratio}  loss {row["loss_first_step"]:.3f}'
                  f' -> {row["loss_last_step"]:.3f}', flush=True)
        else:
            print(f'--fine-tune {ft:4s} {impl:11s} FAILED {row["error"]}', flush=True)
    return 1 if graft_failed else 0


if __name__ == '__main__':
    sys.exit(main())
