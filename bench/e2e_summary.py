#!/usr/bin/env python3
"""Reads what bench/e2e.sh leaves in OUT_DIR and prints e2e.json: graft's whole job and first
epoch against the best of PyTorch's runs (cached mode; standard mode with PIL, PIL's reduced-size
decode and decoding on the GPU), each as a ratio against its target and naming the PyTorch run
it is measured against; GPU idle time on a run where decoding is not the limit; every PyTorch
run's row with its status; decode images/s per core of graft's loader and of PIL; device, date,
commit and command. A step that failed, timed out, was skipped or never ran gives a row that
says so and nulls, never an exception. Standard library only.

    python3 bench/e2e_summary.py OUT_DIR [--epochs 20] > OUT_DIR/e2e.json

Logs written by e2e.sh carry the arrival time of each line (epoch seconds) before the line: the
wall time of an epoch is the gap between two epoch lines. That is how a PyTorch run cut short
(--torch-epochs, --torch-seconds) is extrapolated to the full number of epochs.
"""
import argparse
import datetime
import json
import os
import re
import statistics
import subprocess

# graft against the best PyTorch run: the whole 20-epoch job and the first epoch (the loader),
# each at least 2x; decode per core at least 2x PIL as torchvision uses it; the GPU idle under
# 10% of the time when decoding is not the limit.
TARGETS = {'whole_job': 2.0, 'first_epoch': 2.0, 'decode_per_core': 2.0, 'gpu_idle': 0.10}
# The PyTorch runs e2e.sh makes: file stem -> (mode, decode).
TORCH_RUNS = {'torch_cached': ('cached', 'pil'), 'torch_gpu': ('standard', 'gpu'),
              'torch_pil_draft': ('standard', 'pil-draft'), 'torch_pil': ('standard', 'pil')}
EPOCH_LINE = re.compile(r'epoch (\d+)/(\d+)\s+loss .*?\s([\d.]+)s\s+(\d+) img/s')
SPLIT_LINE = re.compile(r'(\d+) classes, (\d+) train / (\d+) val / (\d+) test images')
HEADER_LINE = re.compile(r'^pytorch_baseline: ')  # printed once set-up is done, before epoch 1
STAMP = re.compile(r'(\d{9,}\.\d+) ')  # seconds since 1970, as bash's $EPOCHREALTIME
PIL_LINE = re.compile(r'(\S+):\s+(\d+) files\s+([\d.]+) images/s\s+([\d.]+) images/cpu_s')
TIMED_OUT = (124, 137)  # timeout(1)'s exit status, and SIGKILL after its grace period


def read(out, name):
    try:
        with open(os.path.join(out, name), encoding='utf-8', errors='replace') as f:
            return f.read()
    except OSError:
        return ''


def read_json(out, name):
    try:
        return json.loads(read(out, name) or 'null')
    except ValueError:
        return None


def stamped(text):
    """(time, line) for each line of a log written through e2e.sh's `stamp`."""
    rows = []
    for line in text.splitlines():
        m = STAMP.match(line)
        rows.append((float(m.group(1)), line[m.end():]) if m else (None, line))
    return rows


def epochs_from_log(rows):
    """Per epoch line: epoch, of, arrival time, training seconds, images/s (as printed)."""
    out = []
    for t, line in rows:
        m = EPOCH_LINE.search(line)
        if m:
            out.append({'epoch': int(m.group(1)), 'of': int(m.group(2)), 'time': t,
                        'train_seconds': float(m.group(3)), 'images_per_second': float(m.group(4))})
    return out


def split_counts(rows):
    for _, line in rows:
        m = SPLIT_LINE.search(line)
        if m:
            return {'classes': int(m.group(1)), 'train': int(m.group(2)), 'val': int(m.group(3)),
                    'test': int(m.group(4))}
    return None


def seconds(timing):
    return round(timing['end'] - timing['start'], 2) if timing else None


def last_words(rows):
    """The last non-empty line of a log: what a failed step said last."""
    return next((line.strip() for _, line in reversed(rows) if line.strip()), None)


def gpu_busy(out, name, start=None, end=None):
    """Mean of nvidia-smi's utilization.gpu samples (percent of time a kernel ran), optionally
    within [start, end] (epoch seconds). None without samples."""
    values = []
    for line in read(out, f'gpu_util_{name}.csv').splitlines():
        try:
            stamp, util = [s.strip() for s in line.split(',')]
            t = datetime.datetime.strptime(stamp, '%Y/%m/%d %H:%M:%S.%f').timestamp()
            u = float(util)
        except ValueError:
            continue
        if (start is None or t >= start) and (end is None or t <= end):
            values.append(u)
    return round(statistics.mean(values), 1) if values else None


def json_lines(text):
    rows = []
    for line in text.splitlines():
        try:
            rows.append(json.loads(line))
        except ValueError:
            continue
    return rows


def graft_run(out, epochs_wanted):
    timing = read_json(out, 'graft_train.time.json')
    rows = stamped(read(out, 'graft_train.log'))
    metrics = [r for r in json_lines(read(out, 'graft_metrics.jsonl')) if 'epoch' in r]
    test = next((r for r in json_lines(read(out, 'graft_metrics.jsonl'))
                 if r.get('split') == 'test'), None)
    log_epochs = [(t, line) for t, line in rows if line.startswith('epoch ')]
    cache = next((line.split('feature cache ', 1)[1] for _, line in rows if 'feature cache ' in line),
                 None)
    # Epochs read from the feature cache decode no image: their images_per_second is null.
    later = [m['images_per_second'] for m in metrics[1:] if m.get('images_per_second') is not None]
    stages = json_lines(read(out, 'graft_stages.jsonl'))  # CUDA-event stage timing per epoch
    if not timing:
        status, reason = 'missing', 'did not run'
    elif timing['rc'] in TIMED_OUT:
        status, reason = 'timed out', f'stopped at {timing.get("limit_s")} s'
    elif timing['rc'] != 0:
        status, reason = 'failed', last_words(rows)
    elif len(metrics) < epochs_wanted:
        status, reason = 'failed', f'{len(metrics)} of {epochs_wanted} epochs in metrics.jsonl'
    else:
        status, reason = 'ok', None
    return {
        'status': status,
        'reason': reason,
        'rc': timing and timing['rc'],
        'seconds': seconds(timing),
        'epochs': len(metrics),
        'split': split_counts(rows),
        'feature_cache': cache,
        'first_epoch_images_per_second': metrics[0].get('images_per_second') if metrics else None,
        'first_epoch_seconds': metrics[0].get('seconds') if metrics else None,
        'later_epochs_median_images_per_second': statistics.median(later) if later else None,
        'first_epoch_stages': stages[0] if stages else None,
        'test_accuracy': test and test.get('accuracy'),
        # From the start of the process to the first epoch line: startup and epoch 1.
        'gpu_busy_percent_first_epoch': gpu_busy(out, 'graft', timing and timing['start'],
                                                 log_epochs[0][0] if log_epochs else None),
        'gpu_busy_percent_whole_job': gpu_busy(out, 'graft'),
        'log_tail': [line for _, line in rows[-3:]],
    }


def idle_run(out):
    """GPU idle time where decoding is not the limit: `graft bench` on small photos, cache off.
    device_idle_fraction per epoch is 1 - (backbone + head + optimiser) / wall, from CUDA events;
    epoch 1 also holds the start of the loader and the first launches, so the figure is the
    median of the later epochs."""
    timing = read_json(out, 'graft_idle.time.json')
    bench = read_json(out, 'graft_idle.json')
    rows = stamped(read(out, 'graft_idle.log'))
    epochs = (bench or {}).get('epochs') or []
    run = {'status': 'missing', 'reason': 'did not run', 'rc': timing and timing['rc'],
           'seconds': seconds(timing), 'data': first_line(read(out, 'idle_dataset.log'),
                                                          'make_e2e_dataset:'),
           'epochs': [{k: e.get(k) for k in ('epoch', 'images', 'seconds', 'images_per_second',
                                             'wait_for_batch', 'device_idle_fraction',
                                             'bottleneck')} for e in epochs],
           'gpu_idle_fraction': None, 'decode_was_the_limit': None,
           'gpu_busy_percent': gpu_busy(out, 'graft_idle'), 'log_tail': [l for _, l in rows[-3:]]}
    if timing:
        if timing['rc'] in TIMED_OUT:
            run['status'], run['reason'] = 'timed out', f'stopped at {timing.get("limit_s")} s'
        elif timing['rc'] != 0 or not epochs:
            run['status'], run['reason'] = 'failed', last_words(rows)
        else:
            run['status'], run['reason'] = 'ok', None
    steady = epochs[1:] or epochs
    fractions = [e['device_idle_fraction'] for e in steady
                 if e.get('device_idle_fraction') is not None]
    if fractions:
        run['gpu_idle_fraction'] = round(statistics.median(fractions), 4)
        run['decode_was_the_limit'] = any(e.get('bottleneck') == 'decode' for e in steady)
    return run


def torch_run(out, name, epochs_wanted):
    """One PyTorch run's row. Its whole-job seconds are measured when it ran all epochs, else
    extrapolated from the epoch lines it printed: each later epoch costs what its measured epochs
    2.. cost (train plus validation), and the closing test pass what one validation pass costs
    (in cached mode the first one, which extracts the features; later ones read the cache)."""
    mode, decode = TORCH_RUNS[name]
    timing = read_json(out, f'{name}.time.json')
    result = read_json(out, f'{name}.json')
    rows = stamped(read(out, f'{name}.log'))
    ep = epochs_from_log(rows)
    split = split_counts(rows)
    skipped = read(out, f'{name}.skip').strip()
    timed_out = bool(timing and timing['rc'] in TIMED_OUT)
    run = {'mode': mode, 'decode': decode, 'status': None, 'reason': None,
           'rc': timing and timing['rc'], 'wall_seconds': seconds(timing),
           'limit_seconds': timing and timing.get('limit_s'), 'timed_out': timed_out,
           'epochs_done': len(ep), 'epochs_wanted': epochs_wanted, 'split': split,
           'device': result and result.get('device'), 'torch': result and result.get('torch'),
           'workers': result and (result.get('config') or {}).get('workers'),
           'test_accuracy': result and (result.get('test') or {}).get('accuracy'),
           'first_epoch_images_per_second': None, 'seconds': None, 'seconds_estimated': None,
           'estimate': None, 'epoch_wall_seconds': [], 'gpu_busy_percent': gpu_busy(out, name),
           'log_tail': [line for _, line in rows[-3:]]}
    if skipped:
        run['status'], run['reason'] = 'skipped', skipped
        return run
    if not timing:
        run['status'], run['reason'] = 'missing', 'did not run (e2e.sh stopped before it?)'
        return run
    if not ep or ep[0]['time'] is None:
        run['status'] = 'timed out' if timed_out else 'failed'
        run['reason'] = (f'stopped at {timing.get("limit_s")} s before its first epoch ended'
                         if timed_out else last_words(rows) or f'exit status {timing["rc"]}')
        return run
    run['first_epoch_images_per_second'] = ((result or {}).get('first_epoch_images_per_second')
                                            or ep[0]['images_per_second'])
    walls = [b['time'] - a['time'] for a, b in zip(ep, ep[1:])]  # epochs 2..K: train + val
    run['epoch_wall_seconds'] = [round(ep[0]['time'] - timing['start'], 2)] + [round(w, 2) for w in walls]
    k = len(ep)
    finished = timing['rc'] == 0 and result is not None
    if finished and k >= epochs_wanted:
        run['status'] = 'ok'
        run['seconds'], run['seconds_estimated'] = seconds(timing), False
        run['estimate'] = 'measured: all epochs ran'
        return run
    if not finished and not timed_out:
        # It stopped on its own without finishing: no estimate of a run that broke.
        run['status'], run['reason'] = 'failed', last_words(rows) or f'exit status {timing["rc"]}'
        return run
    n_train = split['train'] if split else None
    n_val = split['val'] if split else 0
    n_test = split['test'] if split else 0
    header = next((t for t, line in rows if HEADER_LINE.search(line)), None)
    # Epoch 1's validation pass: its wall time from the header line (set-up done) minus training.
    first_val = (ep[0]['time'] - header - ep[0]['train_seconds']) if header else None
    if walls:
        per_epoch = statistics.mean(walls)
        val_pass = max(0.0, statistics.mean(w - e['train_seconds'] for w, e in zip(walls, ep[1:])))
        how = f'mean wall time of epochs 2..{k} ({per_epoch:.1f} s)'
    elif n_train:
        # One epoch only: its training seconds, scaled up for the validation images.
        per_epoch = ep[0]['train_seconds'] * (n_train + n_val) / n_train
        val_pass = ep[0]['train_seconds'] * n_val / n_train
        how = f'epoch 1 training time scaled by (train + val) / train images ({per_epoch:.1f} s)'
    else:
        run['status'], run['reason'] = 'failed', 'no split line in its log: nothing to extrapolate'
        return run
    if mode == 'cached' and first_val is not None:
        val_pass = max(0.0, first_val)  # the test pass extracts its features as val's first did
    if finished:
        tail = timing['end'] - ep[-1]['time']  # the test pass and exit, measured
        tail_how = 'the measured test pass'
    else:
        tail = val_pass * (n_test / n_val if n_val else 1.0)
        tail_how = f'a test pass estimated from the validation passes ({tail:.1f} s)'
    total = (ep[-1]['time'] - timing['start']) + (epochs_wanted - k) * per_epoch + tail
    stop = (f'timed out at {timing.get("limit_s")} s' if timed_out else '--torch-epochs')
    run['status'], run['reason'] = 'extrapolated', f'{k} of {epochs_wanted} epochs ran ({stop})'
    run['seconds'], run['seconds_estimated'] = round(total, 2), True
    run['estimate'] = (f'EXTRAPOLATED: {k} of {epochs_wanted} epochs ran ({stop}); measured time '
                       f'to epoch {k}, plus {epochs_wanted - k} x the {how}, plus {tail_how}')
    return run


def decode(out):
    """images/s per core of graft's loader (bench_loader, one decode thread) and of PIL
    (pil_decode.py, one process), per photo set of the same sample."""
    graft = {}
    for b in (read_json(out, 'bench_loader.json') or {}).get('benchmarks', []):
        parts = b.get('name', '').split('/')
        threads = next((int(p.split(':')[1]) for p in parts if p.startswith('threads:')), None)
        if len(parts) < 2 or threads is None or b.get('error_occurred'):
            continue
        graft.setdefault(parts[1], {})[f'threads_{threads}'] = {
            'images_per_second_per_core': round(b['images/s/core'], 1),
            'images_per_cpu_second': round(b['images/cpu_s'], 1), 'files': int(b['files'])}
    pil = {}
    for _, line in stamped(read(out, 'pil_decode.log')):
        m = PIL_LINE.search(line)
        if m:
            pil[m.group(1)] = {'files': int(m.group(2)),
                               'images_per_second_per_core': float(m.group(3)),
                               'images_per_cpu_second': float(m.group(4))}
    header = next((line for _, line in stamped(read(out, 'pil_decode.log')) if line.startswith('PIL')),
                  None)
    ratio = {}
    for name, p in pil.items():
        g = graft.get(name, {}).get('threads_1')
        if g and p['images_per_second_per_core']:
            ratio[name] = round(g['images_per_second_per_core'] / p['images_per_second_per_core'], 2)
    return {'graft_bench_loader': graft, 'pil': pil, 'pil_setup': header,
            'ratio_per_core': ratio, 'sample': first_line(read(out, 'steps.log'), 'decode sample')}


def first_line(text, needle):
    """The first line containing needle, without e2e.sh's timestamp if it has one."""
    return next((line for _, line in stamped(text) if needle in line), None)


def ratio(a, b):
    return round(a / b, 2) if a and b else None


def best(runs, key, lowest):
    """(name, value) of the run with the lowest (or highest) non-null `key`, else (None, None)."""
    have = [(name, r[key]) for name, r in runs.items() if r.get(key)]
    if not have:
        return None, None
    return (min if lowest else max)(have, key=lambda nv: nv[1])


def describe(name, run):
    return f"{name} (--mode {run['mode']} --decode {run['decode']})"


def headline_of(graft, torch, idle, dec):
    whole_name, whole = best(torch, 'seconds', lowest=True)
    first_name, first = best(torch, 'first_epoch_images_per_second', lowest=False)
    cached = torch['torch_cached']
    head = {
        'graft_status': graft['status'],
        'graft_total_seconds': graft['seconds'] if graft['status'] == 'ok' else None,
        'best_torch_whole_job': whole_name and describe(whole_name, torch[whole_name]),
        'best_torch_total_seconds': whole,
        'best_torch_total_is_extrapolated': whole_name and torch[whole_name]['seconds_estimated'],
        'torch_cached_total_seconds': cached['seconds'],
        'graft_first_epoch_images_per_second': graft['first_epoch_images_per_second'],
        'best_torch_first_epoch': first_name and describe(first_name, torch[first_name]),
        'best_torch_first_epoch_images_per_second': first,
        'gpu_idle_fraction': idle['gpu_idle_fraction'],
        'gpu_idle_run': 'graft bench, feature cache off, on small photos (median of epochs 2..)',
        'graft_decode_images_per_second_per_core':
            dec['graft_bench_loader'].get('mixed', {}).get('threads_1', {}).get(
                'images_per_second_per_core'),
        'pil_decode_images_per_second_per_core':
            dec['pil'].get('mixed', {}).get('images_per_second_per_core'),
        'decode_per_core_ratio': dec['ratio_per_core'].get('mixed'),
        'torch_runs': {name: r['status'] + (f" ({r['reason']})" if r['reason'] else '')
                       for name, r in torch.items()},
    }
    head['whole_job_ratio'] = ratio(whole, head['graft_total_seconds'])
    head['whole_job_ratio_vs_cached'] = ratio(cached['seconds'], head['graft_total_seconds'])
    head['first_epoch_ratio'] = ratio(graft['first_epoch_images_per_second'], first)
    return head


def targets_of(head):
    def at_least(value, target):
        return None if value is None else value >= target

    return {
        f"whole_job >= {TARGETS['whole_job']:g}x the best PyTorch run":
            at_least(head['whole_job_ratio'], TARGETS['whole_job']),
        f"first_epoch >= {TARGETS['first_epoch']:g}x the best PyTorch loader":
            at_least(head['first_epoch_ratio'], TARGETS['first_epoch']),
        f"decode_per_core >= {TARGETS['decode_per_core']:g}x PIL":
            at_least(head['decode_per_core_ratio'], TARGETS['decode_per_core']),
        f"gpu_idle < {TARGETS['gpu_idle']:.0%} where decoding is not the limit":
            None if head['gpu_idle_fraction'] is None
            else head['gpu_idle_fraction'] < TARGETS['gpu_idle'],
    }


def commit():
    c = read('.', '.gpudeps/commit').strip()
    if c:
        return c
    try:
        return subprocess.run(['git', 'rev-parse', 'HEAD'], capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def summarize(out, epochs):
    smi = read(out, 'nvidia-smi.txt').splitlines()
    device = smi[1].split(',')[0].strip() if len(smi) > 1 and ',' in smi[1] else None
    graft = graft_run(out, epochs)
    torch = {name: torch_run(out, name, epochs) for name in TORCH_RUNS}
    idle = idle_run(out)
    dec = decode(out)
    gen = read_json(out, 'dataset.time.json')
    head = headline_of(graft, torch, idle, dec)
    return {
        'headline': head,
        'targets': {k: v for k, v in TARGETS.items()},
        'targets_met': targets_of(head),
        'device': device,
        'nvidia_smi': smi,
        'cpu': read(out, 'cpu.txt').strip().splitlines(),
        'versions (torch, torchvision, PIL)': read(out, 'versions.txt').strip(),
        'date': datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%d %H:%M UTC'),
        'git': commit(),
        'command': read(out, 'command.txt').strip(),
        'data': {'folder': first_line(read(out, 'steps.log'), ' files, '),
                 'generated': first_line(read(out, 'dataset.log'), 'make_e2e_dataset:'),
                 'generation_seconds': seconds(gen)},
        'graft': graft,
        'gpu_idle': idle,
        'torch': torch,
        'decode': dec,
    }


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('out')
    ap.add_argument('--epochs', type=int, default=20, help='epochs of the job being compared')
    args = ap.parse_args()
    print(json.dumps(summarize(args.out, args.epochs), indent=1))


if __name__ == '__main__':
    main()
