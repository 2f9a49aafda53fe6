#!/usr/bin/env python3
"""graft train's run folder as a user meets it: a non-empty --out is refused (the old run's files
byte-identical) unless --overwrite, an unwritable --out is one line naming the folder and the
reason, --resume says which options it ignores and refuses to go back below finished epochs, and
graft eval reports a class without photos as absent. Standard library only; run by ctest with
GRAFT_BIN and GRAFT_SOURCE_DIR set. Exit 0: pass, 1: fail, 77: skip."""
import json
import os
import shutil
import sys
import tempfile

from cli_util import GRAFT, MODEL, PHOTOS, check, finish, make_data, one_line_error, run


def snapshot(folder):
    files = {}
    for root, _, names in os.walk(folder):
        for n in names:
            path = os.path.join(root, n)
            with open(path, "rb") as f:
                files[path] = f.read()
    return files


def train(data, out, *extra):
    return run("train", "--data", data, "--backbone", MODEL, "--out", out, "--device", "cpu",
               "--no-progress", *extra)


def test_refuse_and_overwrite(tmp, data):
    out = os.path.join(tmp, "run")
    rc, _, err = train(data, out, "--epochs", "1")
    check(rc == 0, f"first run: exit {rc}, {err!r}")
    before = snapshot(out)
    check(len(before) >= 7, f"a run writes its files: {sorted(before)}")

    rc, _, err = train(data, out, "--epochs", "2")
    one_line_error(rc, err, [out, "--overwrite"], "train into a non-empty run folder", codes=(1,))
    check(snapshot(out) == before, "a refused run leaves the old run's files byte-identical")

    rc, _, err = train(data, out, "--epochs", "2", "--overwrite")
    check(rc == 0, f"--overwrite: exit {rc}, {err!r}")
    with open(os.path.join(out, "metrics.jsonl")) as f:
        epochs = [json.loads(l) for l in f if '"epoch"' in l]
    check(len(epochs) == 2, f"--overwrite trains the new run: {len(epochs)} epochs")


def test_unwritable_out(tmp, data):
    plain_file = os.path.join(tmp, "a_file")
    with open(plain_file, "w") as f:
        f.write("x")
    out = os.path.join(plain_file, "run")
    rc, _, err = train(data, out, "--epochs", "1")
    one_line_error(rc, err, [out, "Not a directory"], "--out under a regular file", codes=(1,))
    check(".tmp" not in err, f"the error names the folder, not a temp file: {err!r}")

    if os.geteuid() == 0:
        print("skip the read-only folder case: root may write into any folder")
        return
    locked = os.path.join(tmp, "locked")
    os.makedirs(locked)
    os.chmod(locked, 0o500)
    try:
        out = os.path.join(locked, "run")
        rc, _, err = train(data, out, "--epochs", "1")
        one_line_error(rc, err, [out, "Permission denied"], "--out in a read-only folder", codes=(1,))
    finally:
        os.chmod(locked, 0o700)


def test_resume(tmp, data):
    out = os.path.join(tmp, "resumed")
    rc, _, err = train(data, out, "--epochs", "2")
    check(rc == 0, f"run to resume: exit {rc}, {err!r}")
    before = snapshot(out)

    rc, _, err = run("train", "--resume", out, "--epochs", "1", "--no-progress")
    one_line_error(rc, err, [out, "finished 2 epochs"], "--resume with fewer epochs", codes=(1,))
    check(snapshot(out) == before, "a refused resume leaves the run byte-identical")

    rc, _, err = run("train", "--resume", out, "--epochs", "3", "--learning-rate", "0.1",
                     "--batch-size", "8", "--no-progress")
    check(rc == 0, f"--resume --epochs 3: exit {rc}, {err!r}")
    ignored = [l for l in err.splitlines() if "--resume: ignoring" in l]
    check(len(ignored) == 1 and "--learning-rate" in ignored[0] and "--batch-size" in ignored[0]
          and "--epochs" not in ignored[0], f"the ignored options are named: {err!r}")
    with open(os.path.join(out, "config.json")) as f:
        config = json.load(f)
    check(config["epochs"] == 3 and config["learning_rate"] == 0.005 and config["batch_size"] == 32,
          f"the run's own settings are kept, epochs raised: {config}")
    with open(os.path.join(out, "metrics.jsonl")) as f:
        lines = [json.loads(l) for l in f]
    check([l["epoch"] for l in lines if "epoch" in l] == [1, 2, 3], "epochs 1-3 in metrics.jsonl")
    check(lines[-2].get("kept_epoch") == 3, f"the kept epoch is recorded: {lines[-2]}")


def test_eval_absent_class(tmp, data):
    out = os.path.join(tmp, "run")  # trained by test_refuse_and_overwrite
    only_a = os.path.join(tmp, "only_a")
    shutil.copytree(os.path.join(data, "a"), os.path.join(only_a, "a"))
    rc, stdout, err = run("eval", "--model", os.path.join(out, "model.safetensors"), "--data",
                          only_a, "--device", "cpu")
    check(rc == 0, f"eval on a folder without class b: exit {rc}, {err!r}")
    b = json.loads(stdout)["per_class"]["b"]
    check(b == {"precision": None, "recall": None, "f1": None, "support": 0},
          f"an absent class is reported as absent: {b}")
    check("no photos of b" in err, f"eval says class b has no photos: {err!r}")


def main():
    if not GRAFT or not os.path.exists(GRAFT):
        print("skip: GRAFT_BIN is not set to a built graft")
        return 77
    if not (os.path.exists(MODEL) and os.path.isdir(PHOTOS)):
        print("skip: run scripts/setup.sh for the model and photos")
        return 77
    tmp = tempfile.mkdtemp(prefix="graft-cli-runs-")
    try:
        data = make_data(tmp)
        test_refuse_and_overwrite(tmp, data)
        test_unwritable_out(tmp, data)
        test_resume(tmp, data)
        test_eval_absent_class(tmp, data)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return finish()


if __name__ == "__main__":
    sys.exit(main())
