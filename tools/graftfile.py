"""graft weight files: safetensors I/O and the architectures' tensor lists.

Standard library + numpy only, so the converter and its tests run where torch is absent.

The canonical layout (what the C++ loader reads) is a list of "conv units" (a conv and the
batch norm after it) plus a classifier. Each architecture is described here once as a list
of blocks; the canonical names, their shapes, and every supported source naming (lukemelas,
timm, torchvision) are all derived from that one list, so they cannot drift apart.
"""

import json
import math
import os
import struct
from collections import OrderedDict, namedtuple

import numpy as np


class GraftError(Exception):
    """A fault in an input file or in the user's request; the message names what is wrong."""


# ---------------------------------------------------------------------------------------------
# safetensors

_ST_DTYPES = {
    'F64': np.dtype('<f8'), 'F32': np.dtype('<f4'), 'F16': np.dtype('<f2'),
    'I64': np.dtype('<i8'), 'I32': np.dtype('<i4'), 'I16': np.dtype('<i2'), 'I8': np.dtype('i1'),
    'U8': np.dtype('u1'), 'BOOL': np.dtype('?'),
    'BF16': np.dtype('<u2'),  # numpy has no bfloat16: read the bits, widen to float32 below
}
_ST_NAMES = {np.dtype(v).str: k for k, v in _ST_DTYPES.items() if k != 'BF16'}


def bf16_bits_to_f32(bits):
    """bfloat16 is the top half of a float32, so widening is a shift."""
    return (bits.astype(np.uint32) << 16).view(np.float32)


def read_safetensors(path):
    """Returns (OrderedDict name -> array, metadata dict). BF16 is widened to float32."""
    with open(path, 'rb') as f:
        data = f.read()
    if len(data) < 8:
        raise GraftError('too short to be a safetensors file')
    (n,) = struct.unpack('<Q', data[:8])
    if n > len(data) - 8:
        raise GraftError(f'safetensors header claims {n} bytes but the file has {len(data) - 8}')
    try:
        header = json.loads(data[8:8 + n].decode('utf-8'))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise GraftError(f'safetensors header is not valid JSON ({e})')
    if not isinstance(header, dict):
        raise GraftError('safetensors header is not a JSON object')
    meta = header.pop('__metadata__', None) or {}
    body = memoryview(data)[8 + n:]
    tensors = OrderedDict()
    for name, info in header.items():
        try:
            dt = _ST_DTYPES[info['dtype']]
            shape = [int(s) for s in info['shape']]
            begin, end = (int(o) for o in info['data_offsets'])
        except (KeyError, TypeError, ValueError):
            raise GraftError(f'tensor {name!r}: bad or unsupported header entry {info!r}')
        count = math.prod(shape)
        if not (0 <= begin <= end <= len(body)) or end - begin != count * dt.itemsize:
            raise GraftError(f'tensor {name!r}: data offsets {begin}..{end} do not fit its shape '
                             f'{shape} or the file ({len(body)} data bytes; truncated?)')
        arr = np.frombuffer(body[begin:end], dtype=dt).reshape(shape)
        if info['dtype'] == 'BF16':
            arr = bf16_bits_to_f32(arr)
        tensors[name] = arr.astype(arr.dtype.newbyteorder('='), copy=True)
    return tensors, meta


def write_safetensors(path, tensors, metadata=None):
    """Writes atomically: a temp file in the same folder, then os.replace, so a reader never
    sees a half-written file and a failed run leaves nothing behind."""
    header = OrderedDict()
    if metadata:
        bad = [k for k, v in metadata.items() if not isinstance(v, str)]
        if bad:
            raise ValueError(f'metadata values must be strings: {bad}')
        header['__metadata__'] = dict(metadata)
    offset, blobs = 0, []
    for name, arr in tensors.items():
        arr = np.ascontiguousarray(arr)
        le = arr.dtype.newbyteorder('<') if arr.dtype.byteorder not in ('|',) else arr.dtype
        arr = arr.astype(le, copy=False)
        code = _ST_NAMES.get(arr.dtype.str)
        if code is None:
            raise ValueError(f'{name}: dtype {arr.dtype} has no safetensors code here')
        blob = arr.tobytes()
        header[name] = {'dtype': code, 'shape': list(arr.shape),
                        'data_offsets': [offset, offset + len(blob)]}
        offset += len(blob)
        blobs.append(blob)
    hjson = json.dumps(header, separators=(',', ':')).encode('utf-8')
    hjson += b' ' * (-len(hjson) % 8)  # keep the data 8-byte aligned for the mmap reader
    tmp = f'{path}.tmp{os.getpid()}'
    try:
        with open(tmp, 'wb') as f:
            f.write(struct.pack('<Q', len(hjson)))
            f.write(hjson)
            for blob in blobs:
                f.write(blob)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


# ---------------------------------------------------------------------------------------------
# Architectures as block lists

# One block of a backbone. kind: 'mbconv' (inverted residual; expand is absent when e == 1),
# 'basic' or 'bottleneck' (ResNet). stage/j: position in the source model's stage structure,
# which the timm and torchvision names need. mid: expanded (or bottleneck) width.
Block = namedtuple('Block', 'kind stage j cin mid cout k stride down')

# EfficientNet-Lite: (width, depth, TF input size). Stem (32) and head (1280) are not scaled,
# nor are the repeats of the first and last stage (efficientnet_lite_builder.py).
LITE_SCALE = {
    'efficientnet_lite0': (1.0, 1.0, 224),
    'efficientnet_lite1': (1.0, 1.1, 240),
    'efficientnet_lite2': (1.1, 1.2, 260),
    'efficientnet_lite3': (1.2, 1.4, 280),
    'efficientnet_lite4': (1.4, 1.8, 300),
}
# repeats, kernel, stride, expand ratio, in, out (r1_k3_s11_e1_i32_o16 ...)
LITE_STAGES = [(1, 3, 1, 1, 32, 16), (2, 3, 2, 6, 16, 24), (2, 5, 2, 6, 24, 40),
               (3, 3, 2, 6, 40, 80), (3, 5, 1, 6, 80, 112), (4, 5, 2, 6, 112, 192),
               (1, 3, 1, 6, 192, 320)]
# MobileNetV2 (width 1.0): expand t, out c, repeats n, stride s of the first block.
MBV2_STAGES = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
               (6, 160, 3, 2), (6, 320, 1, 1)]
RESNET_LAYERS = {'resnet18': ('basic', [2, 2, 2, 2]), 'resnet50': ('bottleneck', [3, 4, 6, 3])}

ARCHS = list(LITE_SCALE) + ['mobilenet_v2', 'resnet18', 'resnet50']
# Which source namings each architecture can come in. timm ResNets use torchvision's names.
NAMINGS = {a: ('lukemelas', 'timm') for a in LITE_SCALE}
NAMINGS.update({'mobilenet_v2': ('torchvision', 'timm'),
                'resnet18': ('torchvision', 'timm'), 'resnet50': ('torchvision', 'timm')})


def round_filters(c, width, divisor=8):
    """TF EfficientNet channel rounding: nearest multiple of 8, never more than 10% down."""
    if width == 1.0:
        return c
    v = c * width
    new = max(divisor, int(v + divisor / 2) // divisor * divisor)
    if new < 0.9 * v:
        new += divisor
    return int(new)


def blocks(arch):
    """The block list of an architecture, flat index order."""
    out = []
    if arch in LITE_SCALE:
        width, depth, _ = LITE_SCALE[arch]
        last = len(LITE_STAGES) - 1
        for s, (r, k, stride, e, cin, cout) in enumerate(LITE_STAGES):
            cin = 32 if s == 0 else round_filters(cin, width)
            cout = round_filters(cout, width)
            if 0 < s < last:
                r = int(math.ceil(depth * r))
            for j in range(r):
                c = cin if j == 0 else cout
                out.append(Block('mbconv', s, j, c, c * e, cout, k, stride if j == 0 else 1, False))
    elif arch == 'mobilenet_v2':
        cin = 32
        for s, (t, c, n, stride) in enumerate(MBV2_STAGES):
            for j in range(n):
                out.append(Block('mbconv', s, j, cin, cin * t, c, 3, stride if j == 0 else 1, False))
                cin = c
    elif arch in RESNET_LAYERS:
        kind, reps = RESNET_LAYERS[arch]
        expansion = 4 if kind == 'bottleneck' else 1
        cin = 64
        for s, r in enumerate(reps):
            width = 64 << s
            for j in range(r):
                stride = 2 if (j == 0 and s > 0) else 1
                cout = width * expansion
                down = stride != 1 or cin != cout
                out.append(Block(kind, s, j, cin, width, cout, 3, stride, down))
                cin = cout
    else:
        raise GraftError(f'unknown architecture {arch!r} (known: {", ".join(ARCHS)})')
    return out


# A conv unit: canonical prefix and conv weight shape (OIHW, in = in_channels / groups).
Unit = namedtuple('Unit', 'name shape')


def units(arch):
    """Canonical conv units in file order, and the classifier's input width."""
    bl = blocks(arch)
    us = []
    if arch in RESNET_LAYERS:
        us.append(Unit('stem', (64, 3, 7, 7)))
        for i, b in enumerate(bl):
            p = f'blocks.{i}'
            if b.kind == 'basic':
                us.append(Unit(p + '.conv1', (b.mid, b.cin, 3, 3)))
                us.append(Unit(p + '.conv2', (b.cout, b.mid, 3, 3)))
            else:
                us.append(Unit(p + '.conv1', (b.mid, b.cin, 1, 1)))
                us.append(Unit(p + '.conv2', (b.mid, b.mid, 3, 3)))
                us.append(Unit(p + '.conv3', (b.cout, b.mid, 1, 1)))
            if b.down:
                us.append(Unit(p + '.down', (b.cout, b.cin, 1, 1)))
        return us, bl[-1].cout
    us.append(Unit('stem', (32, 3, 3, 3)))
    for i, b in enumerate(bl):
        p = f'blocks.{i}'
        if b.mid != b.cin:
            us.append(Unit(p + '.expand', (b.mid, b.cin, 1, 1)))
        us.append(Unit(p + '.dw', (b.mid, 1, b.k, b.k)))
        us.append(Unit(p + '.project', (b.cout, b.mid, 1, 1)))
    us.append(Unit('head', (1280, bl[-1].cout, 1, 1)))
    return us, 1280


BN_PARTS = ('weight', 'bias', 'running_mean', 'running_var')


def canonical_shapes(arch, num_classes):
    """OrderedDict canonical tensor name -> shape: everything a graft file must hold."""
    us, fc_in = units(arch)
    shapes = OrderedDict()
    for u in us:
        shapes[u.name + '.conv.weight'] = u.shape
        for part in BN_PARTS:
            shapes[f'{u.name}.bn.{part}'] = (u.shape[0],)
    shapes['fc.weight'] = (num_classes, fc_in)
    shapes['fc.bias'] = (num_classes,)
    return shapes


# ---------------------------------------------------------------------------------------------
# Source namings: canonical unit -> (source conv name, source BN prefix)

def _lukemelas(arch):
    bl = blocks(arch)
    m = {'stem': ('_conv_stem', '_bn0'), 'head': ('_conv_head', '_bn1')}
    for i, b in enumerate(bl):
        p = f'_blocks.{i}'
        m[f'blocks.{i}.expand'] = (p + '._expand_conv', p + '._bn0')
        m[f'blocks.{i}.dw'] = (p + '._depthwise_conv', p + '._bn1')
        m[f'blocks.{i}.project'] = (p + '._project_conv', p + '._bn2')
    return m, '_fc'


def _timm_mobile(arch):
    # timm EfficientNet/MobileNetV2: the first stage (expand 1) is a DepthwiseSeparableConv
    # (conv_dw/bn1, conv_pw/bn2); the rest are InvertedResidual
    # (conv_pw/bn1, conv_dw/bn2, conv_pwl/bn3).
    m = {'stem': ('conv_stem', 'bn1'), 'head': ('conv_head', 'bn2')}
    for i, b in enumerate(blocks(arch)):
        p = f'blocks.{b.stage}.{b.j}'
        if b.mid == b.cin:
            m[f'blocks.{i}.dw'] = (p + '.conv_dw', p + '.bn1')
            m[f'blocks.{i}.project'] = (p + '.conv_pw', p + '.bn2')
        else:
            m[f'blocks.{i}.expand'] = (p + '.conv_pw', p + '.bn1')
            m[f'blocks.{i}.dw'] = (p + '.conv_dw', p + '.bn2')
            m[f'blocks.{i}.project'] = (p + '.conv_pwl', p + '.bn3')
    return m, 'classifier'


def _torchvision_mbv2(arch):
    # features.0 stem, features.1..17 the blocks, features.18 head; ConvBNReLU is (conv, bn),
    # the projection is a bare conv followed by a bare BN inside InvertedResidual.conv.
    m = {'stem': ('features.0.0', 'features.0.1'), 'head': ('features.18.0', 'features.18.1')}
    for i, b in enumerate(blocks(arch)):
        p = f'features.{i + 1}.conv'
        if b.mid == b.cin:
            m[f'blocks.{i}.dw'] = (p + '.0.0', p + '.0.1')
            m[f'blocks.{i}.project'] = (p + '.1', p + '.2')
        else:
            m[f'blocks.{i}.expand'] = (p + '.0.0', p + '.0.1')
            m[f'blocks.{i}.dw'] = (p + '.1.0', p + '.1.1')
            m[f'blocks.{i}.project'] = (p + '.2', p + '.3')
    return m, 'classifier.1'


def _resnet(arch):
    m = {'stem': ('conv1', 'bn1')}
    for i, b in enumerate(blocks(arch)):
        p = f'layer{b.stage + 1}.{b.j}'
        for n in (1, 2, 3):
            m[f'blocks.{i}.conv{n}'] = (f'{p}.conv{n}', f'{p}.bn{n}')
        m[f'blocks.{i}.down'] = (p + '.downsample.0', p + '.downsample.1')
    return m, 'fc'


def name_map(arch, naming, num_classes):
    """OrderedDict canonical tensor name -> source tensor name, for every canonical tensor."""
    if naming not in NAMINGS.get(arch, ()):
        raise GraftError(f'{naming} names do not fit --arch {arch}')
    if arch in RESNET_LAYERS:
        units_map, fc = _resnet(arch)
    elif naming == 'lukemelas':
        units_map, fc = _lukemelas(arch)
    elif naming == 'timm':
        units_map, fc = _timm_mobile(arch)
    else:
        units_map, fc = _torchvision_mbv2(arch)
    out = OrderedDict()
    for name in canonical_shapes(arch, num_classes):
        if name.startswith('fc.'):
            out[name] = fc + name[2:]
            continue
        unit_kind, part = name.rsplit('.', 1)  # 'blocks.3.dw.bn', 'running_var'
        unit, kind = unit_kind.rsplit('.', 1)
        conv, bn = units_map[unit]
        out[name] = f'{conv if kind == "conv" else bn}.{part}'
    return out


def fc_source_name(arch, naming):
    """The source name of the classifier weight (to read num_classes before mapping)."""
    return name_map(arch, naming, 1)['fc.weight']
