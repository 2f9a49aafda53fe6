#!/usr/bin/env python3
"""tools/gpu_summary.py and tools/gpu_tree.py make the GPU check's record committed under
bench/results. A misread log would put a wrong count in that record, and a step that did not run
must never read as passed, so the parsers, the phase records and the merge are checked here on
synthetic logs shaped like ctest's and compute-sanitizer's: failed runs, runs cut short, missing
summaries, a build that failed, a tree that differs from its record, a missing phase.
Standard library only; no GPU. Exit 0: pass, 1: fail."""
import contextlib
import hashlib
import io
import json
import os
import sys
import tempfile

SRC = os.environ.get("GRAFT_SOURCE_DIR", os.path.join(os.path.dirname(__file__), "..", ".."))
sys.path.insert(0, os.path.join(SRC, "tools"))
import gpu_summary as g  # noqa: E402
import gpu_tree  # noqa: E402

failures = []


def check(got, want, what):
    if got != want:
        failures.append(what)
        print(f"FAIL: {what}: got {got!r}, want {want!r}")


MEMCHECK_OK = """========= COMPUTE-SANITIZER
[==========] 21 tests from 2 test suites ran. (5000 ms total)
[  PASSED  ] 21 tests.
========= ERROR SUMMARY: 0 errors
"""
MEMCHECK_CUT = """========= COMPUTE-SANITIZER
[ RUN      ] CudaBackward.DepthwiseMatchesCpu
"""
RACE_BAD = "========= RACECHECK SUMMARY: 3 hazards displayed (2 errors, 1 warnings)\n"
CTEST_FAILED = """ 11/120 Test  #11: CudaOps.Baz ......................   Passed    0.20 sec
 12/120 Test  #12: CudaOps.Foo ......................***Skipped   0.01 sec
 13/120 Test  #13: CudaOps.Bar ......................***Skipped   0.01 sec
 14/120 Test  #14: CudaOps.Qux ......................***Failed    0.30 sec

98% tests passed, 1 tests failed out of 120

The following tests did not run:
\t 12 - CudaOps.Foo (Skipped)
\t 13 - CudaOps.Bar (Skipped)

The following tests FAILED:
\t 14 - CudaOps.Qux (Failed)
"""


def test_parsers():
    check(g.ctest_counts(CTEST_FAILED),
          {"passed": 117, "failed": 1, "skipped": 2, "total": 120, "failures": ["CudaOps.Qux"],
           "parsed": True}, "ctest with a failure and skips")
    check(g.ctest_counts("100% tests passed out of 5\n")["passed"], 5,
          "newer ctest without the failed count")
    check(g.ctest_counts("make: *** [all] Error 2\n"),
          {"passed": None, "failed": None, "skipped": None, "total": None, "parsed": False},
          "no ctest summary: nothing counted, parsed false")
    check(g.memcheck_errors(MEMCHECK_OK), {"errors": 0, "parsed": True}, "clean memcheck")
    check(g.memcheck_errors(MEMCHECK_OK.replace("0 errors", "4 errors")),
          {"errors": 4, "parsed": True}, "memcheck errors")
    check(g.memcheck_errors(MEMCHECK_CUT), {"errors": None, "parsed": False},
          "memcheck without its summary is not 0 errors")
    check(g.racecheck_errors(RACE_BAD), {"errors": 2, "hazards": 3, "parsed": True},
          "racecheck errors")
    check(g.racecheck_errors("[ RUN      ] CudaOps.ConvDepthwiseMatchesCpu\n"),
          {"errors": None, "hazards": None, "parsed": False}, "racecheck without its summary")
    check(g.gtest_counts(MEMCHECK_OK)["gtest_passed"], 21, "gtest's own count under memcheck")
    check([g.status_of(rc) for rc in (0, 1, 124, 137, None)],
          ["ok", "failed", "timeout", "timeout", "cut short"], "status from the exit status")
    a = [{"epoch": 1, "loss": 0.5, "val_accuracy": 1.0}, {"epoch": 2, "loss": 0.4}]
    b = [{"epoch": 1, "loss": 0.5, "val_accuracy": 0.75}, {"epoch": 2, "loss": 0.4}]
    check(g.max_metric_diff(a, b), 0.25, "largest metric difference")
    check(g.max_metric_diff(a, b[:1]), None, "runs of different lengths are not compared")


# --- phases from synthetic work folders -----------------------------------------------------------

def step(work, name, rc=None, seconds=1.0, limit=60, status=None, reason="", log=None, start=False):
    """Appends a step's lines as tools/gpu-check.sh's run_step does, and writes its log."""
    args = ["step", os.path.join(work, "steps.jsonl"), "--name", name, "--limit", str(limit),
            "--log", f"{name}.log", "--", "prog", f"--gtest_filter={name}*"]
    g.main(args[:8] + ["--event", "start"] + args[8:])
    if not start:
        end = args[:8] + ["--event", "end", "--seconds", str(seconds), "--reason", reason]
        end += ["--rc", str(rc)] if rc is not None else []
        end += ["--status", status] if status else []
        g.main(end + args[8:])
    if log is not None:
        with open(os.path.join(work, f"{name}.log"), "w") as f:
            f.write(log)


def phase(tmp, name, finished=True):
    work, out = os.path.join(tmp, f"work-{name}"), os.path.join(tmp, f"out-{name}")
    g.main(["phase", work, "--phase", name, "--out", out] + (["--finished"] if finished else []))
    with open(os.path.join(out, f"phase-{name}.json")) as f:
        return json.load(f)


def work_dir(tmp, name):
    work = os.path.join(tmp, f"work-{name}")
    os.makedirs(work)
    with open(os.path.join(work, "nvidia-smi.log"), "w") as f:
        f.write("name, driver_version\nNVIDIA H200, 570.00\n")
    step(work, "nvidia-smi", 0, log="name, driver_version\nNVIDIA H200, 570.00\n")
    return work


def by_name(rec):
    return {s["name"]: s for s in rec["steps"]}


def test_failed_build_skips_the_rest(tmp):
    work = work_dir(tmp, "test")
    step(work, "build", 2, log="error: nvcc died\n")
    step(work, "ctest", status="skipped", reason="build failed")
    step(work, "train-cuda", status="skipped", reason="build failed")
    rec = phase(tmp, "test")
    s = by_name(rec)
    check((rec["build"]["rc"], rec["build"]["status"], rec["build_ok"]), (2, "failed", False),
          "the build's exit status is recorded")
    check((s["ctest"]["status"], s["ctest"]["reason"]), ("skipped", "build failed"),
          "a step after a failed build is skipped, with the reason")
    check(rec["tests"]["passed"], None, "skipped tests are not counted as passed")
    check(rec["tests"]["status"], "skipped", "the test counts carry the step's status")
    check(rec["train"]["agree"], None, "no agreement without both runs")
    check(rec["status"], "failed", "a phase whose build failed has failed")
    check(os.path.exists(os.path.join(tmp, "out-test", "logs", "build.log")), True,
          "the build log is copied")


def test_sanitize_timeout_and_missing_summary(tmp):
    work = work_dir(tmp, "sanitize")
    step(work, "build", 0, log="")
    step(work, "memcheck-test_cuda_ops", 0, log=MEMCHECK_OK)
    step(work, "memcheck-test_cuda_backward", 124, seconds=150.0, limit=150, log=MEMCHECK_CUT)
    step(work, "racecheck-pool", 0, log="[  PASSED  ] 2 tests.\n")  # no RACECHECK SUMMARY
    step(work, "racecheck-depthwise", 99, log=RACE_BAD)
    rec = phase(tmp, "sanitize")
    s = by_name(rec)
    check((s["memcheck-test_cuda_backward"]["status"], s["memcheck-test_cuda_backward"]["errors"]),
          ("timeout", None), "a memcheck run that timed out: status timeout, errors unknown")
    check(s["memcheck-test_cuda_backward"]["reason"], "stopped at its 150 s limit",
          "a timeout says which limit")
    check(rec["sanitizer_errors"], None, "one timed-out memcheck run: the total is unknown, not 0")
    check(rec["memcheck"]["test_cuda_ops"]["errors"], 0, "the clean run keeps its count")
    check((s["racecheck-pool"]["status"], s["racecheck-pool"]["parsed"]), ("ok", False),
          "racecheck without its summary: parsed false")
    check(rec["racecheck_errors"], None, "racecheck total unknown when a run has no summary")
    check(rec["racecheck"]["depthwise"]["filter"], "racecheck-depthwise*",
          "the racecheck filter is recorded")
    check(rec["status"], "failed", "timeouts and errors fail the phase")
    check(any("parsed: false" in p for p in rec["problems"]), True,
          "an exit 0 without a readable result is named as a problem")


def test_bench_skip_and_cut_short(tmp):
    work = work_dir(tmp, "bench")
    step(work, "build", 0, log="")
    step(work, "kernels", 0, log="rows\n")
    with open(os.path.join(work, "kernels.json"), "w") as f:
        json.dump([{"op": "conv", "ms": 1.5}], f)
    step(work, "pytorch-cached", start=True)  # the phase was stopped while this ran
    rec = phase(tmp, "bench", finished=False)
    s = by_name(rec)
    check(rec["kernels"], [{"op": "conv", "ms": 1.5}], "the kernel rows as they are")
    check((s["pytorch-cached"]["status"], s["pytorch-cached"]["rc"]), ("cut short", None),
          "a step with no exit status is cut short, not absent")
    check(rec["status"], "incomplete", "a phase that did not reach its end")
    check(os.path.exists(os.path.join(tmp, "out-bench", "kernels.json")), True,
          "the kernel rows are copied out")
    work = work_dir(tmp, "trunk")
    step(work, "build", 0, log="")
    step(work, "trunk", status="skipped", reason="bench/trunk_vs_torch.py not found")
    rec = phase(tmp, "trunk")
    check(by_name(rec)["trunk"]["reason"], "bench/trunk_vs_torch.py not found", "a skip says why")
    check(rec["trunk"], None, "a skipped step has no results")


def test_train_agreement(tmp):
    work = work_dir(tmp, "e2e")  # any phase folder will do for the run folders
    for dev, loss in (("cuda", 0.50000001), ("cpu", 0.5)):
        run = os.path.join(work, f"run-train-{dev}")
        os.makedirs(run)
        with open(os.path.join(run, "metrics.jsonl"), "w") as f:
            f.write(json.dumps({"epoch": 1, "loss": loss, "val_accuracy": 1.0}) + "\n")
        with open(os.path.join(work, f"train-{dev}.log"), "w") as f:
            f.write('{"split": "test", "loss": 0.43, "accuracy": 0.89}\n')
    steps = [{"name": f"train-{d}", "status": "ok", "log": f"train-{d}.log"} for d in ("cuda", "cpu")]
    data = {s["name"]: g.parse_step(s, work, tmp) for s in steps}
    pair = g.device_pair({s["name"]: s for s in steps}, data, "train-cuda", "train-cpu", 1e-4, "")
    check(pair["agree"], True, "GPU and CPU metrics 1e-8 apart agree")
    check(pair["gpu"]["test_accuracy"], 0.89, "the test line is read")
    pair = g.device_pair({s["name"]: s for s in steps}, data, "train-cuda", "train-cpu", 1e-9, "")
    check(pair["agree"], False, "beyond the tolerance they do not")
    rec = phase(tmp, "e2e")  # its record holds nvidia-smi alone
    check((rec["status"], rec["missing_steps"]), ("failed", ["build", "step", "e2e"]),
          "a finished phase whose record lacks a step has failed")


def test_merge_with_a_missing_phase(tmp):
    out = os.path.join(tmp, "merged.json")
    with contextlib.redirect_stdout(io.StringIO()):
        g.main(["merge", os.path.join(tmp, "out-test"), os.path.join(tmp, "out-sanitize"),
                os.path.join(tmp, "out-bench"), "-o", out])
    with open(out) as f:
        m = json.load(f)
    check(m["missing_phases"], ["trunk", "e2e"], "the missing phases are named")
    check(m["phases"]["e2e"], {"status": "missing"}, "a missing phase is marked missing")
    check(m["phases_not_ok"], {"test": "failed", "sanitize": "failed", "bench": "incomplete"},
          "the phases that did not pass, and how")
    check(m["complete"], False, "a merge with a missing phase is not complete")
    check((m["sanitizer_errors"], m["e2e"], m["step"]), (None, None, None),
          "missing results are null, not 0")
    check(m["kernels"], [{"op": "conv", "ms": 1.5}], "the bench phase's rows reach the summary")
    check(m["build_ok"], False, "the failed build shows in the summary")


def test_tree_that_does_not_match(tmp):
    root = os.path.join(tmp, "tree")
    os.makedirs(os.path.join(root, "src"))
    files = {"README.md": b"graft\n", "src/a.cpp": b"int a;\n", "src/gone.cpp": b"int g;\n"}
    for name, data in files.items():
        with open(os.path.join(root, name), "wb") as f:
            f.write(data)
    manifest = {"commit": "abc123", "dirty": False,
                "files": {n: hashlib.sha256(d).hexdigest() for n, d in files.items()}}
    path = os.path.join(tmp, "tree.json")
    with open(path, "w") as f:
        json.dump(manifest, f)
    t = gpu_tree.check(path, root)
    check((t["source"], t["commit"], t["matches"]), ("manifest", "abc123", True),
          "an unchanged tree without .git matches its record")
    with open(os.path.join(root, "src", "a.cpp"), "ab") as f:
        f.write(b"int b;\n")
    os.remove(os.path.join(root, "src", "gone.cpp"))
    t = gpu_tree.check(path, root)
    check((t["matches"], t["differing"], t["differing_count"]),
          (False, ["src/a.cpp", "src/gone.cpp"], 2), "a changed and a missing file are named")
    t = gpu_tree.check(os.path.join(tmp, "no-such-record.json"), root)
    check((t["source"], t["matches"]), ("none", None), "no record and no .git: unknown, not true")
    with open(path, "w") as f:
        f.write("{not json")
    check("error" in gpu_tree.check(path, root), True, "a broken record is reported, not trusted")


if __name__ == "__main__":
    test_parsers()
    with tempfile.TemporaryDirectory() as tmp:
        test_failed_build_skips_the_rest(tmp)
        test_sanitize_timeout_and_missing_summary(tmp)
        test_bench_skip_and_cut_short(tmp)
        test_train_agreement(tmp)
        test_merge_with_a_missing_phase(tmp)
        test_tree_that_does_not_match(tmp)
    print("FAILED" if failures else "ok", len(failures))
    sys.exit(1 if failures else 0)
