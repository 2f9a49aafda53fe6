#!/usr/bin/env python3
"""The graft command line as a user meets it: help for every command, predict's JSON lines, and
bad input answered with a non-zero exit, one line on stderr naming the file, and no output file.
Standard library only; run by ctest with GRAFT_BIN, GRAFT_SOURCE_DIR and GRAFT_BINARY_DIR set.
Exit 0: pass, 1: fail, 77: skip."""
import json
import os
import shutil
import sys
import tempfile

from cli_util import GRAFT, MODEL, PHOTOS, check, finish, one_line_error, run


def test_help():
    for cmd in ([], ["train"], ["eval"], ["predict"], ["inspect"], ["convert"], ["bench"]):
        rc, out, _ = run(*cmd, "--help")
        check(rc == 0 and "usage" in out.lower(), f"graft {' '.join(cmd)} --help")


def test_predict(tmp):
    if not (os.path.exists(MODEL) and os.path.isdir(PHOTOS)):
        print("skip predict: run scripts/setup.sh for the model and photos")
        return
    rc, out, err = run("predict", "--model", MODEL, "--top", "3", PHOTOS)
    check(rc == 0, f"predict on the sample photos: exit {rc}, {err!r}")
    lines = out.splitlines()
    check(len(lines) == len(os.listdir(PHOTOS)), "predict: one line per photo")
    for line in lines:
        row = json.loads(line)
        check(set(row) == {"path", "top"}, f"predict keys {sorted(row)}")
        top = row["top"]
        check(len(top) == 3, "predict --top 3 gives three classes")
        check(all(set(t) == {"index", "label", "prob"} for t in top), "predict entry keys")
        probs = [t["prob"] for t in top]
        check(probs == sorted(probs, reverse=True) and 0 < probs[0] <= 1, "probabilities descend")

    # A non-image among the photos: the rest are classified, the bad one named, exit non-zero.
    bad = os.path.join(tmp, "notes.jpg")
    with open(bad, "w") as f:
        f.write("not a photo")
    rc, out, err = run("predict", "--model", MODEL, bad, os.path.join(PHOTOS, "coffee.png"))
    check(rc == 1, f"predict with a bad file: exit {rc}")
    check(len(out.splitlines()) == 1 and "espresso" in out, "the good photo is still classified")
    check("notes.jpg" in err and len(err.splitlines()) == 2, f"bad file warning + summary: {err!r}")


def test_bad_weight_files(tmp):
    truncated = os.path.join(tmp, "truncated.safetensors")
    with open(truncated, "wb") as f:
        f.write(b"\x10\x00\x00\x00\x00\x00\x00\x00{\"a\":")
    rc, out, err = run("inspect", truncated)
    one_line_error(rc, err, "truncated.safetensors", "inspect a truncated file")
    check(out == "", "inspect prints nothing on stdout for a bad file")

    rc, _, err = run("inspect", os.path.join(tmp, "missing.safetensors"))
    one_line_error(rc, err, "missing.safetensors", "inspect a missing file")

    rc, _, err = run("predict", "--model", truncated, tmp)
    one_line_error(rc, err, "truncated.safetensors", "predict with a bad model")

    data = os.path.join(tmp, "data")
    for cls in ("a", "b"):
        os.makedirs(os.path.join(data, cls))
    out_dir = os.path.join(tmp, "run")
    rc, _, err = run("train", "--data", data, "--backbone", truncated, "--out", out_dir)
    one_line_error(rc, err, "truncated.safetensors", "train with a bad backbone")
    check(not os.path.exists(out_dir), "a rejected run leaves no run folder")

    if os.path.exists(MODEL):
        rc, _, err = run("train", "--data", data, "--backbone", MODEL, "--out", out_dir)
        one_line_error(rc, err, "data", "train on folders without images")
        check(not os.path.exists(out_dir), "a rejected data folder leaves no run folder")

    out_file = os.path.join(tmp, "converted.safetensors")
    rc, _, err = run("convert", truncated, "-o", out_file, "--arch", "resnet18")
    one_line_error(rc, err, "truncated.safetensors", "convert a bad checkpoint")
    check(not os.path.exists(out_file), "a failed conversion leaves no output file")


def main():
    if not GRAFT or not os.path.exists(GRAFT):
        print("skip: GRAFT_BIN is not set to a built graft")
        return 77
    tmp = tempfile.mkdtemp(prefix="graft-cli-")
    try:
        test_help()
        test_predict(tmp)
        test_bad_weight_files(tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return finish()


if __name__ == "__main__":
    sys.exit(main())
