#!/usr/bin/env python3
"""tools/gpu_summary.py reads the logs of a GPU check into the summary committed under
bench/results. A misread log would put a wrong count in that record, so its parsers are checked
here on logs shaped like ctest's and compute-sanitizer's, including runs that were cut short.
Standard library only. Exit 0: pass, 1: fail."""
import os
import sys

SRC = os.environ.get("GRAFT_SOURCE_DIR", os.path.join(os.path.dirname(__file__), "..", ".."))
sys.path.insert(0, os.path.join(SRC, "tools"))
import gpu_summary as g  # noqa: E402

failures = []


def check(got, want, what):
    if got != want:
        failures.append(what)
        print(f"FAIL: {what}: got {got!r}, want {want!r}")


MEMCHECK_OK = """### test_cuda_ops
========= COMPUTE-SANITIZER
[  PASSED  ] 21 tests.
========= ERROR SUMMARY: 0 errors
### exit 0
### test_cuda_engine
========= ERROR SUMMARY: 0 errors
### exit 0
"""
RACE_OK = """### racecheck CudaOps.GlobalAvgPool*
========= RACECHECK SUMMARY: 0 hazards displayed (0 errors, 0 warnings)
### racecheck exit 0
"""
RACE_BAD = """### racecheck CudaOps.Conv*
========= RACECHECK SUMMARY: 3 hazards displayed (2 errors, 1 warnings)
### racecheck exit 0
"""
RACE_CUT = """### racecheck CudaOps.Conv*
[ RUN      ] CudaOps.ConvPointwiseV2MatchesCpu
### racecheck exit 124
"""


def test_sanitizer_counts():
    check(g.sanitizer_errors(MEMCHECK_OK), 0, "clean memcheck")
    check(g.sanitizer_errors(MEMCHECK_OK.replace("0 errors\n### exit 0\n### test_cuda_engine",
                                                 "4 errors\n### exit 1\n### test_cuda_engine")),
          4, "memcheck errors are summed")
    cut = MEMCHECK_OK.replace("========= ERROR SUMMARY: 0 errors\n### exit 0\n### test_cuda_engine",
                              "### exit 124\n### test_cuda_engine")
    check(g.sanitizer_errors(cut), None, "a memcheck run without its summary is not clean")
    check(g.sanitizer_errors(""), None, "no memcheck run at all")
    # Racecheck runs later in the same log; they must not disturb memcheck's count.
    check(g.sanitizer_errors(MEMCHECK_OK + RACE_OK + RACE_BAD), 0, "memcheck beside racecheck")
    check(g.racecheck_errors(MEMCHECK_OK + RACE_OK + RACE_OK), 0, "clean racecheck")
    check(g.racecheck_errors(MEMCHECK_OK + RACE_OK + RACE_BAD), 2, "racecheck errors")
    check(g.racecheck_errors(MEMCHECK_OK + RACE_OK + RACE_CUT), None, "racecheck cut short")
    check(g.racecheck_errors(MEMCHECK_OK), None, "no racecheck run")


def test_ctest_counts():
    log = """ 11/120 Test  #11: CudaOps.Baz ......................   Passed    0.20 sec
 12/120 Test  #12: CudaOps.Foo ......................***Skipped   0.01 sec
 13/120 Test  #13: CudaOps.Bar ......................***Skipped   0.01 sec
 14/120 Test  #14: CudaOps.Qux ......................***Failed    0.30 sec

98% tests passed, 1 tests failed out of 120

The following tests did not run:
\t 12 - CudaOps.Foo (Skipped)
\t 13 - CudaOps.Bar (Skipped)
"""
    check(g.ctest_counts(log),
          {"passed": 117, "failed": 1, "skipped": 2, "total": 120, "parsed": True},
          "ctest with a failure and skips")
    check(g.ctest_counts("100% tests passed out of 5\n"),
          {"passed": 5, "failed": 0, "skipped": 0, "total": 5, "parsed": True},
          "newer ctest without the failed count")
    check(g.ctest_counts("make: *** [all] Error 2\n")["parsed"], False, "no ctest summary")


if __name__ == "__main__":
    test_sanitizer_counts()
    test_ctest_counts()
    print("FAILED" if failures else "ok", len(failures))
    sys.exit(1 if failures else 0)
