#!/usr/bin/env python3
"""The PyTorch run that `graft train` is compared against: same recipe, same split.

    python3 bench/pytorch_baseline.py --model models/efficientnet_lite0.safetensors \\
        --split RUN_DIR/split.json [--epochs 20 --batch-size 32 --lr 0.005 --momentum 0.9
        --dropout 0.2 --label-smoothing 0.1 --l2 1e-4 --seed 42 --device cpu|cuda
        --mode cached|standard --workers N --json OUT.json]
    python3 bench/pytorch_baseline.py --self-check

Recipe (TF Lite Model Maker's, as graft runs it): frozen EfficientNet-Lite0 in inference
mode, Dropout + Dense head with Glorot-uniform kernel and zero bias, SGD with momentum at a
constant learning rate, Keras-style L2 on the dense kernel, label-smoothed cross-entropy.

--mode cached computes each image's feature once and trains the head on the cache (the same
run as recomputing the frozen backbone every epoch, much faster); --mode standard is the
usual tutorial loop, a Dataset + DataLoader recomputing the backbone every epoch, which is
the throughput yardstick.

--self-check runs the backbone on the recorded fixture (tests/fixtures/efficientnet_lite0
.safetensors: normalised NHWC input and PyTorch reference logits) and fails unless the
relative error is below 1e-5.

Needs only torch, torchvision, numpy and pillow.
"""

import argparse
import json
import os
import sys
import time

import torch
import torch.nn as nn
from PIL import Image
from torchvision import transforms

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, HERE)
import torch_efficientnet_lite as lite  # noqa: E402
from graftfile import read_safetensors  # noqa: E402  (tools/ is on the path via lite)

FIXTURE = os.path.join(REPO, 'tests', 'fixtures', 'efficientnet_lite0.safetensors')
SELF_CHECK_TOLERANCE = 1e-5


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--model', default=os.path.join(REPO, 'models', 'efficientnet_lite0.safetensors'))
    p.add_argument('--split', help='split.json written by graft train')
    p.add_argument('--epochs', type=int, default=20)
    p.add_argument('--batch-size', type=int, default=32)
    p.add_argument('--lr', type=float, default=0.005)
    p.add_argument('--momentum', type=float, default=0.9)
    p.add_argument('--dropout', type=float, default=0.2)
    p.add_argument('--label-smoothing', type=float, default=0.1)
    p.add_argument('--l2', type=float, default=1e-4, help='Keras-style L2 on the dense kernel')
    p.add_argument('--seed', type=int, default=42)
    p.add_argument('--device', choices=['cpu', 'cuda'],
                   default='cuda' if torch.cuda.is_available() else 'cpu')
    p.add_argument('--mode', choices=['cached', 'standard'], default='cached')
    p.add_argument('--workers', type=int, default=min(4, os.cpu_count() or 1),
                   help='DataLoader worker processes')
    p.add_argument('--json', help='write the results here')
    p.add_argument('--self-check', action='store_true',
                   help='check the backbone against the recorded PyTorch logits and exit')
    p.add_argument('--fixture', default=FIXTURE, help='fixture for --self-check')
    args = p.parse_args(argv)
    if not args.self_check and not args.split:
        p.error('--split is required (or --self-check)')
    return args


# ---------------------------------------------------------------------------------------------
# Self-check

def self_check(args):
    model, _ = lite.load(args.model)
    tensors, _ = read_safetensors(args.fixture)
    x = torch.from_numpy(tensors['input']).permute(0, 3, 1, 2).contiguous()  # NHWC -> NCHW
    ref = torch.from_numpy(tensors['logits']).double()
    with torch.no_grad():
        out = model(x).double()
    # Relative to the largest reference logit: per-element relative error is meaningless
    # for logits near zero.
    rel = ((out - ref).abs().max() / ref.abs().max()).item()
    same_top1 = bool((out.argmax(1) == ref.argmax(1)).all())
    print(f'self-check: {args.model} vs {args.fixture}')
    print(f'  max |logits - reference| / max |reference| = {rel:.3e} '
          f'(tolerance {SELF_CHECK_TOLERANCE:.0e}), top-1 {"matches" if same_top1 else "DIFFERS"}')
    ok = rel < SELF_CHECK_TOLERANCE and same_top1
    print('self-check: ' + ('ok' if ok else 'FAILED'))
    return 0 if ok else 1


# ---------------------------------------------------------------------------------------------
# Data

def make_transform(pre):
    """Shorter side to round(size / crop_fraction) (256 for 224), then the centre crop: the
    TF/Keras centre-crop convention graft uses."""
    resize = round(pre['input_size'] / pre['crop_fraction'])
    return transforms.Compose([
        transforms.Resize(resize, interpolation=transforms.InterpolationMode.BILINEAR,
                          antialias=True),
        transforms.CenterCrop(pre['input_size']),
        transforms.ToTensor(),
        transforms.Normalize(pre['mean'], pre['std']),
    ])


class SplitDataset(torch.utils.data.Dataset):
    """ImageFolder-like, over one part of split.json. An image that fails to decode yields
    None, dropped by collate_skipping_bad, so one bad file costs one sample, not the run
    (graft skips and counts such images too)."""

    def __init__(self, items, transform):
        self.items = items
        self.transform = transform

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        item = self.items[i]
        try:
            with Image.open(item['path']) as im:
                x = self.transform(im.convert('RGB'))
        except (OSError, ValueError) as e:
            print(f'warning: skipping {item["path"]}: {e}', file=sys.stderr)
            return None
        return x, item['label'], i


def collate_skipping_bad(batch):
    batch = [b for b in batch if b is not None]
    if not batch:
        return None
    return torch.utils.data.default_collate(batch)


def make_loader(items, transform, args, sampler=None):
    ds = SplitDataset(items, transform)
    # The loader draws its worker base seed from `generator` each epoch; a private one keeps
    # that draw from disturbing the shuffle order and the dropout masks.
    return torch.utils.data.DataLoader(
        ds, batch_size=args.batch_size, sampler=sampler, num_workers=args.workers,
        pin_memory=args.device == 'cuda', collate_fn=collate_skipping_bad,
        # Standard mode iterates the train loader every epoch: keep its workers alive.
        persistent_workers=args.workers > 0 and args.mode == 'standard',
        generator=torch.Generator().manual_seed(args.seed + 1))


# ---------------------------------------------------------------------------------------------
# Model pieces

def load_backbone(args):
    model, meta = lite.load(args.model, with_classifier=False)
    model = model.to(args.device, memory_format=torch.channels_last)
    for p in model.parameters():
        p.requires_grad_(False)
    return model, lite.preprocessing(meta)


def to_device(x, args):
    return x.to(args.device, memory_format=torch.channels_last, non_blocking=True)


@torch.no_grad()
def backbone_features(backbone, x, args):
    return backbone.features(to_device(x, args))


def make_head(num_classes, args):
    torch.manual_seed(args.seed)  # head init and the dropout masks that follow
    head = nn.Sequential(nn.Dropout(args.dropout), nn.Linear(lite.HEAD_CHANNELS, num_classes))
    nn.init.xavier_uniform_(head[1].weight)
    nn.init.zeros_(head[1].bias)
    return head.to(args.device)


def make_optimizer(head, args):
    # Keras L2 adds l2 * sum(w^2) to the loss, so the gradient gains 2 * l2 * w: weight decay
    # 2 * l2, on the kernel only (Keras regularises kernels, not biases).
    linear = head[1]
    return torch.optim.SGD([
        {'params': [linear.weight], 'weight_decay': 2 * args.l2},
        {'params': [linear.bias], 'weight_decay': 0.0},
    ], lr=args.lr, momentum=args.momentum)


class Tally:
    """Sums of loss, correct and count kept on the device, read once per epoch: a .item()
    per step would make every step wait for the device."""

    def __init__(self, num_classes, device):
        self.loss = torch.zeros((), dtype=torch.float64, device=device)
        self.confusion = torch.zeros(num_classes, num_classes, dtype=torch.int64, device=device)

    def add(self, logits, labels, loss):
        n = labels.shape[0]
        self.loss += loss.detach().double() * n  # mean over the batch -> sum over samples
        k = self.confusion.shape[0]
        idx = labels * k + logits.detach().argmax(1)
        self.confusion += torch.bincount(idx, minlength=k * k).view(k, k)

    def result(self):
        conf = self.confusion.cpu()
        n = int(conf.sum())
        return {'loss': self.loss.item() / max(n, 1),
                'accuracy': int(conf.trace()) / max(n, 1),
                'confusion': conf.tolist(), 'n': n}


def train_step(head, optimizer, criterion, features, labels, tally):
    logits = head(features)
    loss = criterion(logits, labels)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    tally.add(logits, labels, loss)


@torch.no_grad()
def eval_step(head, criterion, features, labels, tally):
    logits = head(features)
    tally.add(logits, labels, criterion(logits, labels))


def sync(args):
    if args.device == 'cuda':
        torch.cuda.synchronize()


# ---------------------------------------------------------------------------------------------
# The two modes. Each yields per-epoch (train tally, seconds) and evaluates through `evaluate`.

class CachedRun:
    """Features computed once per image; the head trains on them."""

    def __init__(self, split, backbone, transform, args):
        self.split, self.backbone, self.transform, self.args = split, backbone, transform, args
        self.cache = {}

    def features(self, part):
        if part not in self.cache:
            loader = make_loader(self.split[part], self.transform, self.args)
            feats, labels, kept = [], [], []
            for batch in loader:
                if batch is None:
                    continue
                x, y, i = batch
                feats.append(backbone_features(self.backbone, x, self.args))
                labels.append(y.to(self.args.device))
                kept.append(i)
            # row[i]: the cache row of split item i, -1 where the image could not be read.
            row = torch.full((len(self.split[part]),), -1, dtype=torch.int64)
            if not kept:  # an empty part, or nothing in it readable
                self.cache[part] = (torch.empty(0, lite.HEAD_CHANNELS, device=self.args.device),
                                    torch.empty(0, dtype=torch.int64), row)
                return self.cache[part]
            kept = torch.cat(kept)
            row[kept] = torch.arange(kept.shape[0])
            self.cache[part] = (torch.cat(feats), torch.cat(labels), row)
        return self.cache[part]

    def train_epoch(self, head, optimizer, criterion, order_gen, tally):
        feats, labels, row = self.features('train')  # epoch 1 pays for extraction, as graft
        # The order comes from the very sampler a standard run's DataLoader uses (it draws
        # from the generator twice per epoch), so with the same seed both modes visit the
        # images in the same order and are the same run.
        sampler = torch.utils.data.RandomSampler(self.split['train'], generator=order_gen)
        order = row[torch.tensor(list(sampler), dtype=torch.int64)]
        order = order[order >= 0].to(self.args.device)
        for s in range(0, order.shape[0], self.args.batch_size):
            idx = order[s:s + self.args.batch_size]
            train_step(head, optimizer, criterion, feats[idx], labels[idx], tally)

    def evaluate(self, head, criterion, part, tally):
        feats, labels, _ = self.features(part)
        for s in range(0, feats.shape[0], self.args.batch_size):
            eval_step(head, criterion, feats[s:s + self.args.batch_size],
                      labels[s:s + self.args.batch_size], tally)


class StandardRun:
    """The tutorial loop: DataLoader and the frozen backbone on every batch of every epoch."""

    def __init__(self, split, backbone, transform, args, order_gen):
        self.backbone, self.args = backbone, args
        sampler = torch.utils.data.RandomSampler(split['train'], generator=order_gen)
        self.train_loader = make_loader(split['train'], transform, args, sampler)
        self.eval_loaders = {p: make_loader(split[p], transform, args) for p in ('val', 'test')}

    def train_epoch(self, head, optimizer, criterion, order_gen, tally):
        for batch in self.train_loader:
            if batch is None:
                continue
            x, y, _ = batch
            feats = backbone_features(self.backbone, x, self.args)
            train_step(head, optimizer, criterion, feats, y.to(self.args.device), tally)

    def evaluate(self, head, criterion, part, tally):
        for batch in self.eval_loaders[part]:
            if batch is None:
                continue
            x, y, _ = batch
            feats = backbone_features(self.backbone, x, self.args)
            eval_step(head, criterion, feats, y.to(self.args.device), tally)


def evaluate(run, head, criterion, part, num_classes, args):
    head.eval()
    tally = Tally(num_classes, args.device)
    run.evaluate(head, criterion, part, tally)
    return tally.result()


# ---------------------------------------------------------------------------------------------

def describe_device(args):
    if args.device == 'cuda':
        return torch.cuda.get_device_name()
    return f'cpu ({torch.get_num_threads()} threads)'


def train(args):
    t_start = time.perf_counter()
    if args.device == 'cuda':
        if not torch.cuda.is_available():
            sys.exit('pytorch_baseline: --device cuda but torch sees no GPU')
        # TF32 is what a PyTorch user gets by asking for speed on Ampere and later.
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True
    with open(args.split) as f:
        split = json.load(f)
    classes = split['classes']
    backbone, pre = load_backbone(args)
    transform = make_transform(pre)
    head = make_head(len(classes), args)
    optimizer = make_optimizer(head, args)
    criterion = nn.CrossEntropyLoss(label_smoothing=args.label_smoothing)
    order_gen = torch.Generator().manual_seed(args.seed)
    if args.mode == 'cached':
        run = CachedRun(split, backbone, transform, args)
    else:
        run = StandardRun(split, backbone, transform, args, order_gen)

    print(f'pytorch_baseline: {lite.ARCH} on {describe_device(args)}, torch {torch.__version__}, '
          f'mode {args.mode}: {len(classes)} classes, {len(split["train"])} train / '
          f'{len(split["val"])} val / {len(split["test"])} test images')
    epochs = []
    for epoch in range(1, args.epochs + 1):
        head.train()  # dropout on: the train accuracy is the one Keras reports
        tally = Tally(len(classes), args.device)
        sync(args)
        t0 = time.perf_counter()
        run.train_epoch(head, optimizer, criterion, order_gen, tally)
        sync(args)
        seconds = time.perf_counter() - t0
        tr = tally.result()
        va = evaluate(run, head, criterion, 'val', len(classes), args) if split['val'] else None
        e = {'epoch': epoch, 'loss': tr['loss'], 'accuracy': tr['accuracy'],
             'val_loss': va['loss'] if va else None,
             'val_accuracy': va['accuracy'] if va else None,
             'seconds': seconds, 'images_per_second': tr['n'] / max(seconds, 1e-9)}
        epochs.append(e)
        val = (f'  val_loss {e["val_loss"]:.4f}  val_accuracy {e["val_accuracy"]:.4f}'
               if va else '')
        print(f'epoch {epoch}/{args.epochs}  loss {e["loss"]:.4f}  accuracy {e["accuracy"]:.4f}'
              f'{val}  {seconds:.1f}s  {e["images_per_second"]:.0f} img/s', flush=True)

    test = evaluate(run, head, criterion, 'test', len(classes), args)
    test.pop('n')
    seconds_total = time.perf_counter() - t_start
    print(f'test  loss {test["loss"]:.4f}  accuracy {test["accuracy"]:.4f}')
    print('confusion (rows: true, columns: predicted; ' + ', '.join(classes) + ')')
    for row in test['confusion']:
        print('  ' + ' '.join(f'{v:4d}' for v in row))
    print(f'total {seconds_total:.1f}s')

    result = {'device': describe_device(args), 'torch': torch.__version__, 'mode': args.mode,
              'config': {k: v for k, v in vars(args).items()
                         if k not in ('json', 'self_check', 'fixture')},
              'classes': classes, 'epochs': epochs, 'test': test,
              'seconds_total': seconds_total,
              'first_epoch_images_per_second': epochs[0]['images_per_second'] if epochs else None}
    if args.json:
        tmp = args.json + '.tmp'
        with open(tmp, 'w') as f:
            json.dump(result, f, indent=1)
        os.replace(tmp, args.json)  # a reader never sees half a file
    return 0


def main(argv=None):
    args = parse_args(argv)
    return self_check(args) if args.self_check else train(args)


if __name__ == '__main__':
    sys.exit(main())
