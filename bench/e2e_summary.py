#!/usr/bin/env python3
"""Reads what bench/e2e.sh leaves in OUT_DIR and prints e2e.json: graft's and PyTorch's whole-job
seconds and first-epoch images/s on the same photos, decode images/s per core of graft's loader
and of PIL as torchvision uses it, the ratios against the targets, device, date, commit and
command. A step that failed or never ran gives nulls, never an exception. Standard library only.

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

TARGETS = {'first_epoch': 2.0, 'whole_job': 10.0, 'decode_per_core': 2.0}
EPOCH_LINE = re.compile(r'epoch (\d+)/(\d+)\s+loss .*?\s([\d.]+)s\s+(\d+) img/s')
SPLIT_LINE = re.compile(r'(\d+) classes, (\d+) train / (\d+) val / (\d+) test images')
STAMP = re.compile(r'(\d{9,}\.\d+) ')  # seconds since 1970, as bash's $EPOCHREALTIME
PIL_LINE = re.compile(r'(\S+):\s+(\d+) files\s+([\d.]+) images/s\s+([\d.]+) images/cpu_s')


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


def graft_run(out):
    timing = read_json(out, 'graft_train.time.json')
    rows = stamped(read(out, 'graft_train.log'))
    metrics, test = [], None
    for line in read(out, 'graft_metrics.jsonl').splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if 'epoch' in row:
            metrics.append(row)
        elif row.get('split') == 'test':
            test = row
    log_epochs = epochs_from_log(rows)
    cache = next((line.split('feature cache ', 1)[1] for _, line in rows if 'feature cache ' in line),
                 None)
    # Epochs read from the feature cache decode no image: their images_per_second is null.
    later = [m['images_per_second'] for m in metrics[1:] if m.get('images_per_second') is not None]
    # graft's own stage timing (RUN_DIR/stages.jsonl): device time from CUDA events.
    stages = []
    for line in read(out, 'graft_stages.jsonl').splitlines():
        try:
            stages.append(json.loads(line))
        except ValueError:
            continue
    return {
        'first_epoch_stages': stages[0] if stages else None,
        'first_epoch_gpu_idle_fraction': stages[0]['device_idle_fraction'] if stages else None,
        'rc': timing and timing['rc'],
        'seconds': seconds(timing),
        'epochs': len(metrics),
        'split': split_counts(rows),
        'feature_cache': cache,
        'first_epoch_images_per_second': metrics[0]['images_per_second'] if metrics else None,
        'first_epoch_seconds': metrics[0]['seconds'] if metrics else None,
        'later_epochs_median_images_per_second': statistics.median(later) if later else None,
        'test_accuracy': test and test['accuracy'],
        # From the start of the process to the first epoch line: startup and epoch 1.
        'gpu_busy_percent_first_epoch': gpu_busy(out, 'graft', timing and timing['start'],
                                                 log_epochs[0]['time'] if log_epochs else None),
        'gpu_busy_percent_whole_job': gpu_busy(out, 'graft'),
        'log_tail': [line for _, line in rows[-3:]],
    }


def torch_run(out, epochs_wanted):
    """PyTorch's whole-job seconds, measured when it ran all epochs, else extrapolated from the
    epoch lines it printed: each later epoch costs what its measured epochs 2.. cost (train plus
    validation), and the closing test pass what one validation pass costs."""
    timing = read_json(out, 'torch_e2e.time.json')
    result = read_json(out, 'torch_e2e.json')
    rows = stamped(read(out, 'torch_e2e.log'))
    ep = epochs_from_log(rows)
    split = split_counts(rows)
    run = {'rc': timing and timing['rc'], 'wall_seconds': seconds(timing),
           'timed_out': bool(timing and timing['rc'] in (124, 137)),
           'epochs_done': len(ep), 'epochs_wanted': epochs_wanted, 'split': split,
           'device': result and result.get('device'), 'torch': result and result.get('torch'),
           'workers': result and result['config'].get('workers'),
           'test_accuracy': result and result['test']['accuracy'],
           'first_epoch_images_per_second': None, 'seconds': None, 'seconds_estimated': None,
           'estimate': None, 'epoch_wall_seconds': [],
           'log_tail': [line for _, line in rows[-3:]]}
    if not timing or not ep or ep[0]['time'] is None:
        return run
    run['first_epoch_images_per_second'] = (result['first_epoch_images_per_second'] if result
                                            else ep[0]['images_per_second'])
    walls = [b['time'] - a['time'] for a, b in zip(ep, ep[1:])]  # epochs 2..K: train + val
    run['epoch_wall_seconds'] = [round(ep[0]['time'] - timing['start'], 2)] + [round(w, 2) for w in walls]
    k = len(ep)
    finished = timing['rc'] == 0 and result is not None
    if finished and k >= epochs_wanted:
        run['seconds'], run['seconds_estimated'] = seconds(timing), False
        run['estimate'] = 'measured: all epochs ran'
        run['gpu_busy_percent'] = gpu_busy(out, 'torch')
        return run
    n_train = split['train'] if split else None
    n_val = split['val'] if split else 0
    n_test = split['test'] if split else 0
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
        return run
    if finished:
        tail = timing['end'] - ep[-1]['time']  # the test pass and exit, measured
        tail_how = 'the measured test pass'
    else:
        tail = val_pass * (n_test / n_val if n_val else 1.0)
        tail_how = f'a test pass estimated from the validation passes ({tail:.1f} s)'
    total = (ep[-1]['time'] - timing['start']) + (epochs_wanted - k) * per_epoch + tail
    run['seconds'], run['seconds_estimated'] = round(total, 2), True
    run['estimate'] = (f'EXTRAPOLATED: {k} of {epochs_wanted} epochs ran '
                       f'({"stopped at --torch-seconds" if run["timed_out"] else "--torch-epochs"}); '
                       f'measured time to epoch {k}, plus {epochs_wanted - k} x the {how}, plus '
                       f'{tail_how}')
    run['gpu_busy_percent'] = gpu_busy(out, 'torch')
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


def commit():
    c = read('.', '.gpudeps/commit').strip()
    if c:
        return c
    try:
        return subprocess.run(['git', 'rev-parse', 'HEAD'], capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('out')
    ap.add_argument('--epochs', type=int, default=20, help='epochs of the job being compared')
    args = ap.parse_args()
    out = args.out
    smi = read(out, 'nvidia-smi.txt').splitlines()
    device = smi[1].split(',')[0].strip() if len(smi) > 1 and ',' in smi[1] else None
    graft, torch = graft_run(out), torch_run(out, args.epochs)
    dec = decode(out)
    gen = read_json(out, 'dataset.time.json')
    # A job that failed or was cut short has no whole-job time (PyTorch's is extrapolated instead).
    graft_total = graft['seconds'] if graft['rc'] == 0 and graft['epochs'] == args.epochs else None
    headline = {
        'graft_total_seconds': graft_total,
        'torch_total_seconds': torch['seconds'],
        'torch_total_is_extrapolated': torch['seconds_estimated'],
        'whole_job_ratio': ratio(torch['seconds'], graft_total),
        'graft_first_epoch_images_per_second': graft['first_epoch_images_per_second'],
        'torch_first_epoch_images_per_second': torch['first_epoch_images_per_second'],
        'first_epoch_ratio': ratio(graft['first_epoch_images_per_second'],
                                   torch['first_epoch_images_per_second']),
        'graft_decode_images_per_second_per_core':
            dec['graft_bench_loader'].get('mixed', {}).get('threads_1', {}).get(
                'images_per_second_per_core'),
        'pil_decode_images_per_second_per_core':
            dec['pil'].get('mixed', {}).get('images_per_second_per_core'),
        'decode_per_core_ratio': dec['ratio_per_core'].get('mixed'),
    }
    targets = {
        'first_epoch >= 2x': headline['first_epoch_ratio'] and
        headline['first_epoch_ratio'] >= TARGETS['first_epoch'],
        'whole_job >= 10x': headline['whole_job_ratio'] and
        headline['whole_job_ratio'] >= TARGETS['whole_job'],
        'decode_per_core >= 2x': headline['decode_per_core_ratio'] and
        headline['decode_per_core_ratio'] >= TARGETS['decode_per_core'],
        'gpu_idle < 10% (first epoch, graft)':
            graft['first_epoch_gpu_idle_fraction'] is not None and
            graft['first_epoch_gpu_idle_fraction'] < 0.10,
    }
    summary = {
        'headline': headline,
        'targets_met': targets,
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
        'torch': torch,
        'decode': dec,
    }
    print(json.dumps(summary, indent=1))


if __name__ == '__main__':
    main()
