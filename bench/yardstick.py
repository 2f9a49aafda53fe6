"""What the PyTorch yardsticks (trunk_vs_torch.py, step_vs_torch.py) share: running one of graft's
benchmark programs and reading its JSON line, a per-row time limit, timing back-to-back calls
between CUDA events, and a JSON file rewritten after every row."""

import json
import os
import signal
import statistics
import subprocess
import time

import torch


class Timeout(Exception):
    pass


def _alarm(signum, frame):
    raise Timeout('ran past its time limit')


def arm(seconds):
    """Raises Timeout in this thread after `seconds`, until disarm()."""
    signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(int(seconds) + 1)


def disarm():
    signal.alarm(0)


def run_program(exe, args, seconds):
    """graft's benchmark program `exe` with `args`: its last JSON line as a dict. A program that
    is not built, fails (its last line of output is the error) or outlasts `seconds` raises."""
    if not os.path.isfile(exe):
        name = os.path.basename(exe)
        raise RuntimeError(f'{exe}: not built (cmake --build BUILD --target {name})')
    try:
        p = subprocess.run([exe, *args], capture_output=True, text=True, timeout=seconds)
    except subprocess.TimeoutExpired:
        raise Timeout('ran past its time limit')
    if p.returncode != 0:
        lines = [ln for ln in (p.stderr + p.stdout).splitlines() if ln.strip()]
        raise RuntimeError(lines[-1] if lines else f'{os.path.basename(exe)} exited {p.returncode}')
    return json.loads([ln for ln in p.stdout.splitlines() if ln.startswith('{')][-1])


def time_calls(call, cuda, iters, repeats):
    """`repeats` runs of `iters` back-to-back calls, between two CUDA events on the current stream
    (the host clock on the CPU): median and fastest ms per call, all of them, and the host's
    median time to issue one call."""
    ms, host = [], []
    for _ in range(repeats):
        if cuda:
            start = torch.cuda.Event(enable_timing=True)
            stop = torch.cuda.Event(enable_timing=True)
            t0 = time.perf_counter()
            start.record()
            for _ in range(iters):
                call()
            stop.record()
            t1 = time.perf_counter()
            stop.synchronize()
            ms.append(start.elapsed_time(stop) / iters)
            host.append((t1 - t0) * 1000 / iters)
        else:
            t0 = time.perf_counter()
            for _ in range(iters):
                call()
            ms.append((time.perf_counter() - t0) * 1000 / iters)
            host.append(ms[-1])
    return {'ms': statistics.median(ms), 'ms_min': min(ms), 'host_ms': statistics.median(host),
            'ms_all': ms}


def write_json(path, doc):
    """Replaces `path` atomically, so a run stopped at any moment leaves a readable file."""
    tmp = path + '.tmp'
    with open(tmp, 'w') as f:
        json.dump(doc, f, indent=1)
        f.write('\n')
    os.replace(tmp, path)
