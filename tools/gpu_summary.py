#!/usr/bin/env python3
"""Reads the logs tools/gpu-check.sh leaves in its work folder and prints summary.json:
device, date, git commit, command, test counts, sanitizer errors, the kernel yardstick rows, and
the fish training runs (GPU, CPU, PyTorch). Standard library only."""
import argparse
import datetime
import json
import os
import re


def read(path):
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read()
    except OSError:
        return ""


def ctest_counts(log):
    """ctest's closing lines: 'N% tests passed, F tests failed out of T' and the skipped list."""
    # Newer ctest drops the ", 0 tests failed" part when nothing failed.
    m = re.search(r"(\d+)% tests passed(?:, (\d+) tests? failed)? out of (\d+)", log)
    if not m:
        return {"passed": 0, "failed": None, "skipped": None, "total": 0, "parsed": False}
    failed, total = int(m.group(2) or 0), int(m.group(3))
    skipped = len(re.findall(r"\*\*\*Skipped|\bSkipped\b\s+[\d.]+ sec", log))
    return {"passed": total - failed - skipped, "failed": failed, "skipped": skipped,
            "total": total, "parsed": True}


def sanitizer_errors(log):
    log = log.split("### racecheck", 1)[0]  # memcheck's part; racecheck is counted on its own
    counts = [int(n) for n in re.findall(r"ERROR SUMMARY: (\d+) error", log)]
    runs = len(re.findall(r"^### exit", log, re.M))
    # A run that never printed its summary (crash, timeout) is not a clean run.
    return sum(counts) if len(counts) == runs and runs > 0 else None


def racecheck_errors(log):
    """Racecheck's error count summed over its runs; None unless every run printed its summary."""
    counts = [int(n) for n in
              re.findall(r"RACECHECK SUMMARY: \d+ hazards? displayed \((\d+) errors?", log)]
    runs = len(re.findall(r"^### racecheck exit", log, re.M))
    return sum(counts) if len(counts) == runs and runs > 0 else None


def train_run(work, dev):
    info = json.loads(read(os.path.join(work, f"train-{dev}.json")) or "{}")
    log = read(os.path.join(work, f"train-{dev}.log"))
    test = None
    for line in log.splitlines():
        if line.startswith("{") and '"split":"test"' in line.replace(" ", ""):
            test = json.loads(line)
    metrics = []
    for line in read(os.path.join(work, f"run-{dev}", "metrics.jsonl")).splitlines():
        row = json.loads(line)
        if "epoch" in row:
            metrics.append(row)
    return {
        "rc": info.get("rc"),
        "seconds": info.get("seconds"),
        "test_accuracy": test and test["accuracy"],
        "test_loss": test and test["loss"],
        "first_epoch_images_per_second": metrics[0]["images_per_second"] if metrics else None,
        "final_val_accuracy": metrics[-1]["val_accuracy"] if metrics else None,
        "epochs": len(metrics),
        "metrics": metrics,
    }


def max_metric_diff(a, b):
    """Largest difference between two runs' per-epoch loss/accuracy values."""
    worst = 0.0
    for ra, rb in zip(a, b):
        for k in ("loss", "accuracy", "val_loss", "val_accuracy"):
            if ra.get(k) is not None and rb.get(k) is not None:
                worst = max(worst, abs(ra[k] - rb[k]))
    return worst if a and b and len(a) == len(b) else None


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("work")
    ap.add_argument("--command", default="tools/gpu-check.sh OUT_DIR")
    ap.add_argument("--build", default="build-gpu")
    args = ap.parse_args()
    w = args.work
    smi = read(os.path.join(w, "nvidia-smi.txt")).splitlines()
    device = smi[1].split(",")[0].strip() if len(smi) > 1 else "unknown"
    commit = read(".gpudeps/commit").strip() or None
    kernels = json.loads(read(os.path.join(w, "kernels.json")) or "null")
    gpu, cpu = train_run(w, "cuda"), train_run(w, "cpu")
    torch = json.loads(read(os.path.join(w, "torch.json")) or "null")
    summary = {
        "device": device,
        "nvidia_smi": smi,
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "git": commit,
        "command": args.command,
        "build_ok": os.path.exists(os.path.join(args.build, "graft")),
        "tests": ctest_counts(read(os.path.join(w, "tests.log"))),
        "sanitizer_errors": sanitizer_errors(read(os.path.join(w, "sanitizer.log"))),
        "racecheck_errors": racecheck_errors(read(os.path.join(w, "sanitizer.log"))),
        "kernels": kernels,
        "stages": json.loads(read(os.path.join(w, "stages.json")) or "null"),
        "train": {
            "data": "../shared/data/fish (93 photos, 3 species), 20 epochs, seed 42",
            "gpu": gpu,
            "cpu": cpu,
            "gpu_vs_cpu_max_metric_diff": max_metric_diff(gpu["metrics"], cpu["metrics"]),
            "pytorch": torch and {k: torch.get(k) for k in
                                  ("device", "mode", "test", "seconds_total",
                                   "first_epoch_images_per_second")},
            "test_accuracy": gpu["test_accuracy"],
            "seconds": gpu["seconds"],
        },
    }
    ft_gpu, ft_cpu = train_run(w, "ft-cuda"), train_run(w, "ft-cpu")
    summary["fine_tune"] = {
        "data": "the same photos, 4 epochs, --fine-tune 2 --freeze-epochs 1",
        "gpu": ft_gpu,
        "cpu": ft_cpu,
        "gpu_vs_cpu_max_metric_diff": max_metric_diff(ft_gpu["metrics"], ft_cpu["metrics"]),
        "stages": {ft: json.loads(read(os.path.join(w, f"stages-ft{ft}.json")) or "null")
                   for ft in ("2", "all")},
    }
    for run in (gpu, cpu, ft_gpu, ft_cpu):
        run.pop("metrics")
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
