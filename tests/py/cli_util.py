"""What the command-line tests share: where graft and the sample files are (set by ctest:
GRAFT_BIN, GRAFT_SOURCE_DIR), running graft, and the checks. A failed check is printed and kept in
`failures`; a test's main returns 1 when the list is not empty. Standard library only."""
import os
import shutil
import subprocess

GRAFT = os.environ.get("GRAFT_BIN", "")
SRC = os.environ.get("GRAFT_SOURCE_DIR") or os.path.dirname(os.path.dirname(
    os.path.dirname(os.path.abspath(__file__))))
MODEL = os.path.join(SRC, "models", "efficientnet_lite0.safetensors")
PHOTOS = os.path.join(SRC, ".cache", "photos")
failures = []


def run(*args, timeout=300, env=None):
    """graft with these arguments: (exit code, stdout, stderr)."""
    p = subprocess.run([GRAFT, *args], capture_output=True, text=True, timeout=timeout, env=env)
    return p.returncode, p.stdout, p.stderr


def make_data(tmp):
    """Two classes from the sample photos, copied under several names (6 photos each)."""
    data = os.path.join(tmp, "data")
    classes = {"a": ["astronaut.png", "chelsea.png", "coffee.png"],
               "b": ["motorcycle_left.png", "rocket.jpg"]}
    for cls, photos in classes.items():
        os.makedirs(os.path.join(data, cls))
        for i in range(6):
            src = photos[i % len(photos)]
            shutil.copy(os.path.join(PHOTOS, src), os.path.join(data, cls, f"{i}_{src}"))
    return data


def check(cond, what):
    if not cond:
        failures.append(what)
        print("FAIL:", what)
    return cond


def one_line_error(rc, err, needles, what, codes=(1, 2)):
    """Bad input's answer: an error exit code (not a signal), one line on stderr, naming each of
    `needles` (a string or a list of strings)."""
    needles = [needles] if isinstance(needles, str) else needles
    lines = [line for line in err.splitlines() if line.strip()]
    check(rc in codes, f"{what}: exit code {rc}, expected one of {codes}")
    check(len(lines) == 1, f"{what}: {len(lines)} lines on stderr, expected one: {err!r}")
    for n in needles:
        check(n in err, f"{what}: stderr lacks {n!r}: {err!r}")


def finish():
    """The exit code of a test file: 1 if any check failed."""
    print(f"{len(failures)} failed" if failures else "all passed")
    return 1 if failures else 0
