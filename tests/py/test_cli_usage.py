#!/usr/bin/env python3
"""How the graft command line answers mistakes in the command itself: an unknown command or
option names the nearest valid one, every parse error is one line with exit code 2, --version
names the CPU path and the CUDA architectures compiled in, GRAFT_CPU forces a CPU path and a bad
one is a usage error, and help text is complete and free of artefacts.
Standard library only; run by ctest with GRAFT_BIN set. Exit 0: pass, 1: fail."""
import os
import re
import sys

from cli_util import GRAFT, check, finish, run


def usage_error(args, *needles):
    rc, out, err = run(*args)
    lines = [l for l in err.splitlines() if l.strip()]
    what = "graft " + " ".join(args)
    check(rc == 2, f"{what}: exit code {rc}, expected 2")
    check(len(lines) == 1, f"{what}: {len(lines)} lines on stderr, expected one: {err!r}")
    check(out == "", f"{what}: printed on stdout: {out!r}")
    for n in needles:
        check(n in err, f"{what}: stderr lacks {n!r}: {err!r}")


def test_unknown_command():
    usage_error(["trian"], "unknown command 'trian'", "did you mean train?", "predict", "export")
    usage_error(["frobnicate"], "unknown command 'frobnicate'", "commands: train")
    rc, _, err = run("frobnicate")
    check("did you mean" not in err, "no suggestion for a word close to no command")


def test_unknown_option():
    usage_error(["train", "--epoch", "5", "--data", "x"], "unknown option --epoch",
                "did you mean --epochs?")
    usage_error(["predict", "--modle", "m.safetensors", "x.jpg"], "did you mean --model?")
    usage_error(["eval", "--batch_size=4"], "did you mean --batch-size?")
    usage_error(["train", "--zzzzzzzzzzzz"], "unknown option --zzzzzzzzzzzz",
                "see graft train --help")


def test_parse_errors_are_one_line():
    usage_error(["train", "--epochs", "0"], "--epochs", "see graft train --help")
    usage_error(["predict", "--gpu", "-1", "--model", "m", "x.jpg"], "--gpu")
    usage_error(["convert", "in.pth", "-o", "out", "--arch", "vgg16"], "--arch", "vgg16")
    usage_error([], "subcommand")


def test_version():
    rc, out, _ = run("--version")
    check(rc == 0, f"--version exit {rc}")
    check(re.match(r"graft \d+\.\d+\.\d+\n", out) is not None, f"--version first line: {out!r}")
    check("CUDA architectures:" in out, f"--version names no CUDA architectures: {out!r}")
    m = re.search(r"^CPU path: ([a-z0-9]+)", out, re.M)
    check(m is not None, f"--version names no CPU path: {out!r}")


def test_cpu_path_choice():
    # Every path --version lists as built and runnable can be forced, and is then the one named.
    _, out, _ = run("--version")
    line = next((l for l in out.splitlines() if l.startswith("CPU path: ")), "")
    paths = re.findall(r"\b(avx512|avx2|sse2|neon|generic)\b(?! \(not on this CPU)", line)
    check(len(paths) >= 1, f"no CPU path in {line!r}")
    for p in paths:
        rc, out, _ = run("--version", env={**os.environ, "GRAFT_CPU": p})
        check(rc == 0 and f"CPU path: {p}" in out, f"GRAFT_CPU={p}: --version says {out!r}")
    bad = {**os.environ, "GRAFT_CPU": "avx9000"}
    rc, out, err = run("inspect", "no-such.safetensors", env=bad)
    lines = [l for l in err.splitlines() if l.strip()]
    check(rc == 2 and len(lines) == 1 and "GRAFT_CPU=avx9000: no such CPU path" in err,
          f"GRAFT_CPU=avx9000: exit {rc}, stderr {err!r}")


def test_help():
    for cmd in ("train", "eval", "predict", "bench"):
        rc, out, _ = run(cmd, "--help")
        check(rc == 0 and "--gpu" in out, f"graft {cmd} --help offers --gpu")
        check(not re.search(r"\{(true|false)\}", out), f"graft {cmd} --help shows a flag default")
    rc, out, _ = run("convert", "--help")
    for arch in ("efficientnet_lite0", "efficientnet_lite4", "mobilenet_v2", "resnet18",
                 "resnet50"):
        check(arch in out, f"convert --help lists {arch}")
    for opt in ("--naming", "--labels", "--padding", "--bn-eps", "--input-size", "--resize-mode",
                "--crop-fraction", "--mean", "--std"):
        check(opt in out, f"convert --help offers {opt}")


def main():
    if not GRAFT or not os.path.exists(GRAFT):
        print("GRAFT_BIN is not set to the graft binary")
        return 1
    test_unknown_command()
    test_unknown_option()
    test_parse_errors_are_one_line()
    test_version()
    test_cpu_path_choice()
    test_help()
    return finish()


if __name__ == "__main__":
    sys.exit(main())
