"""EfficientNet-Lite0 in plain PyTorch, built from a graft weight file.

The PyTorch baseline (bench/pytorch_baseline.py) needs the same backbone graft runs, on
machines where only torch/torchvision/timm/numpy/pillow are installed. So the network is
written out here from its stage table, and the weights come straight from the graft file
(canonical names, OIHW convs, un-folded batch norms) through tools/graftfile.py, which
needs only json + numpy.

Deliberately independent of graft's own architecture code: the stage table below is the
published EfficientNet-Lite0 one, so a mistake in graft's description of the network would
show up as a shape mismatch or a logits mismatch here rather than being copied.
"""

import math
import os
import sys

import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'tools'))
from graftfile import read_safetensors  # noqa: E402

ARCH = 'efficientnet_lite0'
# (repeats, kernel, stride of the first block, expand ratio, in, out):
# r1_k3_s1_e1_i32_o16, r2_k3_s2_e6_i16_o24, r2_k5_s2_e6_i24_o40, r3_k3_s2_e6_i40_o80,
# r3_k5_s1_e6_i80_o112, r4_k5_s2_e6_i112_o192, r1_k3_s1_e6_i192_o320
STAGES = [(1, 3, 1, 1, 32, 16), (2, 3, 2, 6, 16, 24), (2, 5, 2, 6, 24, 40),
          (3, 3, 2, 6, 40, 80), (3, 5, 1, 6, 80, 112), (4, 5, 2, 6, 112, 192),
          (1, 3, 1, 6, 192, 320)]
STEM_CHANNELS = 32
HEAD_CHANNELS = 1280


def tf_same_pad(size, kernel, stride):
    """TensorFlow SAME padding along one axis: (before, after). The output is
    ceil(size / stride); when the total padding is odd the extra pixel goes after, which is
    what makes it differ from PyTorch's symmetric padding for strided convs."""
    out = math.ceil(size / stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


class SameConv2d(nn.Conv2d):
    """A conv whose padding is TF SAME, computed from each input's size, so the network gives
    TF's results at any input resolution, not just the one it was built for. Bias-free in the
    file's network; a folded conv (FoldedConv) has one."""

    def forward(self, x):
        kh, kw = self.kernel_size
        sh, sw = self.stride
        top, bottom = tf_same_pad(x.shape[-2], kh, sh)
        left, right = tf_same_pad(x.shape[-1], kw, sw)
        if top or bottom or left or right:
            x = F.pad(x, (left, right, top, bottom))
        return F.conv2d(x, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


class ConvBN(nn.Module):
    """One graft "conv unit": conv, batch norm, optional ReLU6. The module names (conv, bn)
    are the canonical ones, so state_dict keys equal the file's tensor names."""

    def __init__(self, cin, cout, kernel, stride, groups, eps, act):
        super().__init__()
        self.conv = SameConv2d(cin, cout, kernel, stride, groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(cout, eps=eps)
        self.act = act

    def forward(self, x):
        x = self.bn(self.conv(x))
        return F.relu6(x) if self.act else x


class FoldedConv(nn.Module):
    """A ConvBN with its batch norm folded in, as graft loads every conv: weight
    w * gamma / sqrt(var + eps), bias beta - mean * gamma / sqrt(var + eps) (float32, as graft),
    then the same ReLU6. With the statistics frozen it computes what the ConvBN computes; its
    weight and bias are the tensors graft trains when it fine-tunes."""

    def __init__(self, unit):
        super().__init__()
        c, bn = unit.conv, unit.bn
        self.conv = SameConv2d(c.in_channels, c.out_channels, c.kernel_size, c.stride,
                               groups=c.groups, bias=True, device=c.weight.device)
        with torch.no_grad():
            scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
            self.conv.weight.copy_(c.weight * scale.view(-1, 1, 1, 1))
            self.conv.bias.copy_(bn.bias - bn.running_mean * scale)
        self.act = unit.act

    def forward(self, x):
        x = self.conv(x)
        return F.relu6(x) if self.act else x


def fold_batch_norm(module):
    """module with every ConvBN in it replaced by its FoldedConv (module itself when it is one)."""
    if isinstance(module, ConvBN):
        return FoldedConv(module)
    for name, child in module.named_children():
        folded = fold_batch_norm(child)
        if folded is not child:
            setattr(module, name, folded)
    return module


class MBConv(nn.Module):
    """Inverted residual without squeeze-excitation (the Lite variants drop SE and swish)."""

    def __init__(self, cin, cout, kernel, stride, expand, eps):
        super().__init__()
        mid = cin * expand
        # Expand ratio 1 has no expansion conv, so the file has no blocks.{i}.expand.
        self.expand = ConvBN(cin, mid, 1, 1, 1, eps, True) if expand != 1 else None
        self.dw = ConvBN(mid, mid, kernel, stride, mid, eps, True)
        self.project = ConvBN(mid, cout, 1, 1, 1, eps, False)  # linear bottleneck
        self.residual = stride == 1 and cin == cout

    def forward(self, x):
        y = self.expand(x) if self.expand is not None else x
        y = self.project(self.dw(y))
        return x + y if self.residual else y


class EfficientNetLite(nn.Module):
    """features(x) is the 1280-wide pooled vector a transfer-learning head sits on;
    forward(x) adds the file's classifier when it has one."""

    def __init__(self, eps, num_classes=0):
        super().__init__()
        self.stem = ConvBN(3, STEM_CHANNELS, 3, 2, 1, eps, True)
        blocks = []
        for repeats, kernel, stride, expand, cin, cout in STAGES:
            for j in range(repeats):
                blocks.append(MBConv(cin if j == 0 else cout, cout, kernel,
                                     stride if j == 0 else 1, expand, eps))
        self.blocks = nn.ModuleList(blocks)
        self.head = ConvBN(STAGES[-1][5], HEAD_CHANNELS, 1, 1, 1, eps, True)
        self.fc = nn.Linear(HEAD_CHANNELS, num_classes) if num_classes else None

    def features(self, x):
        x = self.stem(x)
        for b in self.blocks:
            x = b(x)
        return self.head(x).mean(dim=(2, 3))

    def forward(self, x):
        f = self.features(x)
        return self.fc(f) if self.fc is not None else f


def blocks(model):
    """graft's blocks, for fine-tuning (engine/net.h count_blocks): the stem, each MBConv, and
    the final 1x1 conv with the pooling after it. 18 for Lite0."""
    return [model.stem, *model.blocks, model.head]


def set_block(model, i, module):
    """Puts module in place of blocks(model)[i]."""
    if i == 0:
        model.stem = module
    elif i == len(model.blocks) + 1:
        model.head = module
    else:
        model.blocks[i - 1] = module


def preprocessing(meta):
    """The file's preprocessing: input size, mean and std (pixel/255 units), crop fraction."""
    mean = [float(v) for v in meta['mean'].split(',')]
    std = [float(v) for v in meta['std'].split(',')]
    resize_mode = meta.get('resize_mode', 'center_crop')
    if resize_mode != 'center_crop':
        raise ValueError(f'resize_mode {resize_mode!r}: only center_crop is supported here')
    return {'input_size': int(meta['input_size']), 'mean': mean, 'std': std,
            'crop_fraction': float(meta.get('crop_fraction', '0.875'))}


def load(path, with_classifier=True):
    """(model in eval mode, metadata) from a graft weight file. Every tensor the network needs
    must be in the file with the right shape, and every conv-unit tensor in the file must be
    used: a silent partial load would make a baseline quietly wrong."""
    tensors, meta = read_safetensors(path)
    if meta.get('arch', ARCH) != ARCH:
        raise ValueError(f'{path}: arch {meta.get("arch")!r}, this model is {ARCH}')
    if meta.get('padding', 'tf_same') != 'tf_same':
        raise ValueError(f'{path}: padding {meta["padding"]!r}, expected tf_same')
    has_fc = with_classifier and 'fc.weight' in tensors
    num_classes = tensors['fc.weight'].shape[0] if has_fc else 0
    model = EfficientNetLite(float(meta.get('bn_eps', '0.001')), num_classes)

    wanted = {k: v for k, v in model.state_dict().items()
              if not k.endswith('num_batches_tracked')}
    state = {}
    for name, ref in wanted.items():
        if name not in tensors:
            raise ValueError(f'{path}: missing tensor {name}')
        t = torch.from_numpy(tensors[name].astype('float32'))
        if tuple(t.shape) != tuple(ref.shape):
            raise ValueError(f'{path}: {name} has shape {tuple(t.shape)}, '
                             f'expected {tuple(ref.shape)}')
        state[name] = t
    unused = [k for k in tensors if k not in state and not k.startswith('fc.')]
    if unused:
        raise ValueError(f'{path}: tensors this network does not use: {unused[:5]}')
    missing, _ = model.load_state_dict(state, strict=False)
    assert all(k.endswith('num_batches_tracked') for k in missing), missing
    return model.eval(), meta
