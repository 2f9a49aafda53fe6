#!/usr/bin/env python3
"""Export a graft model file as one deployable ONNX graph. No torch needed.

    export_onnx.py MODEL.safetensors -o model.onnx

The graph is the whole classifier, exactly as graft runs it:

    image  uint8 [N, H, W, 3]  RGB, already resized/cropped to the model's input size (H = W =
                               metadata input_size), N free (dynamic batch)
      -> float, x / 255, (x - mean) / std            (mean and std from the metadata)
      -> NCHW -> the backbone: convs with batch norm folded in as graft folds it, TF "SAME"
         (asymmetric) or symmetric padding as the metadata says, ReLU6 / ReLU, residual adds,
         max pool, global average pool
      -> [dense + ReLU] -> dense -> softmax
    probabilities  float32 [N, classes]

The class names go into the model's metadata_props ("labels", a JSON list) and into labels.txt
beside the .onnx file, one per line. Opset 17. Both files are written to temporary names and
renamed, so a failed export leaves nothing behind.

The backbone is built by walking the same structure as graft's C++ builders
(engine/efficientnet_lite.cpp, engine/mobilenet_v2.cpp, engine/resnet.cpp), with the block lists
of tools/graftfile.py, which the converter and the C++ loader already agree on.

Any fault: one line on stderr naming the file and the fault, exit code 2, no output file.
Needs numpy and the onnx package (scripts/setup.sh installs both).
"""

import argparse
import json
import math
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import graftfile  # noqa: E402
from graftfile import GraftError  # noqa: E402

OPSET = 17
# ONNX IR version 8 is the one that introduced opset 17; the oldest that can hold it, so the file
# loads in as many runtimes as possible.
IR_VERSION = 8

# graft's defaults where a file's metadata is silent (engine/model.h, io/image.h).
DEFAULT_BN_EPS = 1e-5
DEFAULT_INPUT_SIZE = 224
DEFAULT_MEAN = (0.485, 0.456, 0.406)
DEFAULT_STD = (0.229, 0.224, 0.225)

INPUT_NAME = 'image'
OUTPUT_NAME = 'probabilities'


# ---------------------------------------------------------------------------------------------
# Reading and checking the model file (the checks of engine/model.cpp's load_model)

class Model:
    """What the exporter needs from a graft file, validated."""

    def __init__(self, path):
        try:
            self.tensors, self.meta = graftfile.read_safetensors(path)
        except IsADirectoryError:
            raise GraftError('is a folder, not a model file')
        except OSError as e:
            raise GraftError(f'cannot read ({e.strerror or e})')
        arch = self.meta.get('arch')
        if arch is None:
            raise GraftError("not a graft model file (its metadata has no 'arch'; "
                             "make one with graft convert or graft train)")
        if arch not in graftfile.ARCHS:
            raise GraftError(f"unknown arch '{arch}' (known: {', '.join(graftfile.ARCHS)})")
        self.arch = arch
        lite = arch in graftfile.LITE_SCALE
        self.padding = self.meta.get('padding', 'tf_same' if lite else 'symmetric')
        if self.padding not in ('tf_same', 'symmetric'):
            raise GraftError(f"metadata 'padding' must be tf_same or symmetric, not "
                             f"'{self.padding}'")
        self.bn_eps = np.float32(self._number('bn_eps', DEFAULT_BN_EPS))
        if not 0 < self.bn_eps < 1:
            raise GraftError("metadata 'bn_eps' must be in (0, 1)")
        size = self._number('input_size', DEFAULT_INPUT_SIZE)
        if not (16 <= size <= 4096 and size == math.floor(size)):
            raise GraftError("metadata 'input_size' must be an integer in [16, 4096]")
        self.input_size = int(size)
        self.mean = self._triple('mean', DEFAULT_MEAN)
        self.std = self._triple('std', DEFAULT_STD)
        if not all(s > 0 for s in self.std):
            raise GraftError("metadata 'std' values must be positive")
        self._check_tensors()
        self.labels = self._labels()

    def _number(self, key, default):
        text = self.meta.get(key)
        return default if text is None else _parse(key, text)

    def _triple(self, key, default):
        text = self.meta.get(key)
        if text is None:
            return np.array(default, dtype=np.float32)
        parts = text.split(',')
        if len(parts) != 3:
            raise GraftError(f"metadata '{key}' must hold 3 comma-separated numbers")
        # graft parses each number in double precision and keeps it as a float.
        return np.array([_parse(key, p) for p in parts], dtype=np.float32)

    def _check_tensors(self):
        units, feature_dim = graftfile.units(self.arch)
        allowed = {}
        for u in units:
            allowed[u.name + '.conv.weight'] = tuple(u.shape)
            allowed[u.name + '.conv.bias'] = (u.shape[0],)
            for part in graftfile.BN_PARTS:
                allowed[f'{u.name}.bn.{part}'] = (u.shape[0],)
        for name in self.tensors:
            if name not in allowed and name not in ('fc.weight', 'fc.bias', 'hidden.weight',
                                                    'hidden.bias'):
                raise GraftError(f"tensor '{name}' is unexpected for arch {self.arch}")
        for name, shape in allowed.items():
            if name.endswith('.conv.bias') and name not in self.tensors:
                continue
            self.tensor(name, shape)
        for u in units:
            if (self.tensors[u.name + '.bn.running_var'] < 0).any():
                raise GraftError(f"tensor '{u.name}.bn.running_var' has a negative variance")

        # The head: [hidden dense + ReLU] -> fc.
        fc_in = feature_dim
        self.hidden = None
        if 'hidden.weight' in self.tensors or 'hidden.bias' in self.tensors:
            hw = self.tensors.get('hidden.weight')
            if hw is None or hw.ndim != 2 or hw.shape[1] != feature_dim or hw.shape[0] < 1:
                raise GraftError(f"tensor 'hidden.weight' must have shape [units, {feature_dim}]")
            self.hidden = (self.tensor('hidden.weight', hw.shape),
                           self.tensor('hidden.bias', (hw.shape[0],)))
            fc_in = hw.shape[0]
        if 'fc.weight' not in self.tensors and 'fc.bias' not in self.tensors:
            raise GraftError('holds a backbone without a classifier; train one first '
                             '(graft train) or convert a checkpoint that has one')
        fw = self.tensors.get('fc.weight')
        if fw is None or 'fc.bias' not in self.tensors:
            raise GraftError("classifier needs both 'fc.weight' and 'fc.bias'")
        if fw.ndim != 2 or fw.shape[1] != fc_in or fw.shape[0] < 1:
            raise GraftError(f"tensor 'fc.weight' has shape {list(fw.shape)}, expected "
                             f"[classes, {fc_in}]")
        self.fc = (self.tensor('fc.weight', fw.shape), self.tensor('fc.bias', (fw.shape[0],)))
        self.classes = int(fw.shape[0])

    def tensor(self, name, shape):
        """The tensor as float32, after checking it is there, has `shape` and is finite."""
        t = self.tensors.get(name)
        if t is None:
            raise GraftError(f"tensor '{name}' is missing (arch {self.arch})")
        if tuple(t.shape) != tuple(shape):
            raise GraftError(f"tensor '{name}' has shape {list(t.shape)}, expected {list(shape)}")
        if t.dtype.kind != 'f':
            raise GraftError(f"tensor '{name}' is {t.dtype}, not floating point")
        t = t.astype(np.float32)
        if not np.isfinite(t).all():
            raise GraftError(f"tensor '{name}' holds a NaN or infinity")
        return t

    def _labels(self):
        text = self.meta.get('labels')
        if text is None:
            # graft predict names an unlabelled class by its index; so does the export.
            return [str(i) for i in range(self.classes)]
        try:
            labels = json.loads(text)
        except json.JSONDecodeError:
            labels = None
        if not isinstance(labels, list) or not all(isinstance(x, str) for x in labels):
            raise GraftError("metadata 'labels' is not a JSON list of strings")
        if len(labels) != self.classes:
            raise GraftError(f'metadata has {len(labels)} labels but the classifier '
                             f'{self.classes} outputs')
        for i, label in enumerate(labels):
            if '\n' in label or '\r' in label:
                raise GraftError(f'label {i} ({label!r}) holds a line break, which labels.txt '
                                 '(one label per line) cannot')
        return labels


def _parse(key, text):
    try:
        v = float(text)
    except ValueError:
        v = math.nan
    if not math.isfinite(v):
        raise GraftError(f"metadata '{key}' is not a number: '{text}'")
    return v


# ---------------------------------------------------------------------------------------------
# Building the graph

class GraphBuilder:
    """Appends ONNX nodes and initialisers; tracks each value's spatial size, which is static
    (the input's H and W are fixed), so every conv's padding is computed here once."""

    def __init__(self, model, helper, numpy_helper):
        self.m = model
        self.helper, self.numpy_helper = helper, numpy_helper
        self.nodes, self.inits = [], []
        self.counter = 0
        self.relu6_bounds = None

    def name(self, hint):
        self.counter += 1
        return f'{hint}_{self.counter}'

    def const(self, name, array):
        self.inits.append(self.numpy_helper.from_array(np.ascontiguousarray(array), name))
        return name

    def node(self, op, inputs, hint, **attrs):
        out = self.name(hint)
        self.nodes.append(self.helper.make_node(op, inputs, [out], name=out, **attrs))
        return out

    # -- geometry, as engine/net.cpp's axis_geometry --------------------------------------

    def axis(self, size, k, stride):
        """(output size, pad before, pad after) of one spatial axis."""
        if self.m.padding == 'tf_same':
            out = (size + stride - 1) // stride
            total = max((out - 1) * stride + k - size, 0)
            return out, total // 2, total - total // 2
        pad = k // 2  # PyTorch's padding=(k-1)/2 for the odd kernels these nets use
        return (size + 2 * pad - k) // stride + 1, pad, pad

    # -- ops --------------------------------------------------------------------------------

    def conv(self, name, x, hw, k, stride, groups, act, residual=None):
        """One graft conv op: conv with BN folded in, [+ residual], activation.
        x is an NCHW value of spatial size hw; returns (output, its spatial size)."""
        m = self.m
        w = m.tensors[name + '.conv.weight'].astype(np.float32)
        gamma = m.tensors[name + '.bn.weight'].astype(np.float32)
        beta = m.tensors[name + '.bn.bias'].astype(np.float32)
        mean = m.tensors[name + '.bn.running_mean'].astype(np.float32)
        var = m.tensors[name + '.bn.running_var'].astype(np.float32)
        bias = m.tensors.get(name + '.conv.bias')
        bias = np.zeros_like(gamma) if bias is None else bias.astype(np.float32)
        # Folded in float32 with the same formula as engine/model.cpp.
        scale = gamma / np.sqrt(var + m.bn_eps)
        wf = (w * scale[:, None, None, None]).astype(np.float32)
        bf = (beta + (bias - mean) * scale).astype(np.float32)
        out_h, top, bottom = self.axis(hw[0], k, stride)
        out_w, left, right = self.axis(hw[1], k, stride)
        if out_h <= 0 or out_w <= 0:
            raise GraftError(f'input {m.input_size}x{m.input_size} is too small for {name}')
        y = self.node('Conv', [x, self.const(name + '.weight', wf), self.const(name + '.bias', bf)],
                      name, kernel_shape=[k, k], strides=[stride, stride],
                      pads=[top, left, bottom, right], group=groups)
        if residual is not None:
            y = self.node('Add', [y, residual], name + '.add')
        y = self.activation(y, act, name)
        return y, (out_h, out_w)

    def activation(self, x, act, hint):
        if act == 'relu':
            return self.node('Relu', [x], hint + '.relu')
        if act == 'relu6':
            if not self.relu6_bounds:  # Clip's bounds are inputs since opset 11; made once
                self.relu6_bounds = [self.const('relu6.min', np.array(0, dtype=np.float32)),
                                     self.const('relu6.max', np.array(6, dtype=np.float32))]
            return self.node('Clip', [x, *self.relu6_bounds], hint + '.relu6')
        return x

    def max_pool(self, x, hw, k, stride):
        """graft's max pool ignores padded taps, as ONNX MaxPool does."""
        out_h, top, bottom = self.axis(hw[0], k, stride)
        out_w, left, right = self.axis(hw[1], k, stride)
        y = self.node('MaxPool', [x], 'maxpool', kernel_shape=[k, k], strides=[stride, stride],
                      pads=[top, left, bottom, right])
        return y, (out_h, out_w)

    def dense(self, x, weight, bias, hint):
        """y = x W^T + b with W [out][in], PyTorch's layout, as graft keeps it."""
        return self.node('Gemm', [x, self.const(hint + '.weight', weight),
                                  self.const(hint + '.bias', bias)], hint, transB=1)

    # -- the network ------------------------------------------------------------------------

    def build(self):
        m = self.m
        helper = self.helper

        # Normalisation exactly as graft's normalize_u8: (float(v) / 255 - mean) / std.
        x = self.node('Cast', [INPUT_NAME], 'to_float', to=helper.np_dtype_to_tensor_dtype(
            np.dtype(np.float32)))
        x = self.node('Div', [x, self.const('scale.255', np.array(255, dtype=np.float32))],
                      'unit')
        x = self.node('Sub', [x, self.const('mean', m.mean.reshape(1, 1, 1, 3))], 'sub_mean')
        x = self.node('Div', [x, self.const('std', m.std.reshape(1, 1, 1, 3))], 'div_std')
        x = self.node('Transpose', [x], 'nchw', perm=[0, 3, 1, 2])
        hw = (m.input_size, m.input_size)

        if m.arch in graftfile.RESNET_LAYERS:
            x, hw = self.resnet(x, hw)
        else:
            x, hw = self.mobile(x, hw)

        x = self.node('GlobalAveragePool', [x], 'avgpool')
        x = self.node('Flatten', [x], 'features', axis=1)
        if m.hidden is not None:
            x = self.dense(x, *m.hidden, 'hidden')
            x = self.node('Relu', [x], 'hidden.relu')
        x = self.dense(x, *m.fc, 'fc')
        self.nodes.append(helper.make_node('Softmax', [x], [OUTPUT_NAME], name='softmax', axis=1))

    def mobile(self, x, hw):
        """EfficientNet-Lite and MobileNetV2: engine/efficientnet_lite.cpp, mobilenet_v2.cpp and
        inverted_residual.cpp. ReLU6 throughout; the projection is linear."""
        x, hw = self.conv('stem', x, hw, 3, 2, 1, 'relu6')
        for i, b in enumerate(graftfile.blocks(self.m.arch)):
            p = f'blocks.{i}'
            y = x
            if b.mid != b.cin:  # expand ratio != 1
                y, hw_y = self.conv(p + '.expand', y, hw, 1, 1, 1, 'relu6')
            else:
                hw_y = hw
            y, hw_y = self.conv(p + '.dw', y, hw_y, b.k, b.stride, b.mid, 'relu6')
            shortcut = x if (b.stride == 1 and b.cin == b.cout) else None
            x, hw = self.conv(p + '.project', y, hw_y, 1, 1, 1, None, residual=shortcut)
        return self.conv('head', x, hw, 1, 1, 1, 'relu6')

    def resnet(self, x, hw):
        """ResNet-18/50 as engine/resnet.cpp: stride on the 3x3 conv, a 1x1 conv shortcut where
        the shape changes, the residual added before the block's last ReLU."""
        x, hw = self.conv('stem', x, hw, 7, 2, 1, 'relu')
        x, hw = self.max_pool(x, hw, 3, 2)
        for i, b in enumerate(graftfile.blocks(self.m.arch)):
            p = f'blocks.{i}'
            shortcut = x
            if b.down:
                shortcut, _ = self.conv(p + '.down', x, hw, 1, b.stride, 1, None)
            if b.kind == 'bottleneck':
                y, hw_y = self.conv(p + '.conv1', x, hw, 1, 1, 1, 'relu')
                y, hw_y = self.conv(p + '.conv2', y, hw_y, 3, b.stride, 1, 'relu')
                x, hw = self.conv(p + '.conv3', y, hw_y, 1, 1, 1, 'relu', residual=shortcut)
            else:
                y, hw_y = self.conv(p + '.conv1', x, hw, 3, b.stride, 1, 'relu')
                x, hw = self.conv(p + '.conv2', y, hw_y, 3, 1, 1, 'relu', residual=shortcut)
        return x, hw


def build_onnx(model, source_path, onnx, helper, numpy_helper):
    g = GraphBuilder(model, helper, numpy_helper)
    g.build()
    size = model.input_size
    image = helper.make_tensor_value_info(INPUT_NAME, onnx.TensorProto.UINT8,
                                          ['batch', size, size, 3])
    image.doc_string = (f'RGB photos as uint8, NHWC [batch, {size}, {size}, 3], already resized '
                        f'and cropped to {size}x{size}; normalisation is inside the graph')
    probs = helper.make_tensor_value_info(OUTPUT_NAME, onnx.TensorProto.FLOAT,
                                          ['batch', model.classes])
    probs.doc_string = 'softmax class probabilities, in the order of the labels'
    graph = helper.make_graph(g.nodes, f'graft_{model.arch}', [image], [probs],
                              initializer=g.inits)
    onnx_model = helper.make_model(graph, opset_imports=[helper.make_opsetid('', OPSET)],
                                   producer_name='graft', producer_version='0.1',
                                   ir_version=IR_VERSION,
                                   doc_string=f'{model.arch} classifier exported from '
                                              f'{os.path.basename(source_path)}')
    meta = model.meta
    props = {
        'labels': json.dumps(model.labels, ensure_ascii=False),
        'arch': model.arch,
        'input': f'uint8 NHWC [batch, {size}, {size}, 3] RGB, resized and cropped by the caller',
        'input_size': str(size),
        'resize_mode': meta.get('resize_mode', 'center_crop'),
        'crop_fraction': meta.get('crop_fraction', '0.875'),
        'mean': ','.join(repr(float(v)) for v in model.mean),
        'std': ','.join(repr(float(v)) for v in model.std),
        'padding': model.padding,
    }
    helper.set_model_props(onnx_model, props)
    onnx.checker.check_model(onnx_model, full_check=True)
    return onnx_model


# ---------------------------------------------------------------------------------------------
# Writing

def write_temp(path, data):
    """Writes data to a temporary name in path's folder (so the rename is atomic) and syncs it;
    returns the temporary name."""
    tmp = f'{path}.tmp{os.getpid()}'
    try:
        with open(tmp, 'wb') as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    return tmp


def export(args, onnx, helper, numpy_helper):
    model = Model(args.input)
    onnx_model = build_onnx(model, args.input, onnx, helper, numpy_helper)
    labels_path = os.path.join(os.path.dirname(args.output), 'labels.txt')
    if os.path.abspath(args.output) == os.path.abspath(labels_path):
        raise OutputError(args.output, 'labels.txt is where the labels go; name the model '
                          'something else')
    onnx_tmp = labels_tmp = None
    renamed = False
    try:
        onnx_tmp = write_temp(args.output, onnx_model.SerializeToString())
        text = ''.join(label + '\n' for label in model.labels)
        labels_tmp = write_temp(labels_path, text.encode('utf-8'))
        os.replace(onnx_tmp, args.output)
        renamed = True
        os.replace(labels_tmp, labels_path)
    except OSError as e:
        for tmp in (onnx_tmp, labels_tmp):
            if tmp and os.path.exists(tmp):
                os.remove(tmp)
        if renamed:  # a model beside another model's labels.txt would mislead: take it back
            os.remove(args.output)
        raise OutputError(args.output, f'cannot write ({e.strerror or e})')
    return model, labels_path


class OutputError(Exception):
    def __init__(self, path, message):
        super().__init__(message)
        self.path = path


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('input', help='graft model file (.safetensors)')
    ap.add_argument('-o', '--output', required=True, help='ONNX file to write (labels.txt is '
                    'written beside it)')
    args = ap.parse_args(argv)
    prog = os.path.basename(sys.argv[0] or 'export_onnx.py')
    try:
        import onnx
        from onnx import helper, numpy_helper
    except ImportError:
        print(f'{prog}: the onnx Python package is missing: run scripts/setup.sh or '
              f'pip install onnx', file=sys.stderr)
        return 2
    try:
        model, labels_path = export(args, onnx, helper, numpy_helper)
    except GraftError as e:
        message = str(e).replace('\r', '\\r').replace('\n', '\\n')
        print(f'{prog}: {args.input}: {message}', file=sys.stderr)
        return 2
    except OutputError as e:
        print(f'{prog}: {e.path}: {e}', file=sys.stderr)
        return 2
    except (ValueError, TypeError, KeyError, MemoryError) as e:
        detail = str(e).splitlines()[0] if str(e) else type(e).__name__
        print(f'{prog}: {args.input}: cannot export ({type(e).__name__}: {detail})',
              file=sys.stderr)
        return 2
    size = model.input_size
    print(f'wrote {args.output}: {model.arch}, input uint8 [N, {size}, {size}, 3], '
          f'{model.classes} classes, padding {model.padding}, opset {OPSET}; labels in '
          f'{labels_path}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
