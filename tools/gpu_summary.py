#!/usr/bin/env python3
"""The records of the GPU check (tools/gpu-check.sh). Standard library only.

  gpu_summary.py step STEPS.jsonl --name N --event start|end [--rc RC --seconds S] [--limit L]
                 [--status skipped|cut\\ short --reason WHY] [--log FILE] -- CMD...
      appends one line per step event: name, command, rc, seconds, limit_s, status, reason
  gpu_summary.py phase WORK --phase NAME --out OUT_DIR [--command C] [--finished]
      reads WORK/steps.jsonl and each step's log and files, writes OUT_DIR/phase-NAME.json and
      copies the logs (head and tail of a long one) to OUT_DIR/logs
  gpu_summary.py merge OUT1 OUT2 ... -o summary.json
      joins the phases' records (folders holding phase-*.json, or the files) into one summary,
      naming the phases that are missing, failed or cut short

A step's status is ok (exit 0), failed, timeout (exit 124 or 137: its time limit), skipped (with
the reason) or cut short (it started but has no exit status: the phase was stopped while it ran).
Each parser says parsed: false when its log or file lacks what it looks for; a count it could not
read is null, never 0."""
import argparse
import datetime
import glob
import json
import os
import re
import shlex
import shutil
import sys

PHASES = ("test", "sanitize", "bench", "trunk", "e2e")
JSON_STEPS = ("kernels", "trunk", "torch-layers", "pytorch-cached", "step")
# The steps tools/gpu-check.sh records in each phase, run or skipped: one absent from a finished
# phase's record means the record itself is broken.
EXPECTED = {
    "test": ("build", "ctest", "train-cuda", "train-cpu", "train-ft-cuda", "train-ft-cpu",
             "predict-cuda", "predict-cpu"),
    "sanitize": ("build", "memcheck-test_cuda_ops", "memcheck-test_cuda_backward",
                 "memcheck-test_cuda_engine", "racecheck-pool", "racecheck-depthwise",
                 "racecheck-dw-depthwise"),
    "bench": ("build", "stages-head", "stages-ft2", "stages-ftall", "pytorch-cached", "kernels"),
    "trunk": ("build", "torch-layers", "trunk"),
    "e2e": ("build", "step", "e2e"),
}
LOG_HEAD, LOG_TAIL = 64 << 10, 192 << 10  # what is kept of a long log: its start and its end
HEAD_ONLY_TOLERANCE = 1e-4  # GPU vs CPU metrics, head only (same seed); measured 8e-8
FINE_TUNE_TOLERANCE = 1e-3  # the backward kernels sum in another order than the CPU's


def read(path):
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read()
    except OSError:
        return ""


def read_json(path):
    """The file's JSON, or None when it is absent or not JSON."""
    text = read(path)
    try:
        return json.loads(text) if text.strip() else None
    except ValueError:
        return None


def now():
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


# --- steps ---------------------------------------------------------------------------------------

def status_of(rc):
    if rc is None:
        return "cut short"
    if rc == 0:
        return "ok"
    return "timeout" if rc in (124, 137) else "failed"


def step_line(args):
    line = {"name": args.name, "event": args.event, "command": shlex.join(args.cmd),
            "limit_s": args.limit, "log": args.log}
    if args.event == "end":
        line.update(rc=args.rc, seconds=args.seconds,
                    status=args.status or status_of(args.rc), reason=args.reason or None)
        if line["status"] == "timeout" and not line["reason"]:
            line["reason"] = f"stopped at its {args.limit} s limit"
    return line


def read_steps(path):
    """Steps in the order they started, each with its end merged in. A start without an end is a
    step that was running when the phase was stopped."""
    steps = {}
    for n, text in enumerate(read(path).splitlines(), 1):
        try:
            line = json.loads(text)
        except ValueError:
            print(f"gpu_summary.py: {path}:{n}: not JSON, line ignored", file=sys.stderr)
            continue
        s = steps.setdefault(line["name"], {"name": line["name"]})
        event = line.pop("event", "end")
        for k in ("command", "log", "limit_s"):  # an end line may lack what its start said
            if not line.get(k) and s.get(k):
                line.pop(k, None)
        s.update(line)
        if event == "start":
            s.update(rc=None, seconds=None, status="cut short",
                     reason="no exit status: the phase was stopped while this step ran")
    return list(steps.values())


# --- parsers: each takes a log's text (or a file) and says whether it found what it expects -----

def ctest_counts(log):
    """ctest's closing lines: 'N% tests passed, F tests failed out of T' and the skipped list."""
    # Newer ctest drops the ", 0 tests failed" part when nothing failed.
    m = re.search(r"(\d+)% tests passed(?:, (\d+) tests? failed)? out of (\d+)", log)
    if not m:
        return {"passed": None, "failed": None, "skipped": None, "total": None, "parsed": False}
    failed, total = int(m.group(2) or 0), int(m.group(3))
    skipped = len(re.findall(r"\*\*\*Skipped|\bSkipped\b\s+[\d.]+ sec", log))
    failures = re.findall(r"^\s*\d+ - (\S+) \((?:Failed|Timeout|SEGFAULT|Subprocess aborted|"
                          r"Exception|Child aborted|Not Run)\)", log, re.M)
    return {"passed": total - failed - skipped, "failed": failed, "skipped": skipped,
            "total": total, "failures": failures, "parsed": True}


def memcheck_errors(log):
    """One memcheck run: its ERROR SUMMARY count. Without the summary (crash, timeout) the count
    is unknown, not 0."""
    counts = [int(n) for n in re.findall(r"ERROR SUMMARY: (\d+) errors?", log)]
    return {"errors": sum(counts) if counts else None, "parsed": bool(counts)}


def racecheck_errors(log):
    """One racecheck run: errors and hazards from its RACECHECK SUMMARY."""
    found = re.findall(r"RACECHECK SUMMARY: (\d+) hazards? displayed \((\d+) errors?, (\d+) warn", log)
    if not found:
        return {"errors": None, "hazards": None, "parsed": False}
    return {"errors": sum(int(e) for _, e, _ in found), "hazards": sum(int(h) for h, _, _ in found),
            "parsed": True}


def gtest_counts(log):
    """The test binary's own closing lines under a sanitizer: how many tests ran and passed."""
    ran = re.search(r"\[==========\] (\d+) tests? from \d+ test suites? ran", log)
    passed = re.search(r"\[  PASSED  \] (\d+) tests?", log)
    failed = re.findall(r"^\[  FAILED  \] (\S+)", log, re.M)
    return {"gtest_ran": int(ran.group(1)) if ran else None,
            "gtest_passed": int(passed.group(1)) if passed else None,
            "gtest_failed": sorted(set(failed))}


def train_run(log, run_dir):
    """A graft train run: its test line and per-epoch metrics."""
    test = None
    for line in log.splitlines():
        if line.startswith("{") and '"split":"test"' in line.replace(" ", ""):
            try:
                test = json.loads(line)
            except ValueError:
                pass
    metrics = []
    for line in read(os.path.join(run_dir, "metrics.jsonl")).splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if "epoch" in row:
            metrics.append(row)
    return {
        "test_accuracy": test and test.get("accuracy"),
        "test_loss": test and test.get("loss"),
        "first_epoch_images_per_second": metrics[0].get("images_per_second") if metrics else None,
        "final_val_accuracy": metrics[-1].get("val_accuracy") if metrics else None,
        "epochs": len(metrics),
        "metrics": metrics,
        "parsed": bool(metrics) and test is not None,
    }


def max_metric_diff(a, b):
    """Largest difference between two runs' per-epoch loss/accuracy values."""
    if not a or not b or len(a) != len(b):
        return None
    worst = 0.0
    for ra, rb in zip(a, b):
        for k in ("loss", "accuracy", "val_loss", "val_accuracy"):
            if ra.get(k) is not None and rb.get(k) is not None:
                worst = max(worst, abs(ra[k] - rb[k]))
    return worst


def predictions(log):
    """graft predict's JSON lines: path -> (top label, its probability)."""
    out = {}
    for line in log.splitlines():
        if not line.startswith("{"):
            continue
        try:
            row = json.loads(line)
            out[row["path"]] = (row["top"][0]["label"], row["top"][0]["prob"])
        except (ValueError, KeyError, IndexError, TypeError):
            continue
    return out


def compare_predictions(a, b):
    common = sorted(set(a) & set(b))
    if not a or not b:
        return {"images": None, "same_top1": None, "max_prob_diff": None, "parsed": False}
    return {"images": len(common),
            "same_top1": sum(a[p][0] == b[p][0] for p in common),
            "only_one_device": len(set(a) ^ set(b)),
            "max_prob_diff": max((abs(a[p][1] - b[p][1]) for p in common), default=None),
            "parsed": True}


def json_result(path):
    data = read_json(path)
    return data, {"parsed": data is not None, "file": os.path.basename(path)}


def parse_step(step, work, out):
    """Adds the step's parsed results to it; returns the data the phase reports at its top."""
    name, log = step["name"], read(os.path.join(work, step.get("log") or f"{step['name']}.log"))
    if step["status"] == "skipped":
        return None
    if name == "ctest":
        step.update(ctest_counts(log))
    elif name.startswith("memcheck-"):
        step.update(memcheck_errors(log), **gtest_counts(log))
    elif name.startswith("racecheck-"):
        step.update(racecheck_errors(log), **gtest_counts(log))
    elif name.startswith("train-"):
        run = train_run(log, os.path.join(work, f"run-{name}"))
        step.update({k: v for k, v in run.items() if k != "metrics"})
        return run["metrics"]
    elif name.startswith("predict-"):
        p = predictions(log)
        step.update(images=len(p), parsed=bool(p))
        return p
    elif name == "e2e":
        data, info = json_result(os.path.join(out, "e2e", "e2e.json"))
        step.update(info)
        return data
    elif name in JSON_STEPS or name.startswith("stages-"):  # these write WORK/NAME.json
        path = os.path.join(work, f"{name}.json")
        data, info = json_result(path)
        step.update(info)
        if data is not None:
            shutil.copy(path, os.path.join(out, f"{name}.json"))
        return data
    return None


# --- a phase -------------------------------------------------------------------------------------

def gtest_filter(command):
    m = re.search(r"--gtest_filter=([^' ]+)", command)
    return m and m.group(1)


def sum_counts(steps, key="errors"):
    """A total over runs, or None unless every run reported its count."""
    if not steps or any(s.get(key) is None for s in steps):
        return None
    return sum(s[key] for s in steps)


def brief(step):
    return {k: step.get(k) for k in ("status", "rc", "seconds", "reason") if step.get(k) is not None}


def phase_status(steps, finished, missing):
    if not finished:
        return "incomplete"
    # A step that exited 0 but left no result that could be read is no pass either.
    if missing or any(s["status"] in ("failed", "timeout", "cut short") or s.get("parsed") is False
                for s in steps):
        return "failed"
    # configure is skipped whenever the build folder is kept: that is no gap in the record.
    return "partial" if any(s["status"] == "skipped" and s["name"] != "configure"
                            for s in steps) else "ok"


def device_of(smi):
    return smi[1].split(",")[0].strip() if len(smi) > 1 and "," in smi[1] else "unknown"


def build_phase(work, phase, out, command, finished):
    steps = read_steps(os.path.join(work, "steps.jsonl"))
    data = {s["name"]: parse_step(s, work, out) for s in steps}
    by = {s["name"]: s for s in steps}
    smi = read(os.path.join(work, "nvidia-smi.log")).splitlines() if "nvidia-smi" in by else []
    tree = read_json(os.path.join(work, "tree.json")) or {"source": None, "parsed": False}
    build = by.get("build", {"status": "missing"})
    missing = [n for n in EXPECTED[phase] if n not in by]
    rec = {
        "phase": phase,
        "status": phase_status(steps, finished, missing),
        "missing_steps": missing,
        "finished": finished,
        "device": device_of(smi),
        "nvidia_smi": smi,
        "date": now(),
        "command": command,
        "git": tree.get("commit"),
        "git_dirty": tree.get("dirty"),
        "tree": tree,
        "build": dict(brief(build), configure=brief(by.get("configure", {}))),
        "build_ok": build.get("status") == "ok",
        "problems": [f"{s['name']}: {s['status']}" + (f" ({s['reason']})" if s.get("reason") else "")
                     for s in steps if s["status"] != "ok" and s["name"] != "configure"] +
                    [f"{s['name']}: ok, but no result in its log or file (parsed: false)"
                     for s in steps if s["status"] == "ok" and s.get("parsed") is False],
        "steps": steps,
    }
    if phase == "test":
        ctest = by.get("ctest", {"status": "missing"})
        rec["tests"] = {k: ctest.get(k) for k in
                        ("passed", "failed", "skipped", "total", "failures", "parsed", "status")}
        rec["train"] = device_pair(by, data, "train-cuda", "train-cpu", HEAD_ONLY_TOLERANCE,
                                   "the fish photos (93, 3 species), 20 epochs, seed 42")
        rec["fine_tune"] = device_pair(by, data, "train-ft-cuda", "train-ft-cpu",
                                       FINE_TUNE_TOLERANCE, "the same photos, 4 epochs, "
                                       "--fine-tune 2 --freeze-epochs 1")
        pg, pc = data.get("predict-cuda"), data.get("predict-cpu")
        rec["predict"] = dict(compare_predictions(pg or {}, pc or {}),
                              gpu=brief(by.get("predict-cuda", {})),
                              cpu=brief(by.get("predict-cpu", {})))
    elif phase == "sanitize":
        mem = [s for s in steps if s["name"].startswith("memcheck-")]
        race = [s for s in steps if s["name"].startswith("racecheck-")]
        # A run that was skipped, timed out or printed no summary leaves the total unknown.
        rec["sanitizer_errors"] = sum_counts(mem)
        rec["racecheck_errors"] = sum_counts(race)
        rec["memcheck"] = {s["name"][9:]: dict(brief(s), errors=s.get("errors")) for s in mem}
        rec["racecheck"] = {s["name"][10:]: dict(brief(s), errors=s.get("errors"),
                                                  filter=gtest_filter(s.get("command", "")))
                            for s in race}
    elif phase == "bench":
        rec["kernels"] = data.get("kernels")
        rec["stages"] = data.get("stages-head")
        rec["fine_tune_stages"] = {"2": data.get("stages-ft2"), "all": data.get("stages-ftall")}
        torch = data.get("pytorch-cached")
        rec["pytorch"] = torch and {k: torch.get(k) for k in
                                    ("device", "mode", "test", "seconds_total",
                                     "first_epoch_images_per_second")}
    elif phase == "trunk":
        rec["torch_layers"] = data.get("torch-layers")
        rec["trunk"] = data.get("trunk")
    elif phase == "e2e":
        rec["step"] = data.get("step")
        rec["e2e"] = data.get("e2e")
    return rec


def device_pair(by, data, gpu_name, cpu_name, tolerance, what):
    """The same run on both devices: each one's results and how far their metrics are apart."""
    gpu, cpu = by.get(gpu_name, {}), by.get(cpu_name, {})
    diff = max_metric_diff(data.get(gpu_name), data.get(cpu_name))
    keys = ("status", "rc", "seconds", "reason", "test_accuracy", "test_loss",
            "first_epoch_images_per_second", "final_val_accuracy", "epochs", "parsed")
    return {"data": what,
            "gpu": {k: gpu.get(k) for k in keys if k in gpu} or None,
            "cpu": {k: cpu.get(k) for k in keys if k in cpu} or None,
            "gpu_vs_cpu_max_metric_diff": diff,
            "tolerance": tolerance,
            "agree": None if diff is None else diff <= tolerance,
            "test_accuracy": gpu.get("test_accuracy"),
            "seconds": gpu.get("seconds")}


def copy_logs(work, out, steps):
    """Each step's log into OUT/logs; a long one keeps its start and its end."""
    os.makedirs(os.path.join(out, "logs"), exist_ok=True)
    for s in steps:
        src = os.path.join(work, s.get("log") or "")
        if not s.get("log") or not os.path.isfile(src):
            continue
        with open(src, "rb") as f:
            data = f.read()
        if len(data) > LOG_HEAD + LOG_TAIL:
            left = len(data) - LOG_HEAD - LOG_TAIL
            data = (data[:LOG_HEAD] + f"\n[... {left} bytes left out ...]\n".encode()
                    + data[-LOG_TAIL:])
        with open(os.path.join(out, "logs", s["log"]), "wb") as f:
            f.write(data)


def write_json(path, data):
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=1)
        f.write("\n")
    os.replace(tmp, path)


# --- merge ---------------------------------------------------------------------------------------

def find_phase_files(paths):
    files = []
    for p in paths:
        if os.path.isdir(p):
            found = sorted(glob.glob(os.path.join(p, "phase-*.json")) +
                           glob.glob(os.path.join(p, "*", "phase-*.json")))
            if not found:
                print(f"gpu_summary.py: {p}: no phase-*.json in it", file=sys.stderr)
            files += found
        elif os.path.isfile(p):
            files.append(p)
        else:
            print(f"gpu_summary.py: {p}: no such file or folder", file=sys.stderr)
    return files


def merge(paths):
    phases = {}
    for path in find_phase_files(paths):
        rec = read_json(path)
        if not isinstance(rec, dict) or rec.get("phase") not in PHASES:
            print(f"gpu_summary.py: {path}: not a phase record, ignored", file=sys.stderr)
            continue
        rec["file"] = path
        phases[rec["phase"]] = rec  # a later file of the same phase (a rerun) replaces it
    missing = [p for p in PHASES if p not in phases]
    not_ok = {p: r["status"] for p, r in phases.items() if r["status"] != "ok"}
    trees = {(r.get("git"), r.get("git_dirty"), (r.get("tree") or {}).get("matches"))
             for r in phases.values()}
    first = next(iter(phases.values()), {})
    t, s, b, tr, e = (phases.get(p, {}) for p in PHASES)
    summary = {
        "device": first.get("device", "unknown"),
        "nvidia_smi": first.get("nvidia_smi", []),
        "date": max((r.get("date", "") for r in phases.values()), default=None),
        "git": first.get("git"),
        "git_dirty": first.get("git_dirty"),
        "tree_matches": all((r.get("tree") or {}).get("matches") is True
                            for r in phases.values()) if phases else None,
        "same_tree_in_every_phase": len(trees) <= 1,
        "command": {p: r.get("command") for p, r in phases.items()},
        "complete": not missing and not not_ok,
        "missing_phases": missing,
        "phases_not_ok": not_ok,
        "build_ok": all(r.get("build_ok") for r in phases.values()) if phases else False,
        "phases": {p: {"status": r["status"], "file": r["file"], "date": r.get("date"),
                       "git": r.get("git"), "git_dirty": r.get("git_dirty"),
                       "build": r.get("build"), "tree": r.get("tree"),
                       "problems": r.get("problems"), "steps": r.get("steps")}
                   for p, r in phases.items()},
        # Today's fields, where the README's numbers come from; null where the phase is missing.
        "tests": t.get("tests"),
        "sanitizer_errors": s.get("sanitizer_errors"),
        "racecheck_errors": s.get("racecheck_errors"),
        "kernels": b.get("kernels"),
        "stages": b.get("stages"),
        "train": t.get("train") and dict(t["train"], pytorch=b.get("pytorch")),
        "fine_tune": t.get("fine_tune") and dict(t["fine_tune"],
                                                 stages=b.get("fine_tune_stages")),
        "predict": t.get("predict"),
        "trunk": tr.get("trunk"),
        "torch_layers": tr.get("torch_layers"),
        "step": e.get("step"),
        "e2e": e.get("e2e"),
    }
    for p in PHASES:
        summary["phases"].setdefault(p, {"status": "missing"})
    return summary


def main(argv):
    ap = argparse.ArgumentParser(prog="gpu_summary.py")
    sub = ap.add_subparsers(dest="what", required=True)
    st = sub.add_parser("step")
    st.add_argument("steps")
    st.add_argument("--name", required=True)
    st.add_argument("--event", choices=("start", "end"), required=True)
    st.add_argument("--rc", type=int)
    st.add_argument("--seconds", type=float)
    st.add_argument("--limit", type=int)
    st.add_argument("--status", choices=("skipped", "cut short"))
    st.add_argument("--reason", default="")
    st.add_argument("--log")
    ph = sub.add_parser("phase")
    ph.add_argument("work")
    ph.add_argument("--phase", required=True, choices=PHASES)
    ph.add_argument("--out", required=True)
    ph.add_argument("--command", default="")
    ph.add_argument("--finished", action="store_true")
    mg = sub.add_parser("merge")
    mg.add_argument("paths", nargs="+")
    mg.add_argument("-o", "--output", required=True)
    cmd = []
    if "--" in argv:  # a step's command: its own options must not reach this parser
        argv, cmd = argv[:argv.index("--")], argv[argv.index("--") + 1:]
    args = ap.parse_args(argv)
    args.cmd = cmd
    if args.what == "step":
        with open(args.steps, "a", encoding="utf-8") as f:
            f.write(json.dumps(step_line(args)) + "\n")
    elif args.what == "phase":
        os.makedirs(args.out, exist_ok=True)
        rec = build_phase(args.work, args.phase, args.out, args.command, args.finished)
        copy_logs(args.work, args.out, rec["steps"])
        write_json(os.path.join(args.out, f"phase-{args.phase}.json"), rec)
    else:
        summary = merge(args.paths)
        write_json(args.output, summary)
        print(f"{args.output}: phases {', '.join(p for p in PHASES if p not in summary['missing_phases']) or 'none'}"
              + (f"; missing: {', '.join(summary['missing_phases'])}" if summary["missing_phases"] else "")
              + "".join(f"; {p}: {st}" for p, st in summary["phases_not_ok"].items()))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
