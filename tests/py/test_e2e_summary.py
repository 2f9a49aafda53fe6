#!/usr/bin/env python3
"""bench/e2e_summary.py turns the logs of bench/e2e.sh into e2e.json, whose headline compares
graft with the best PyTorch run. A misread log would put a wrong ratio in that record, or drop
a run that failed, so it is checked here on synthetic logs shaped like e2e.sh's: every run fine,
one PyTorch run failed, one timed out and extrapolated, the GPU-decode run skipped, and no graft
run at all. Standard library only. Exit 0: pass, 1: fail."""
import json
import os
import sys
import tempfile

SRC = os.environ.get("GRAFT_SOURCE_DIR", os.path.join(os.path.dirname(__file__), "..", ".."))
sys.path.insert(0, os.path.join(SRC, "bench"))
import e2e_summary as e  # noqa: E402

failures = []
T = 1_800_000_000.0  # a start time, seconds since 1970
SPLIT = "3 classes, 80 train / 10 val / 10 test images"


def check(got, want, what):
    if got != want:
        failures.append(what)
        print(f"FAIL: {what}: got {got!r}, want {want!r}")


def write(out, name, text):
    with open(os.path.join(out, name), "w") as f:
        f.write(text)


def timing(out, name, rc, start, end, limit=60):
    write(out, f"{name}.time.json",
          json.dumps({"rc": rc, "start": start, "end": end, "limit_s": limit}))


def stamped(lines):
    """e2e.sh's `stamp`: each (time, line) as 'TIME line'."""
    return "".join(f"{t:.6f} {line}\n" for t, line in lines)


def graft_ok(out, seconds=5.0, first_ips=400.0):
    timing(out, "graft_train", 0, T, T + seconds, 240)
    write(out, "graft_train.log", stamped([(T + 0.5, f"graft train: {SPLIT}"),
                                           (T + 1.0, "feature cache on (frozen backbone)"),
                                           (T + 2.0, "epoch 1/20  loss 1.0  accuracy 0.5  "
                                                     "0.2s  400 img/s")]))
    rows = [{"epoch": 1, "images_per_second": first_ips, "seconds": 0.2}]
    rows += [{"epoch": i, "images_per_second": None, "seconds": 0.01} for i in range(2, 21)]
    rows.append({"split": "test", "accuracy": 0.9, "loss": 0.4})
    write(out, "graft_metrics.jsonl", "".join(json.dumps(r) + "\n" for r in rows))


def torch_log(start, epoch_times, of=20, train_seconds=4.0, ips=20.0, tail=()):
    lines = [(start + 2.0, f"pytorch_baseline: efficientnet_lite0 on NVIDIA H200, {SPLIT}")]
    for i, t in enumerate(epoch_times, 1):
        lines.append((t, f"epoch {i}/{of}  loss 1.0  accuracy 0.5  val_loss 1.0  "
                         f"val_accuracy 0.5  {train_seconds:.1f}s  {ips:.0f} img/s"))
    return stamped(list(lines) + list(tail))


def torch_finished(out, name, seconds, first_ips):
    """All 20 epochs, each 1 s apart, and the --json result."""
    epochs = [T + 3.0 + i for i in range(20)]
    timing(out, name, 0, T, T + seconds)
    write(out, f"{name}.log", torch_log(T, epochs, ips=first_ips))
    write(out, f"{name}.json", json.dumps({
        "device": "NVIDIA H200", "torch": "2.x", "config": {"workers": 16},
        "test": {"accuracy": 0.9}, "first_epoch_images_per_second": first_ips}))


def idle_ok(out):
    timing(out, "graft_idle", 0, T, T + 10, 90)
    write(out, "graft_idle.log", stamped([(T + 9, "bench: graft_idle.json")]))
    write(out, "graft_idle.json", json.dumps({"epochs": [
        {"epoch": 1, "device_idle_fraction": 0.30, "bottleneck": "backbone"},
        {"epoch": 2, "device_idle_fraction": 0.05, "bottleneck": "backbone"},
        {"epoch": 3, "device_idle_fraction": 0.07, "bottleneck": "backbone"},
        {"epoch": 4, "device_idle_fraction": 0.06, "bottleneck": "backbone"}]}))


def all_fine(out):
    graft_ok(out, seconds=5.0, first_ips=400.0)
    torch_finished(out, "torch_cached", 30.0, 100.0)
    torch_finished(out, "torch_gpu", 80.0, 150.0)
    torch_finished(out, "torch_pil_draft", 120.0, 120.0)
    torch_finished(out, "torch_pil", 300.0, 50.0)
    idle_ok(out)


def test_all_fine():
    with tempfile.TemporaryDirectory() as out:
        all_fine(out)
        s = e.summarize(out, 20)
        h = s["headline"]
        check({k: r["status"] for k, r in s["torch"].items()},
              {"torch_cached": "ok", "torch_gpu": "ok", "torch_pil_draft": "ok", "torch_pil": "ok"},
              "every PyTorch run fine")
        check(h["graft_total_seconds"], 5.0, "graft's whole job")
        check(h["best_torch_whole_job"], "torch_cached (--mode cached --decode pil)",
              "the fastest PyTorch job is named")
        check((h["best_torch_total_seconds"], h["whole_job_ratio"]), (30.0, 6.0),
              "whole job against the best PyTorch run")
        check(h["best_torch_total_is_extrapolated"], False, "a measured best is not extrapolated")
        check(h["best_torch_first_epoch"], "torch_gpu (--mode standard --decode gpu)",
              "the fastest PyTorch loader is named")
        check(h["first_epoch_ratio"], round(400 / 150, 2), "first epoch against the best loader")
        check(h["gpu_idle_fraction"], 0.06, "GPU idle: median of epochs 2..")
        met = s["targets_met"]
        check(met["whole_job >= 2x the best PyTorch run"], True, "whole-job target met")
        check(met["first_epoch >= 2x the best PyTorch loader"], True, "first-epoch target met")
        check(met["gpu_idle < 10% where decoding is not the limit"], True, "idle target met")


def test_one_failed_one_timed_out():
    with tempfile.TemporaryDirectory() as out:
        all_fine(out)
        # --decode pil: died in epoch 1 with a traceback.
        for f in ("torch_pil.json",):
            os.remove(os.path.join(out, f))
        timing(out, "torch_pil", 1, T, T + 4)
        write(out, "torch_pil.log", stamped([
            (T + 2, f"pytorch_baseline: efficientnet_lite0 on NVIDIA H200, {SPLIT}"),
            (T + 3, "Traceback (most recent call last):"),
            (T + 4, "RuntimeError: DataLoader worker (pid 77) is killed by signal: Bus error.")]))
        # --decode pil-draft: stopped by the time limit after 3 epochs (no --json).
        os.remove(os.path.join(out, "torch_pil_draft.json"))
        timing(out, "torch_pil_draft", 124, T, T + 22)
        write(out, "torch_pil_draft.log", torch_log(T, [T + 10, T + 15, T + 20], ips=120))
        # The gpu decode run is skipped (a CPU dry run).
        for f in ("torch_gpu.json", "torch_gpu.log", "torch_gpu.time.json"):
            os.remove(os.path.join(out, f))
        write(out, "torch_gpu.skip", "--decode gpu decodes on the GPU; this run is on cpu\n")
        s = e.summarize(out, 20)
        runs = s["torch"]
        pil, draft, gpu = runs["torch_pil"], runs["torch_pil_draft"], runs["torch_gpu"]
        check(pil["status"], "failed", "a run that died is failed")
        check(pil["reason"],
              "RuntimeError: DataLoader worker (pid 77) is killed by signal: Bus error.",
              "its reason is the last line it printed")
        check(pil["seconds"], None, "a failed run has no whole-job time")
        check(draft["status"], "extrapolated", "a timed-out run with epochs is extrapolated")
        check(draft["timed_out"], True, "and says it timed out")
        # 20 s to epoch 3, 17 more epochs of 5 s (the gaps), a test pass of 5 - 4 = 1 s.
        check(draft["seconds"], 106.0, "the extrapolated whole job")
        check(draft["estimate"].startswith("EXTRAPOLATED: 3 of 20 epochs ran (timed out at 60 s)"),
              True, "the estimate is labelled")
        check(draft["first_epoch_images_per_second"], 120.0, "its first epoch is measured")
        check(gpu["status"], "skipped", "the skipped run is a row")
        check(gpu["reason"], "--decode gpu decodes on the GPU; this run is on cpu",
              "with its reason")
        h = s["headline"]
        check(set(h["torch_runs"]), set(e.TORCH_RUNS), "every run in the headline's list")
        check(h["torch_runs"]["torch_pil"].startswith("failed (RuntimeError"), True,
              "the headline says which run failed")
        check(h["best_torch_first_epoch"], "torch_pil_draft (--mode standard --decode pil-draft)",
              "the best loader among the runs left")
        check(h["best_torch_whole_job"], "torch_cached (--mode cached --decode pil)",
              "cached still the best whole job")


def test_timed_out_best():
    """An extrapolated run that is the best whole job carries the label into the headline."""
    with tempfile.TemporaryDirectory() as out:
        all_fine(out)
        os.remove(os.path.join(out, "torch_cached.json"))
        timing(out, "torch_cached", 124, T, T + 5.5)
        write(out, "torch_cached.log", torch_log(T, [T + 4, T + 4.5, T + 5]))
        s = e.summarize(out, 20)
        h = s["headline"]
        check(s["torch"]["torch_cached"]["status"], "extrapolated", "cached cut short")
        check(h["best_torch_total_is_extrapolated"], True, "the headline says extrapolated")


def test_missing_graft():
    with tempfile.TemporaryDirectory() as out:
        for name in e.TORCH_RUNS:
            write(out, f"{name}.skip", "no split.json (graft train failed before writing it)\n")
        s = e.summarize(out, 20)
        h = s["headline"]
        check(s["graft"]["status"], "missing", "no graft run")
        check((h["graft_total_seconds"], h["whole_job_ratio"], h["first_epoch_ratio"]),
              (None, None, None), "no ratios without graft")
        check(h["best_torch_whole_job"], None, "no PyTorch run to name")
        check(set(r["status"] for r in s["torch"].values()), {"skipped"}, "every run skipped")
        check(s["gpu_idle"]["status"], "missing", "no idle run")
        check(set(s["targets_met"].values()), {None}, "targets unknown, not failed")
        json.dumps(s)  # what e2e.sh writes must serialise


def test_graft_failed():
    with tempfile.TemporaryDirectory() as out:
        all_fine(out)
        timing(out, "graft_train", 1, T, T + 2, 240)
        write(out, "graft_train.log",
              stamped([(T + 1, "graft: models/x.safetensors: no such file")]))
        s = e.summarize(out, 20)
        check(s["graft"]["status"], "failed", "graft failed")
        check(s["graft"]["reason"], "graft: models/x.safetensors: no such file", "with its message")
        check(s["headline"]["graft_total_seconds"], None, "a failed job has no total")


if __name__ == "__main__":
    test_all_fine()
    test_one_failed_one_timed_out()
    test_timed_out_best()
    test_missing_graft()
    test_graft_failed()
    print("FAILED" if failures else "ok", len(failures))
    sys.exit(1 if failures else 0)
