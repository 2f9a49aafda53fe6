#!/usr/bin/env python3
"""The PyTorch run that `graft train` is compared against: same recipe, same split.

    python3 bench/pytorch_baseline.py --model models/efficientnet_lite0.safetensors \\
        --split RUN_DIR/split.json [--epochs 20 --batch-size 32 --lr 0.005 --momentum 0.9
        --dropout 0.2 --label-smoothing 0.1 --l2 1e-4 --seed 42 --device cpu|cuda
        --mode cached|standard --decode pil|pil-draft|gpu --workers N --threads N
        --fine-tune N|all --freeze-epochs K --backbone-lr X --json OUT.json]
    python3 bench/pytorch_baseline.py --self-check

Recipe (TF Lite Model Maker's, as graft runs it): frozen EfficientNet-Lite0 in inference
mode, Dropout + Dense head with Glorot-uniform kernel and zero bias, SGD with momentum at a
constant learning rate, Keras-style L2 on the dense kernel, label-smoothed cross-entropy.

Fine-tuning, as `graft train --fine-tune N|all --freeze-epochs K --backbone-lr X` does it:
the last N of graft's blocks train with the head (the stem, each MBConv block and the final
1x1 conv count as one each: 18 for Lite0; `all` is every one). Batch norm stays frozen: each
conv of the trained blocks has its batch norm folded in (w' = w * gamma / sqrt(var + eps),
b' = beta - mean * gamma / sqrt(var + eps)) and it is w' and b' that train, the same
parameters graft trains. The blocks before them run under no_grad. Their learning rate is
--backbone-lr (default a tenth of --lr); conv kernels get the head kernel's L2 (weight decay
2 * l2), biases none. The first K epochs train the head alone and step only its tensors; the
blocks' momentum starts from zero when they join, as graft's does. The model tested is the
last epoch's, as graft's without --early-stop.

--mode cached computes once per image what the frozen part of the network computes (the
feature vector, or with --fine-tune the activation entering the first trained block, as
graft's cache does) and later epochs start from it; on the CPU that is the same run, to the
bit, as recomputing everything. --mode standard is the usual tutorial loop, a Dataset +
DataLoader recomputing the backbone every epoch, which is the throughput yardstick.

--decode chooses how the loader makes its images: pil (the default) is torchvision's usual
PIL decode at full size, then the resize; pil-draft asks PIL's JPEG decoder for a reduced
size first (img.draft: the DCT-domain downscale, to the smallest scale at least the resize
size, what graft's scaled TurboJPEG decode does); gpu has the workers read file bytes only and
decodes each batch on the GPU with torchvision.io.decode_jpeg (PNG and other files on the CPU),
then resizes, crops and normalises there (needs --device cuda).

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
    p.add_argument('--decode', choices=['pil', 'pil-draft', 'gpu'], default='pil',
                   help='full-size PIL decode, PIL reduced-size JPEG decode, or decode on the GPU')
    p.add_argument('--workers', type=int, default=min(4, os.cpu_count() or 1),
                   help='DataLoader worker processes')
    p.add_argument('--threads', type=int, default=0,
                   help="torch's CPU threads (0: torch's default)")
    p.add_argument('--fine-tune', default='0',
                   help="train the backbone's last N blocks with the head, or all (graft's "
                        'blocks: the stem, each block and the final 1x1 conv)')
    p.add_argument('--freeze-epochs', type=int, default=0,
                   help='with --fine-tune: train the head alone for the first K epochs')
    p.add_argument('--backbone-lr', type=float, default=0.0,
                   help='learning rate of the fine-tuned blocks (0: a tenth of --lr)')
    p.add_argument('--json', help='write the results here')
    p.add_argument('--self-check', action='store_true',
                   help='check the backbone against the recorded PyTorch logits and exit')
    p.add_argument('--fixture', default=FIXTURE, help='fixture for --self-check')
    args = p.parse_args(argv)
    if not args.self_check and not args.split:
        p.error('--split is required (or --self-check)')
    # graft's own checks of these settings (engine/config.cpp), worded the same; one line each.
    fine_tune = args.fine_tune != '0'
    if fine_tune and args.fine_tune != 'all' and not args.fine_tune.isdigit():
        refuse(f"--fine-tune must be a number of blocks or all, not '{args.fine_tune}'")
    if args.freeze_epochs < 0 or args.backbone_lr < 0:
        refuse('--freeze-epochs and --backbone-lr cannot be negative')
    if not fine_tune and args.freeze_epochs > 0:
        refuse('--freeze-epochs needs --fine-tune (the backbone is frozen anyway)')
    if fine_tune and args.freeze_epochs >= args.epochs:
        refuse(f'--freeze-epochs {args.freeze_epochs} leaves none of the {args.epochs} '
               '--epochs to fine-tune in')
    if args.decode == 'gpu' and args.device != 'cuda':
        refuse('--decode gpu decodes on the GPU: it needs --device cuda')
    return args


def refuse(message):
    raise SystemExit(f'pytorch_baseline: {message}')


def fine_tune_blocks(setting, num_blocks):
    """graft's fine_tune_blocks (engine/fine_tune.cpp): "0", a block count, or "all"."""
    if setting == 'all':
        return num_blocks
    n = int(setting)
    if n > num_blocks:
        refuse(f'--fine-tune {setting}: {lite.ARCH} has {num_blocks} blocks (the stem, its '
               'blocks and the final conv); use all')
    return n


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
    return transforms.Compose([
        transforms.Resize(resize_size(pre), interpolation=transforms.InterpolationMode.BILINEAR,
                          antialias=True),
        transforms.CenterCrop(pre['input_size']),
        transforms.ToTensor(),
        transforms.Normalize(pre['mean'], pre['std']),
    ])


def resize_size(pre):
    return round(pre['input_size'] / pre['crop_fraction'])


class SplitDataset(torch.utils.data.Dataset):
    """ImageFolder-like, over one part of split.json. An image that fails to decode yields
    None, dropped by collate_skipping_bad, so one bad file costs one sample, not the run
    (graft skips and counts such images too). draft: the shorter side to decode a JPEG at, at
    least (PIL's reduced-size decode), or 0 for the full size."""

    def __init__(self, items, transform, draft=0):
        self.items = items
        self.transform = transform
        self.draft = draft

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        item = self.items[i]
        try:
            with Image.open(item['path']) as im:
                if self.draft:  # a no-op for anything but JPEG
                    im.draft('RGB', (self.draft, self.draft))
                x = self.transform(im.convert('RGB'))
        except (OSError, ValueError) as e:
            print(f'warning: skipping {item["path"]}: {e}', file=sys.stderr)
            return None
        return x, item['label'], i


class BytesDataset(torch.utils.data.Dataset):
    """--decode gpu: a worker only reads the file; the main process decodes the batch."""

    def __init__(self, items):
        self.items = items

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        item = self.items[i]
        try:
            with open(item['path'], 'rb') as f:
                data = f.read()
        except OSError as e:
            print(f'warning: skipping {item["path"]}: {e}', file=sys.stderr)
            return None
        return torch.frombuffer(bytearray(data), dtype=torch.uint8), item['label'], i


def collate_skipping_bad(batch):
    batch = [b for b in batch if b is not None]
    if not batch:
        return None
    return torch.utils.data.default_collate(batch)


def collate_bytes(batch):
    """File contents differ in length: a list of them, and the labels and indices as tensors."""
    batch = [b for b in batch if b is not None]
    if not batch:
        return None
    return ([b[0] for b in batch], torch.tensor([b[1] for b in batch]),
            torch.tensor([b[2] for b in batch]))


def make_loader(items, transform, args, sampler=None):
    if args.decode == 'gpu':
        ds, collate = BytesDataset(items), collate_bytes
    else:
        draft = resize_size(args.pre) if args.decode == 'pil-draft' else 0
        ds, collate = SplitDataset(items, transform, draft), collate_skipping_bad
    # The loader draws its worker base seed from `generator` each epoch; a private one keeps
    # that draw from disturbing the shuffle order and the dropout masks.
    return torch.utils.data.DataLoader(
        ds, batch_size=args.batch_size, sampler=sampler, num_workers=args.workers,
        pin_memory=args.device == 'cuda' and args.decode != 'gpu', collate_fn=collate,
        # Standard mode iterates the train loader every epoch: keep its workers alive.
        persistent_workers=args.workers > 0 and args.mode == 'standard',
        generator=torch.Generator().manual_seed(args.seed + 1))


def is_jpeg(data):
    return data.numel() >= 3 and data[:3].tolist() == [0xFF, 0xD8, 0xFF]


def decode_batch(datas, pre, device):
    """--decode gpu: file contents to the normalised NCHW batch on `device`, with the transform
    of the PIL path (shorter side to resize_size, bilinear with antialias, rounded to uint8 as
    PIL's resize is, centre crop, normalise). JPEGs decode together on the device (nvJPEG when
    it is cuda); other files, and a JPEG the device decoder refuses, decode on the CPU. Returns
    (batch, kept): kept[j] is False for a file nothing could decode (skipped, with a warning)."""
    from torchvision.io import ImageReadMode, decode_image, decode_jpeg
    import torchvision.transforms.v2.functional as TF
    rgb = ImageReadMode.RGB
    images = [None] * len(datas)
    jpegs = [j for j, d in enumerate(datas) if is_jpeg(d)]
    if jpegs:
        try:
            for j, im in zip(jpegs, decode_jpeg([datas[j] for j in jpegs], mode=rgb,
                                                device=device)):
                images[j] = im
        except RuntimeError:  # one bad file fails the batch call: decode them one at a time
            for j in jpegs:
                try:
                    images[j] = decode_jpeg(datas[j], mode=rgb, device=device)
                except RuntimeError:
                    pass
    for j, d in enumerate(datas):
        if images[j] is None:
            try:
                images[j] = decode_image(d, mode=rgb).to(device)
            except RuntimeError as e:
                print(f'warning: skipping an image that does not decode: {e}', file=sys.stderr)
    kept = [im is not None for im in images]
    mean = torch.tensor(pre['mean'], device=device).view(1, 3, 1, 1)
    std = torch.tensor(pre['std'], device=device).view(1, 3, 1, 1)
    out = []
    for im in images:
        if im is None:
            continue
        x = TF.resize(im.float().unsqueeze(0), [resize_size(pre)],
                      interpolation=TF.InterpolationMode.BILINEAR, antialias=True)
        x = TF.center_crop(x.round_().clamp_(0, 255), [pre['input_size']])
        out.append(x)
    if not out:
        return None, kept
    x = (torch.cat(out) / 255 - mean) / std
    return x.contiguous(memory_format=torch.channels_last), kept


def batch_input(batch, args):
    """A loader's batch as (network input on the device, labels on the device, split indices),
    or None when nothing in it could be read."""
    if batch is None:
        return None
    x, y, i = batch
    if args.decode == 'gpu':
        x, kept = decode_batch(x, args.pre, args.device)
        if x is None:
            return None
        kept = torch.tensor(kept)
        y, i = y[kept], i[kept]
    else:
        x = x.to(args.device, memory_format=torch.channels_last, non_blocking=True)
    return x, y.to(args.device), i


# ---------------------------------------------------------------------------------------------
# Model pieces

class Backbone:
    """EfficientNet-Lite0 cut at the freeze boundary. boundary(x) runs the frozen blocks under
    no_grad and gives what the feature cache holds: the pooled feature vector when every block
    is frozen, else the activation entering the first trained block. top(a) runs the trained
    blocks (batch norm folded, see lite.FoldedConv) and the pooling; with no trained blocks it
    is the identity."""

    def __init__(self, args):
        model, meta = lite.load(args.model, with_classifier=False)
        units = lite.blocks(model)
        self.num_blocks = len(units)
        self.trained_blocks = fine_tune_blocks(args.fine_tune, self.num_blocks)
        first = self.num_blocks - self.trained_blocks
        for k in range(first, self.num_blocks):
            lite.set_block(model, k, lite.fold_batch_norm(units[k]))
        model = model.to(args.device, memory_format=torch.channels_last).eval()
        units = lite.blocks(model)
        self.model, self.frozen, self.trained = model, units[:first], units[first:]
        for p in model.parameters():
            p.requires_grad_(False)
        for u in self.trained:
            for p in u.parameters():
                p.requires_grad_(True)
        self.pre = lite.preprocessing(meta)

    @torch.no_grad()
    def boundary(self, x):
        for u in self.frozen:
            x = u(x)
        return x if self.trained else x.mean(dim=(2, 3))

    def top(self, a):
        for u in self.trained:
            a = u(a)
        return a.mean(dim=(2, 3)) if self.trained else a

    def trained_convs(self):
        """(weight, bias) of every conv in the trained blocks."""
        return [(m.weight, m.bias) for u in self.trained for m in u.modules()
                if isinstance(m, lite.SameConv2d)]


def make_head(num_classes, args):
    torch.manual_seed(args.seed)  # head init and the dropout masks that follow
    head = nn.Sequential(nn.Dropout(args.dropout), nn.Linear(lite.HEAD_CHANNELS, num_classes))
    nn.init.xavier_uniform_(head[1].weight)
    nn.init.zeros_(head[1].bias)
    return head.to(args.device)


def backbone_lr(args):
    return args.backbone_lr if args.backbone_lr > 0 else args.lr / 10


def make_optimizer(head, backbone, args):
    # Keras L2 adds l2 * sum(w^2) to the loss, so the gradient gains 2 * l2 * w: weight decay
    # 2 * l2, on kernels only (Keras regularises kernels, not biases). graft decays the trained
    # conv kernels the same way, and their biases not at all.
    linear = head[1]
    groups = [{'params': [linear.weight], 'weight_decay': 2 * args.l2},
              {'params': [linear.bias], 'weight_decay': 0.0}]
    convs = backbone.trained_convs()
    if convs:
        # SGD skips a tensor without a gradient: during the head-only epochs these are not
        # stepped and their momentum is not created, so it starts from zero when they join.
        groups += [{'params': [w for w, _ in convs], 'weight_decay': 2 * args.l2,
                    'lr': backbone_lr(args)},
                   {'params': [b for _, b in convs], 'weight_decay': 0.0,
                    'lr': backbone_lr(args)}]
    return torch.optim.SGD(groups, lr=args.lr, momentum=args.momentum)


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


class Net:
    """Backbone, head, loss and optimiser; train_backbone says whether the trained blocks
    train this epoch (off during --freeze-epochs)."""

    def __init__(self, num_classes, args):
        self.backbone = Backbone(args)
        self.head = make_head(num_classes, args)
        self.optimizer = make_optimizer(self.head, self.backbone, args)
        self.criterion = nn.CrossEntropyLoss(label_smoothing=args.label_smoothing)
        self.train_backbone = False

    def train_step(self, a, labels, tally):
        """a: what boundary() gives for the batch."""
        with torch.set_grad_enabled(self.train_backbone):
            features = self.backbone.top(a)
        logits = self.head(features)
        loss = self.criterion(logits, labels)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        tally.add(logits, labels, loss)

    @torch.no_grad()
    def eval_step(self, a, labels, tally):
        logits = self.head(self.backbone.top(a))
        tally.add(logits, labels, self.criterion(logits, labels))


def sync(args):
    if args.device == 'cuda':
        torch.cuda.synchronize()


# ---------------------------------------------------------------------------------------------
# The two modes. Each runs an epoch's training and evaluates a part through `evaluate`.

class CachedRun:
    """What the frozen blocks compute, once per image; every epoch starts from it."""

    def __init__(self, split, net, transform, args):
        self.split, self.net, self.transform, self.args = split, net, transform, args
        self.cache = {}

    def boundary(self, part):
        if part not in self.cache:
            loader = make_loader(self.split[part], self.transform, self.args)
            acts, labels, kept = [], [], []
            for batch in loader:
                batch = batch_input(batch, self.args)
                if batch is None:
                    continue
                x, y, i = batch
                acts.append(self.net.backbone.boundary(x))
                labels.append(y)
                kept.append(i)
            # row[i]: the cache row of split item i, -1 where the image could not be read.
            row = torch.full((len(self.split[part]),), -1, dtype=torch.int64)
            if not kept:  # an empty part, or nothing in it readable
                self.cache[part] = (None, None, row)
                return self.cache[part]
            kept = torch.cat(kept)
            row[kept] = torch.arange(kept.shape[0])
            self.cache[part] = (torch.cat(acts), torch.cat(labels), row)
        return self.cache[part]

    def rows(self, acts, idx):
        # Gathered rows in the memory format a standard run's batch has, so that both modes run
        # the trained blocks through the same kernels and give the same numbers.
        a = acts[idx]
        return a.contiguous(memory_format=torch.channels_last) if a.dim() == 4 else a

    def train_epoch(self, order_gen, tally):
        acts, labels, row = self.boundary('train')  # epoch 1 pays for extraction, as graft
        # The order comes from the very sampler a standard run's DataLoader uses (it draws
        # from the generator twice per epoch), so with the same seed both modes visit the
        # images in the same order and are the same run.
        sampler = torch.utils.data.RandomSampler(self.split['train'], generator=order_gen)
        order = row[torch.tensor(list(sampler), dtype=torch.int64)]
        if acts is None:
            return
        order = order[order >= 0].to(self.args.device)
        for s in range(0, order.shape[0], self.args.batch_size):
            idx = order[s:s + self.args.batch_size]
            self.net.train_step(self.rows(acts, idx), labels[idx], tally)

    def evaluate(self, part, tally):
        acts, labels, _ = self.boundary(part)
        if acts is None:
            return
        b = self.args.batch_size
        for s in range(0, acts.shape[0], b):
            self.net.eval_step(self.rows(acts, slice(s, s + b)), labels[s:s + b], tally)


class StandardRun:
    """The tutorial loop: DataLoader and the backbone on every batch of every epoch."""

    def __init__(self, split, net, transform, args, order_gen):
        self.net, self.args = net, args
        sampler = torch.utils.data.RandomSampler(split['train'], generator=order_gen)
        self.train_loader = make_loader(split['train'], transform, args, sampler)
        self.eval_loaders = {p: make_loader(split[p], transform, args) for p in ('val', 'test')}

    def train_epoch(self, order_gen, tally):
        for batch in self.train_loader:
            batch = batch_input(batch, self.args)
            if batch is not None:
                x, y, _ = batch
                self.net.train_step(self.net.backbone.boundary(x), y, tally)

    def evaluate(self, part, tally):
        for batch in self.eval_loaders[part]:
            batch = batch_input(batch, self.args)
            if batch is not None:
                x, y, _ = batch
                self.net.eval_step(self.net.backbone.boundary(x), y, tally)


def evaluate(run, net, part, num_classes, args):
    net.head.eval()
    tally = Tally(num_classes, args.device)
    run.evaluate(part, tally)
    return tally.result()


# ---------------------------------------------------------------------------------------------

def describe_device(args):
    if args.device == 'cuda':
        return torch.cuda.get_device_name()
    return f'cpu ({torch.get_num_threads()} threads)'


def describe_fine_tune(net, args):
    n = net.backbone.trained_blocks
    if n == 0:
        return 'off: the backbone is frozen'
    return (f'{"all " if args.fine_tune == "all" else ""}{n} blocks from epoch '
            f'{args.freeze_epochs + 1}, learning rate {backbone_lr(args):g}; batch norm frozen '
            '(folded)')


def train(args):
    """Runs the training and writes --json; returns (result dict, the trained Net)."""
    t_start = time.perf_counter()
    if args.threads > 0:
        torch.set_num_threads(args.threads)
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
    net = Net(len(classes), args)
    args.pre = net.backbone.pre
    transform = make_transform(args.pre)
    order_gen = torch.Generator().manual_seed(args.seed)
    if args.mode == 'cached':
        run = CachedRun(split, net, transform, args)
    else:
        run = StandardRun(split, net, transform, args, order_gen)

    print(f'pytorch_baseline: {lite.ARCH} on {describe_device(args)}, torch {torch.__version__}, '
          f'mode {args.mode}, decode {args.decode}, fine-tuning {describe_fine_tune(net, args)}: '
          f'{len(classes)} classes, {len(split["train"])} train / '
          f'{len(split["val"])} val / {len(split["test"])} test images')
    epochs = []
    for epoch in range(1, args.epochs + 1):
        net.train_backbone = net.backbone.trained_blocks > 0 and epoch > args.freeze_epochs
        if net.train_backbone and args.freeze_epochs > 0 and epoch == args.freeze_epochs + 1:
            print(f"epoch {epoch}: the backbone's last {net.backbone.trained_blocks} blocks "
                  'train from now on')
        net.head.train()  # dropout on: the train accuracy is the one Keras reports
        tally = Tally(len(classes), args.device)
        sync(args)
        t0 = time.perf_counter()
        run.train_epoch(order_gen, tally)
        sync(args)
        seconds = time.perf_counter() - t0
        tr = tally.result()
        va = evaluate(run, net, 'val', len(classes), args) if split['val'] else None
        e = {'epoch': epoch, 'loss': tr['loss'], 'accuracy': tr['accuracy'],
             'val_loss': va['loss'] if va else None,
             'val_accuracy': va['accuracy'] if va else None,
             'seconds': seconds, 'images_per_second': tr['n'] / max(seconds, 1e-9)}
        epochs.append(e)
        val = (f'  val_loss {e["val_loss"]:.4f}  val_accuracy {e["val_accuracy"]:.4f}'
               if va else '')
        print(f'epoch {epoch}/{args.epochs}  loss {e["loss"]:.4f}  accuracy {e["accuracy"]:.4f}'
              f'{val}  {seconds:.1f}s  {e["images_per_second"]:.0f} img/s', flush=True)

    test = evaluate(run, net, 'test', len(classes), args)
    test.pop('n')
    seconds_total = time.perf_counter() - t_start
    print(f'test  loss {test["loss"]:.4f}  accuracy {test["accuracy"]:.4f}')
    print('confusion (rows: true, columns: predicted; ' + ', '.join(classes) + ')')
    for row in test['confusion']:
        print('  ' + ' '.join(f'{v:4d}' for v in row))
    print(f'total {seconds_total:.1f}s')

    result = {'device': describe_device(args), 'torch': torch.__version__, 'mode': args.mode,
              'decode': args.decode,
              'fine_tune': {'blocks': net.backbone.trained_blocks,
                            'freeze_epochs': args.freeze_epochs,
                            'backbone_lr': backbone_lr(args) if net.backbone.trained_blocks
                            else None},
              'config': {k: v for k, v in vars(args).items()
                         if k not in ('json', 'self_check', 'fixture', 'pre')},
              'classes': classes, 'epochs': epochs, 'test': test,
              'seconds_total': seconds_total,
              'first_epoch_images_per_second': epochs[0]['images_per_second'] if epochs else None}
    if args.json:
        tmp = args.json + '.tmp'
        with open(tmp, 'w') as f:
            json.dump(result, f, indent=1)
        os.replace(tmp, args.json)  # a reader never sees half a file
    return result, net


def main(argv=None):
    args = parse_args(argv)
    if args.self_check:
        return self_check(args)
    train(args)
    return 0


if __name__ == '__main__':
    sys.exit(main())
