#!/usr/bin/env python3
"""graft's whole frozen trunk against PyTorch at its best (and, on the CPU, onnxruntime), on the
same input and the same device.

    python3 bench/trunk_vs_torch.py --build build --model models/efficientnet_lite0.safetensors \\
        --batches 32,256 --json OUT.json [--device cuda|cpu] [--iters N] [--repeats R]
        [--warmup W] [--variants eager-fp32,eager-tf32,channels_last-bf16,compile-max-autotune,
        onnxruntime] [--seconds-per-variant S] [--seed 0]

Per batch size: a seeded random batch (uniform pixels 0..255, normalised by the file's mean and
std, NHWC float32) is written to a file; BUILD/bench/bench_trunk times graft's trunk on it (row
`graft`, and on cuda `graft-graph`: the same forward replayed from a CUDA graph); then each
PyTorch variant runs on the same values, already on the device:

  eager-fp32            NCHW fp32, TF32 off for cuDNN convs and for matmuls
  eager-tf32            NCHW fp32 with PyTorch's default TF32 settings (cuDNN convs may use TF32)
  channels_last-bf16    model and input channels_last, under bf16 autocast
  compile-max-autotune  batch norm folded into the convs, torch.compile(mode='max-autotune'),
                        fp32 with PyTorch's default TF32 settings; compile time recorded apart
  onnxruntime           (--device cpu only) the ONNX graph `BUILD/graft export` writes for the
                        model, cut to the trunk (below), in an onnxruntime InferenceSession:
                        CPUExecutionProvider, ORT_ENABLE_ALL graph optimisations, intra-op
                        threads = graft's OpenMP thread count, one inter-op thread, NCHW fp32 input

The trunk is everything before the classifier: the stem, the blocks, the 1x1 head conv and the
global average pool (bench/torch_efficientnet_lite.py's features()), the 1280 values graft's
head sits on. cuDNN benchmark mode is on (fixed shapes: the fastest algorithm, chosen during the
warm-up). Each variant runs under torch.inference_mode(): warm-up calls, then `iters`
back-to-back calls between two CUDA events (the host clock on cpu), repeated, median reported.

The onnxruntime row: `graft export` writes the whole classifier (uint8 NHWC image ->
normalisation -> transpose to NCHW -> trunk -> dense -> softmax); the row runs that graph cut
(onnx.utils.extract_model) at the trunk's two ends: from the NCHW float value after the graph's
own normalisation and transpose (fed the same batch PyTorch gets) to the flattened global average
pool that enters the first dense layer. So every row times the same span, the one bench_trunk
and bench_forward time; what the cut leaves out (normalisation, the 1280x1000 dense, softmax) is
under 1% of the forward's FLOPs. The export has batch norm folded into the convs, as graft runs
them, and padding (TF SAME's asymmetric pads included) in each Conv's pads attribute, with no
Pad node (tests/py/test_export.py checks this), so onnxruntime copies no padded activations.
On the CPU every row runs on the same number of threads: OMP_NUM_THREADS, else the CPUs this
process may run on (what graft's OpenMP takes), given to PyTorch with torch.set_num_threads and
to onnxruntime as intra_op_num_threads.

Every row's features are compared with the same PyTorch model in float64 on the same device:
max_rel_diff = max |f - ref| / max |ref|, and max_abs_diff. ratio = graft's images/s over the
row's (above 1: graft is faster). The compiled rows run after all the others, of every batch.
The onnxruntime row needs the onnx and onnxruntime packages (scripts/bench-venv.sh makes an
environment with them and torch) and BUILD/graft with its exporter; without them the row fails
with the reason, the others run.
The JSON lists every planned row from the start (status "not run") and is rewritten after each
one; a variant that fails (an error, a compile that runs past --seconds-per-variant) is a row with
status "failed" and the error's line. Exit status: 0, or 1 when graft's own run failed, 2 for bad arguments.
"""

import argparse
import copy
import datetime
import importlib.metadata
import os
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, HERE)
import torch_efficientnet_lite as lite  # noqa: E402
import yardstick  # noqa: E402

VARIANTS = ['eager-fp32', 'eager-tf32', 'channels_last-bf16', 'compile-max-autotune',
            'onnxruntime']
CUDA_DEFAULT = VARIANTS[:4]
CPU_DEFAULT = [v for v in VARIANTS if v != 'compile-max-autotune']
CPU_ONLY = ['onnxruntime']
# PyTorch's own TF32 defaults, read before anything here changes them.
DEFAULT_TF32 = (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--build', default=os.path.join(REPO, 'build'),
                   help='build directory holding bench/bench_trunk (and graft, for export)')
    p.add_argument('--model',
                   default=os.path.join(REPO, 'models', 'efficientnet_lite0.safetensors'))
    p.add_argument('--batches', default=None, help='comma-separated batch sizes '
                   '(default 32,256 on cuda, 2 on cpu)')
    p.add_argument('--json', required=True, help='results, rewritten after every row')
    p.add_argument('--device', choices=['cuda', 'cpu'],
                   default='cuda' if torch.cuda.is_available() else 'cpu')
    p.add_argument('--iters', type=int, help='back-to-back calls per measurement '
                   '(default 50 on cuda, 2 on cpu)')
    p.add_argument('--repeats', type=int, help='measurements per row (default 5 on cuda, 1 on cpu)')
    p.add_argument('--warmup', type=int, help='calls before timing (default 5 on cuda, 1 on cpu)')
    p.add_argument('--variants', default=None,
                   help=f'comma-separated, of {",".join(VARIANTS)} (default: all but '
                   'onnxruntime on cuda; on cpu all but the compiled one)')
    p.add_argument('--seconds-per-variant', type=float, default=900,
                   help='a variant (graft included) still running after this long fails')
    p.add_argument('--seed', type=int, default=0)
    a = p.parse_args(argv)
    cuda = a.device == 'cuda'
    if cuda and not torch.cuda.is_available():
        p.error('--device cuda: PyTorch sees no CUDA device')
    a.batches = [int(b) for b in (a.batches or ('32,256' if cuda else '2')).split(',')]
    if any(b < 1 for b in a.batches):
        p.error('--batches: sizes must be >= 1')
    a.iters = a.iters or (50 if cuda else 2)
    a.repeats = a.repeats or (5 if cuda else 1)
    a.warmup = a.warmup if a.warmup is not None else (5 if cuda else 1)
    a.variants = (a.variants.split(',') if a.variants
                  else CUDA_DEFAULT if cuda else CPU_DEFAULT)
    unknown = [v for v in a.variants if v not in VARIANTS]
    if unknown:
        p.error(f'--variants: unknown {unknown}; known: {VARIANTS}')
    if cuda and any(v in CPU_ONLY for v in a.variants):
        p.error(f'--variants: {",".join(CPU_ONLY)} runs on the CPU only (--device cpu)')
    if not os.path.isfile(a.model):
        p.error(f'--model {a.model}: no such file (scripts/setup.sh fetches it)')
    return a


# ---------------------------------------------------------------------------------------------
# Input and models

def make_input(meta, n, seed):
    """[n][size][size][3] float32: random pixels normalised the way the model expects."""
    pre = lite.preprocessing(meta)
    size = pre['input_size']
    rng = np.random.default_rng([seed, n])
    pixels = rng.integers(0, 256, size=(n, size, size, 3)).astype(np.float32) / 255.0
    mean = np.asarray(pre['mean'], np.float32)
    std = np.asarray(pre['std'], np.float32)
    return ((pixels - mean) / std).astype(np.float32)


class Trunk(nn.Module):
    """features() as the module's forward, so torch.compile and .to() see the whole trunk."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model.features(x)


class FoldedConv(nn.Module):
    """A conv with its batch norm folded into weight and bias, keeping TF SAME padding."""

    def __init__(self, conv, bn):
        super().__init__()
        w, b = torch.nn.utils.fusion.fuse_conv_bn_weights(
            conv.weight, None, bn.running_mean, bn.running_var, bn.eps, bn.weight, bn.bias)
        self.weight, self.bias = w, b
        self.stride, self.groups = conv.stride, conv.groups
        self.kernel_size = conv.kernel_size

    def forward(self, x):
        (kh, kw), (sh, sw) = self.kernel_size, self.stride
        top, bottom = lite.tf_same_pad(x.shape[-2], kh, sh)
        left, right = lite.tf_same_pad(x.shape[-1], kw, sw)
        if top or bottom or left or right:
            x = F.pad(x, (left, right, top, bottom))
        return F.conv2d(x, self.weight, self.bias, self.stride, 0, 1, self.groups)


def fold_batch_norm(trunk):
    """Every conv unit's batch norm folded into its conv (what graft does at load time)."""
    units = [m for m in trunk.modules() if isinstance(m, lite.ConvBN)]
    for m in units:
        m.conv = FoldedConv(m.conv, m.bn)
        m.bn = nn.Identity()
    return trunk, len(units)


def set_tf32(cudnn, matmul):
    torch.backends.cudnn.allow_tf32 = cudnn
    torch.backends.cuda.matmul.allow_tf32 = matmul


def tf32_note():
    return (f'cudnn.allow_tf32={torch.backends.cudnn.allow_tf32}, '
            f'matmul.allow_tf32={torch.backends.cuda.matmul.allow_tf32}')


def cpu_threads():
    """The threads graft's CPU forward runs on: OpenMP's default, OMP_NUM_THREADS's first value
    when set, else the CPUs this process may run on."""
    first = os.environ.get('OMP_NUM_THREADS', '').split(',')[0].strip()
    if first.isdigit() and int(first) > 0:
        return int(first)
    return len(os.sched_getaffinity(0))


def package_version(name):
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


# ---------------------------------------------------------------------------------------------
# The exported ONNX graph, cut to the trunk

_trunk_onnx = {}


def trunk_onnx(args, workdir):
    """(path, description) of the ONNX graph `graft export` writes for args.model, cut to the
    trunk: NCHW float input (after the graph's normalisation and transpose) to the features the
    first dense layer takes. Exported once per run; every batch size uses it (the batch is
    dynamic)."""
    if workdir in _trunk_onnx:
        return _trunk_onnx[workdir]
    import onnx
    import onnx.utils
    exe = os.path.join(args.build, 'graft')
    if not os.path.isfile(exe):
        raise RuntimeError(f'{exe}: not built (cmake --build BUILD --target graft)')
    whole = os.path.join(workdir, 'export', 'model.onnx')
    os.makedirs(os.path.dirname(whole), exist_ok=True)
    # The exporter is a Python tool graft runs; this interpreter has the onnx package.
    env = dict(os.environ)
    env.setdefault('GRAFT_PYTHON', sys.executable)
    try:
        p = subprocess.run([exe, 'export', args.model, '-o', whole], capture_output=True,
                           text=True, timeout=args.seconds_per_variant, env=env)
    except subprocess.TimeoutExpired:
        raise yardstick.Timeout('graft export ran past its time limit')
    if p.returncode != 0:
        lines = [ln for ln in (p.stderr + p.stdout).splitlines() if ln.strip()]
        raise RuntimeError(f'graft export: {lines[-1] if lines else f"exit {p.returncode}"}')
    nodes = onnx.load(whole, load_external_data=False).graph.node
    transposes = [n for n in nodes if n.op_type == 'Transpose']
    gemms = [n for n in nodes if n.op_type == 'Gemm']
    if len(transposes) != 1 or not gemms:
        raise RuntimeError(f'graft export wrote {len(transposes)} Transpose and {len(gemms)} '
                           'Gemm nodes; expected one NHWC->NCHW transpose and a dense head')
    start, end = transposes[0].output[0], gemms[0].input[0]
    cut = os.path.join(workdir, 'trunk.onnx')
    onnx.utils.extract_model(whole, cut, [start], [end], check_model=True)
    ops = [n.op_type for n in onnx.load(cut).graph.node]
    counts = ', '.join(f'{ops.count(op)} {op}' for op in sorted(set(ops), key=ops.index))
    desc = (f'graft export graph cut from {start!r} (NCHW float) to {end!r} (features): '
            f'{counts}' + ('' if 'Pad' in ops else '; no Pad node'))
    _trunk_onnx[workdir] = cut, desc
    return _trunk_onnx[workdir]


# ---------------------------------------------------------------------------------------------
# Timing

def time_calls(fn, x, args, before_call=None):
    """The row's timing (yardstick.time_calls), then one more call whose output is returned."""
    def call():
        if before_call:
            before_call()
        fn(x)

    t = yardstick.time_calls(call, args.device == 'cuda', args.iters, args.repeats)
    if before_call:
        before_call()
    out = fn(x).clone()  # a CUDA graph's output is overwritten by the next replay
    if args.device == 'cuda':
        torch.cuda.synchronize()
    return t, out


def diffs(f, ref):
    f = f.to(ref.device, torch.float64)
    if f.shape != ref.shape:
        raise ValueError(f'features of shape {tuple(f.shape)}, '
                         f'the reference has {tuple(ref.shape)}')
    abs_diff = (f - ref).abs().max().item()
    return abs_diff / ref.abs().max().item(), abs_diff


def host_bound_note(t):
    if t['host_ms'] >= 0.9 * t['ms']:
        return (f'host-bound: issuing the calls took {t["host_ms"]:.3f} of {t["ms"]:.3f} ms '
                'per batch')
    return ''


# ---------------------------------------------------------------------------------------------
# Rows

def run_graft(args, input_path, n, size, ref, graph, workdir):
    exe = os.path.join(args.build, 'bench', 'bench_trunk')
    features_path = os.path.join(workdir, f'graft_features_{n}.f32')
    cmd = ['--model', args.model, '--input', input_path, '--shape', f'{n},{size},{size}',
           '--device', args.device, '--iters', str(args.iters), '--repeats', str(args.repeats),
           '--warmup', str(args.warmup), '--features', features_path]
    if graph:
        cmd.append('--graph')
    res = yardstick.run_program(exe, cmd, args.seconds_per_variant)
    if res['feature_dim'] != ref.shape[1]:
        raise RuntimeError(f'graft gives {res["feature_dim"]} features, the PyTorch trunk '
                           f'{ref.shape[1]}')
    f = torch.from_numpy(np.fromfile(features_path, dtype='<f4').reshape(n, res['feature_dim']))
    t = {'ms': res['ms_per_batch']['median'], 'ms_min': res['ms_per_batch']['min'],
         'host_ms': res['host_ms_per_batch'], 'ms_all': res['ms_per_batch_all']}
    notes = ['fp32 CUDA-core kernels, batch norm folded at load' if args.device == 'cuda'
             else f'CPU twins, {res["device_name"]}']
    if graph:
        notes.append('one forward captured in a CUDA graph, replayed' if res['graph']
                     else f'not captured ({res.get("graph_error", "")}); stream launches')
    return t, f, notes


def build_variant(name, trunk, x, args, workdir):
    """(callable, its input, notes, per-call hook) for one PyTorch or onnxruntime variant."""
    dev = args.device
    if name == 'onnxruntime':
        import onnxruntime as ort
        path, desc = trunk_onnx(args, workdir)
        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.intra_op_num_threads = cpu_threads()
        so.inter_op_num_threads = 1
        sess = ort.InferenceSession(path, so, providers=['CPUExecutionProvider'])
        feed = sess.get_inputs()[0].name
        xin = x.cpu().numpy()

        def call(inp):
            return torch.from_numpy(sess.run(None, {feed: inp})[0])
        return call, xin, [f'onnxruntime {ort.__version__}, {sess.get_providers()[0]}, '
                           f'ORT_ENABLE_ALL, {so.intra_op_num_threads} intra-op threads', desc], \
            None
    if name == 'eager-fp32':
        set_tf32(False, False)
        return trunk, x, ['NCHW fp32, TF32 off', tf32_note()], None
    if name == 'eager-tf32':
        set_tf32(*DEFAULT_TF32)
        notes = ['NCHW fp32, PyTorch default TF32', tf32_note()]
        if dev == 'cpu':
            notes.append('TF32 does not apply on the CPU: same math as eager-fp32')
        return trunk, x, notes, None
    if name == 'channels_last-bf16':
        set_tf32(*DEFAULT_TF32)
        m = copy.deepcopy(trunk).to(memory_format=torch.channels_last)
        xc = x.contiguous(memory_format=torch.channels_last)

        def call(inp):
            with torch.autocast(dev, dtype=torch.bfloat16):
                return m(inp)
        return call, xc, [f'channels_last, torch.autocast({dev!r}, bfloat16)'], None
    if name == 'compile-max-autotune':
        set_tf32(*DEFAULT_TF32)
        with torch.no_grad():
            folded, units = fold_batch_norm(copy.deepcopy(trunk))
        torch._dynamo.reset()  # a fresh compile per batch size, not a dynamic-shape one
        compiled = torch.compile(folded, mode='max-autotune', dynamic=False)
        t0 = time.perf_counter()
        with torch.inference_mode():  # as it is timed, so the guards hold and nothing recompiles
            compiled(x)
        if dev == 'cuda':
            torch.cuda.synchronize()
        compile_s = time.perf_counter() - t0
        hook = getattr(torch.compiler, 'cudagraph_mark_step_begin', None)
        return compiled, x, [f'{units} batch norms folded into convs, NCHW fp32',
                             tf32_note(), f'compile (first call) {compile_s:.1f} s'], \
            (hook, compile_s)
    raise ValueError(name)


def run_variant(name, trunk, x, args, workdir):
    built = build_variant(name, trunk, x, args, workdir)
    fn, xin, notes, extra = built
    hook, compile_s = extra if extra else (None, None)
    with torch.inference_mode():
        for _ in range(args.warmup):
            if hook:
                hook()
            fn(xin)
        if args.device == 'cuda':
            torch.cuda.synchronize()
        t, f = time_calls(fn, xin, args, hook)
    return t, f, notes, compile_s


# ---------------------------------------------------------------------------------------------

def git_commit():
    try:
        return subprocess.run(['git', '-C', REPO, 'rev-parse', '--short', 'HEAD'],
                              capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ''


def error_line(e):
    """What a traceback's last line says (type: message), for the exception at the root of the
    chain: torch.compile wraps what went wrong (a timeout included) in BackendCompilerFailed and
    appends advice about logging to messages, so the root's first line is the one that says."""
    seen = {id(e)}
    while True:
        inner = getattr(e, 'inner_exception', None) or e.__cause__
        if inner is None or id(inner) in seen:
            break
        seen.add(id(inner))
        e = inner
    lines = [ln for ln in str(e).splitlines() if ln.strip()]
    return f'{type(e).__name__}: {lines[0] if lines else ""}'


def main(argv=None):
    args = parse_args(argv)
    dev = torch.device(args.device)
    if args.device == 'cpu':
        torch.set_num_threads(cpu_threads())  # graft's and onnxruntime's count
    model, meta = lite.load(args.model, with_classifier=False)
    trunk = Trunk(model).to(dev).eval().requires_grad_(False)  # frozen, as graft's is
    # Fixed shapes: let cuDNN time its algorithms on the first call (a warm-up call) and keep the
    # fastest, as PyTorch's performance advice and bench/pytorch_baseline.py do.
    torch.backends.cudnn.benchmark = True
    ref_trunk = copy.deepcopy(trunk).double()
    doc = {
        'what': 'whole frozen trunk (EfficientNet-Lite0 features), input already on the device',
        'device': args.device,
        'device_name': (torch.cuda.get_device_name(dev) if args.device == 'cuda'
                        else f'cpu ({torch.get_num_threads()} torch threads)'),
        'torch': torch.__version__,
        'cudnn': torch.backends.cudnn.version() if args.device == 'cuda' else None,
        'onnxruntime': package_version('onnxruntime') if 'onnxruntime' in args.variants else None,
        'cpu_threads': cpu_threads() if args.device == 'cpu' else None,
        'model': args.model,
        'date': datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%d %H:%M UTC'),
        'git': git_commit(),
        'iters': args.iters, 'repeats': args.repeats, 'warmup': args.warmup,
        'input': f'uniform random pixels 0..255 normalised by the file mean/std, seed {args.seed}',
        'reference': 'the same PyTorch model in float64 on the same device',
        'cudnn_benchmark': torch.backends.cudnn.benchmark,
        'rows': [],
    }
    graft_failed = False
    with tempfile.TemporaryDirectory(prefix='trunk_vs_torch_') as workdir:
        # Per batch: the input (a file for graft, a tensor for PyTorch) and the float64 features.
        batches = {}
        for n in args.batches:
            x_nhwc = make_input(meta, n, args.seed)
            input_path = os.path.join(workdir, f'input_{n}.f32')
            x_nhwc.astype('<f4').tofile(input_path)
            x = torch.from_numpy(x_nhwc).permute(0, 3, 1, 2).contiguous().to(dev)
            with torch.inference_mode():
                ref = ref_trunk(x.double())
            batches[n] = (input_path, x_nhwc.shape[1], x, ref)
        # The compiled rows, the slow ones to prepare, come after every other row of every batch,
        # so a run stopped at a time limit has the rest.
        graft_rows = ['graft'] + (['graft-graph'] if args.device == 'cuda' else [])
        quick = [v for v in args.variants if v != 'compile-max-autotune']
        plan = [(n, impl) for n in args.batches for impl in graft_rows + quick]
        plan += [(n, v) for n in args.batches for v in args.variants if v not in quick]
        # Every planned row is in the JSON from the start, so one never reached (the run was
        # stopped from outside) reads "not run" rather than being absent.
        doc['rows'] = [{'batch': n, 'impl': impl, 'status': 'not run'} for n, impl in plan]
        yardstick.write_json(args.json, doc)
        graft_ips = {}
        for i, (n, impl) in enumerate(plan):
            input_path, size, x, ref = batches[n]
            row = {'batch': n, 'impl': impl, 'status': 'ok'}
            yardstick.arm(args.seconds_per_variant)
            try:
                if impl.startswith('graft'):
                    t, f, notes = run_graft(args, input_path, n, size, ref,
                                            impl == 'graft-graph', workdir)
                    compile_s = None
                else:
                    t, f, notes, compile_s = run_variant(impl, trunk, x, args, workdir)
                yardstick.disarm()
                rel, absd = diffs(f, ref)
                ips = n / (t['ms'] / 1000)
                if impl == 'graft':
                    graft_ips[n] = ips
                note = host_bound_note(t) if args.device == 'cuda' else ''
                row.update({
                    'images_per_s': ips, 'ms_per_batch': t['ms'],
                    'ms_per_batch_min': t['ms_min'], 'ms_per_batch_all': t['ms_all'],
                    'host_ms_per_batch': t['host_ms'],
                    'ratio': graft_ips[n] / ips if n in graft_ips else None,
                    'max_rel_diff': rel, 'max_abs_diff': absd,
                    'notes': '; '.join(notes + ([note] if note else []))})
                if compile_s is not None:
                    row['compile_s'] = compile_s
            except Exception as e:  # noqa: BLE001 - any failure is a row, never a crash
                yardstick.disarm()
                if impl == 'graft':
                    graft_failed = True
                row.update({'status': 'failed', 'error': error_line(e)})
            finally:
                set_tf32(*DEFAULT_TF32)
                if args.device == 'cuda':
                    torch.cuda.empty_cache()
            doc['rows'][i] = row
            yardstick.write_json(args.json, doc)
            print_row(row)
    return 1 if graft_failed else 0


def print_row(r):
    if r['status'] != 'ok':
        print(f'batch {r["batch"]:4d}  {r["impl"]:22s}  FAILED  {r["error"]}', flush=True)
        return
    ratio = f'{r["ratio"]:.2f}' if r['ratio'] else '  - '
    print(f'batch {r["batch"]:4d}  {r["impl"]:22s}  {r["images_per_s"]:10.1f} img/s  '
          f'{r["ms_per_batch"]:9.3f} ms  ratio {ratio}  max rel diff {r["max_rel_diff"]:.2e}  '
          f'{r["notes"]}', flush=True)


if __name__ == '__main__':
    sys.exit(main())
