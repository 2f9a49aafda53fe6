#!/usr/bin/env python3
"""bench/pytorch_baseline.py: fine-tuning trains what graft trains, and the loaders agree.

- Folding batch norm into a conv (bench/torch_efficientnet_lite.py FoldedConv) leaves the
  network's output as it was (features within 1e-5 of the largest), and is a
  reparameterisation: the gradient of the unfolded conv weight is the folded one's times
  gamma / sqrt(var + eps) per output channel, and that of the batch norm's beta is the folded
  bias's.
- graft's blocks are the stem, 16 MBConv blocks and the final conv: 18.
- `--fine-tune 1`, one epoch on a tiny split of generated photos, changes the final 1x1 conv
  (weight and bias) and the head, and no other tensor of the backbone, to the bit.
- `--fine-tune 2 --freeze-epochs 1`: --mode cached (the cache holds the activation entering the
  first trained block) and --mode standard give the same numbers, to the bit; --decode
  pil-draft runs.
- pil-draft decodes a large JPEG at half size, giving nearly the full-size decode's input.
- --decode gpu's preprocessing, run on the CPU here, gives the PIL path's input within a few
  grey levels (the two JPEG decoders and resizers differ in rounding), PNG included.
- Bad settings stop with graft's messages, in one line: --decode gpu without cuda,
  --freeze-epochs without --fine-tune, more blocks than there are.

Needs torch, torchvision, pillow and models/efficientnet_lite0.safetensors (scripts/setup.sh).
Run by ctest as a plain script: exit 0 pass, 1 fail, 77 skip.
"""
import contextlib
import io
import json
import os
import sys
import tempfile

try:
    import numpy as np
    import torch
    import torchvision  # noqa: F401
    from PIL import Image
except ImportError as e:
    print(f'skip: {e.name} is not importable (the PyTorch baseline needs torch, torchvision, '
          'numpy and pillow)')
    sys.exit(77)

SRC = os.environ.get('GRAFT_SOURCE_DIR') or os.path.dirname(os.path.dirname(
    os.path.dirname(os.path.abspath(__file__))))
MODEL = os.path.join(SRC, 'models', 'efficientnet_lite0.safetensors')
if not os.path.exists(MODEL):
    print(f'skip: {MODEL} is absent (scripts/setup.sh fetches it)')
    sys.exit(77)
sys.path.insert(0, os.path.join(SRC, 'bench'))
import pytorch_baseline as pb  # noqa: E402
import torch_efficientnet_lite as lite  # noqa: E402

torch.set_num_threads(2)
failures = []


def check(ok, what):
    print(('ok    ' if ok else 'FAIL  ') + what)
    if not ok:
        failures.append(what)


def rel(a, b):
    return ((a - b).abs().max() / b.abs().max()).item()


def folding():
    model, _ = lite.load(MODEL, with_classifier=False)
    check(len(lite.blocks(model)) == 18, f'{len(lite.blocks(model))} blocks (graft: 18)')
    torch.manual_seed(0)
    x = torch.randn(2, 3, 96, 96)
    folded, _ = lite.load(MODEL, with_classifier=False)
    for k, unit in enumerate(lite.blocks(folded)):
        lite.set_block(folded, k, lite.fold_batch_norm(unit))
    left = [m for m in folded.modules() if isinstance(m, lite.ConvBN)]
    check(not left, f'every conv folded ({len(left)} ConvBN left)')
    with torch.no_grad():
        e = rel(folded.features(x), model.features(x))
    check(e < 1e-5, f'folded forward = unfolded forward (relative {e:.1e}, tolerance 1e-5)')

    # Gradients through the last block's projection conv, both ways.
    unit = model.blocks[-1].project
    fold = lite.FoldedConv(unit)
    for p in model.parameters():
        p.requires_grad_(False)
    unit.conv.weight.requires_grad_(True)
    unit.bn.bias.requires_grad_(True)
    r = torch.randn(2, lite.HEAD_CHANNELS)
    (model.features(x) * r).sum().backward()
    g_w, g_beta = unit.conv.weight.grad.clone(), unit.bn.bias.grad.clone()
    model.blocks[-1].project = fold
    (model.features(x) * r).sum().backward()
    bn = unit.bn
    scale = (bn.weight / torch.sqrt(bn.running_var + bn.eps)).view(-1, 1, 1, 1)
    e_w = rel(fold.conv.weight.grad * scale, g_w)
    e_b = rel(fold.conv.bias.grad, g_beta)
    check(e_w < 1e-4 and e_b < 1e-4,
          f"d/dw = d/dw' * gamma/sqrt(var+eps) (relative {e_w:.1e}), d/dbeta = d/db' "
          f'({e_b:.1e}); tolerance 1e-4')


def make_split(root):
    """Twelve photos of three colours (JPEG, one PNG), 6 train / 3 val / 3 test."""
    rng = np.random.default_rng(1)
    classes = ['red', 'green', 'blue']
    parts = {'train': [], 'val': [], 'test': []}
    for label, name in enumerate(classes):
        os.makedirs(os.path.join(root, name))
        for j in range(4):
            px = rng.integers(0, 80, (300 + 40 * j, 400, 3), dtype=np.uint8)
            px[..., label] += 150
            ext = 'png' if (label, j) == (1, 0) else 'jpg'
            path = os.path.join(root, name, f'{j}.{ext}')
            Image.fromarray(px).save(path)
            part = 'train' if j < 2 else 'val' if j == 2 else 'test'
            parts[part].append({'path': path, 'label': label})
    split = {'classes': classes, 'seed': 1, **parts}
    path = os.path.join(root, 'split.json')
    with open(path, 'w') as f:
        json.dump(split, f)
    return path


def run(split, *extra):
    args = pb.parse_args(['--model', MODEL, '--split', split, '--device', 'cpu', '--workers', '0',
                          '--batch-size', '4', '--seed', '3', *extra])
    with contextlib.redirect_stdout(io.StringIO()):
        return pb.train(args)


def fine_tune_one(split):
    before, _ = lite.load(MODEL, with_classifier=False)
    result, net = run(split, '--epochs', '1', '--fine-tune', '1', '--lr', '0.05')
    after = net.backbone.model.cpu()
    units_before, units_after = lite.blocks(before), lite.blocks(after)
    same = all(torch.equal(a, b) for ub, ua in zip(units_before[:-1], units_after[:-1])
               for a, b in zip(ub.state_dict().values(), ua.state_dict().values()))
    check(same, '--fine-tune 1: the first 17 blocks are unchanged, to the bit')
    start = lite.FoldedConv(units_before[-1]).conv
    trained = units_after[-1].conv
    check(isinstance(units_after[-1], lite.FoldedConv), '--fine-tune 1: the final conv is folded')
    moved = [not torch.equal(start.weight, trained.weight), not torch.equal(start.bias,
                                                                            trained.bias)]
    check(all(moved), f'--fine-tune 1: the final conv weight and bias changed ({moved})')
    check(net.backbone.trained_blocks == 1 and result['fine_tune']['blocks'] == 1 and
          abs(result['fine_tune']['backbone_lr'] - 0.005) < 1e-12,
          f'--fine-tune 1: json records 1 block at a tenth of --lr ({result["fine_tune"]})')


def modes_agree(split):
    common = ('--epochs', '2', '--fine-tune', '2', '--freeze-epochs', '1', '--lr', '0.05')
    cached, _ = run(split, *common, '--mode', 'cached')
    standard, _ = run(split, *common, '--mode', 'standard')
    keys = ('loss', 'accuracy', 'val_loss', 'val_accuracy')
    same = all(a[k] == b[k] for a, b in zip(cached['epochs'], standard['epochs']) for k in keys)
    same = same and cached['test'] == standard['test']
    check(same, '--fine-tune 2 --freeze-epochs 1: cached and standard give the same metrics')
    draft, _ = run(split, '--epochs', '2', '--mode', 'standard', '--decode', 'pil-draft')
    check(draft['decode'] == 'pil-draft' and len(draft['epochs']) == 2 and
          all(e['seconds'] > 0 and e['images_per_second'] > 0 for e in draft['epochs']),
          '--decode pil-draft: a 2-epoch standard run records decode and per-epoch timing')


def gpu_preprocessing(split_path):
    with open(split_path) as f:
        split = json.load(f)
    items = split['train'] + split['test']
    _, meta = lite.load(MODEL, with_classifier=False)
    pre = lite.preprocessing(meta)
    ds = pb.SplitDataset(items, pb.make_transform(pre))
    datas = [pb.BytesDataset(items)[i][0] for i in range(len(items))]
    datas.append(torch.tensor([1, 2, 3], dtype=torch.uint8))  # not an image: skipped
    with contextlib.redirect_stderr(io.StringIO()):
        x, kept = pb.decode_batch(datas, pre, 'cpu')
    check(kept == [True] * len(items) + [False] and x.shape[0] == len(items),
          f'--decode gpu path: an undecodable file is dropped (kept {kept})')
    ref = torch.stack([ds[i][0] for i in range(len(items))])
    grey = (x - ref).abs() * torch.tensor(pre['std']).view(1, 3, 1, 1) * 255
    png = [i for i, it in enumerate(items) if it['path'].endswith('.png')]
    check(grey.mean().item() < 1.0 and grey.max().item() < 8,
          f'--decode gpu path on the CPU = PIL path: mean {grey.mean().item():.2f}, max '
          f'{grey.max().item():.1f} grey levels (tolerance 1, 8)')
    check(png and grey[png].max().item() < 2,
          f'--decode gpu path, PNG: max {grey[png].max().item():.2f} grey levels (tolerance 2)')


def draft_decode(root):
    """pil-draft decodes a large JPEG at a reduced size and gives nearly the full-size input."""
    rng = np.random.default_rng(2)
    px = np.kron(rng.integers(0, 255, (60, 80, 3), dtype=np.uint8), np.ones((15, 15, 1),
                                                                          dtype=np.uint8))
    path = os.path.join(root, 'large.jpg')
    Image.fromarray(px).save(path, quality=95)  # 1200 x 900
    _, meta = lite.load(MODEL, with_classifier=False)
    pre = lite.preprocessing(meta)
    with Image.open(path) as im:
        im.draft('RGB', (pb.resize_size(pre),) * 2)
        size = im.size
    check(size == (600, 450), f'draft decodes 1200x900 at {size} (want 600x450, shorter >= 256)')
    items = [{'path': path, 'label': 0}]
    full = pb.SplitDataset(items, pb.make_transform(pre))[0][0]
    draft = pb.SplitDataset(items, pb.make_transform(pre), pb.resize_size(pre))[0][0]
    grey = ((full - draft).abs() * torch.tensor(pre['std']).view(3, 1, 1) * 255).mean().item()
    check(0 < grey < 4, f'pil-draft input differs from pil by {grey:.2f} grey levels on '
          'average (more than 0, under 4)')


def refusals(split):
    cases = [(['--decode', 'gpu', '--device', 'cpu'], 'needs --device cuda'),
             (['--freeze-epochs', '2'], '--freeze-epochs needs --fine-tune'),
             (['--fine-tune', '2', '--freeze-epochs', '5', '--epochs', '5'], 'leaves none'),
             (['--fine-tune', 'top'], 'a number of blocks or all')]
    for argv, want in cases:
        try:
            pb.parse_args(['--split', split, *argv])
            check(False, f'{" ".join(argv)} refused')
        except SystemExit as e:
            msg = str(e.code)
            check(msg.startswith('pytorch_baseline: ') and '\n' not in msg and want in msg,
                  f'{" ".join(argv)} refused in one line: {msg}')
    try:
        run(split, '--fine-tune', '19', '--epochs', '1')
        check(False, '--fine-tune 19 refused')
    except SystemExit as e:
        check('has 18 blocks' in str(e), f'--fine-tune 19 refused: {e}')


def main():
    folding()
    with tempfile.TemporaryDirectory() as tmp:
        split = make_split(tmp)
        refusals(split)
        fine_tune_one(split)
        modes_agree(split)
        gpu_preprocessing(split)
        draft_decode(tmp)
    if failures:
        print(f'{len(failures)} failed')
        return 1
    print('all passed')
    return 0


if __name__ == '__main__':
    sys.exit(main())
