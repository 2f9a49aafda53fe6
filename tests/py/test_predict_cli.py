#!/usr/bin/env python3
"""graft predict and the --data folder errors as a user meets them: predict --device, its
probabilities on the sample photos the same as the CPU-only predict gave before it ran through the
device-dispatched ops (recorded below), printed to six decimals; eval and train naming a missing
--data folder, a file given as --data, and a class folder the model lacks (with the model's
labels). Standard library only; run by ctest with GRAFT_BIN and GRAFT_SOURCE_DIR set.
Exit 0: pass, 1: fail, 77: skip."""
import decimal
import json
import os
import re
import shutil
import sys
import tempfile

from cli_util import GRAFT, MODEL, PHOTOS, check, finish, one_line_error, run


# `graft predict --top 3` on .cache/photos with the CPU-only path predict used before --device
# (commit 49466db): photo -> [(index, label, probability)].
EXPECTED = {
    "astronaut.png": [(450, "bobsled", 0.13094542920589447),
                      (560, "football helmet", 0.12405558675527573),
                      (573, "go-kart", 0.06870724260807037)],
    "chelsea.png": [(282, "tiger cat", 0.37888938188552856),
                    (285, "Egyptian cat", 0.37524130940437317),
                    (281, "tabby", 0.16779284179210663)],
    "coffee.png": [(967, "espresso", 0.9566514492034912),
                   (968, "cup", 0.013636266812682152),
                   (925, "consomme", 0.006906557362526655)],
    "motorcycle_left.png": [(665, "moped", 0.581568717956543),
                            (670, "motor scooter", 0.11647957563400269),
                            (535, "disk brake", 0.06531491875648499)],
    "rocket.jpg": [(657, "missile", 0.4219534993171692),
                   (744, "projectile", 0.2700105607509613),
                   (540, "drilling platform", 0.044740449637174606)],
}


def have_model_and_photos():
    if os.path.exists(MODEL) and os.path.isdir(PHOTOS):
        return True
    print("skip the photo checks: run scripts/setup.sh for the model and .cache/photos")
    return False


def test_predict_matches_the_recorded_probabilities():
    if not have_model_and_photos():
        return
    # Batch 2 leaves a partial last batch; batch 8 holds all five photos in one.
    for batch in ("2", "8"):
        rc, out, err = run("predict", "--model", MODEL, "--top", "3", "--device", "cpu",
                           "--batch-size", batch, PHOTOS)
        check(rc == 0, f"predict --device cpu --batch-size {batch}: exit {rc}, {err!r}")
        seen = set()
        for line in out.splitlines():
            row = json.loads(line)
            name = os.path.basename(row["path"])
            seen.add(name)
            want = EXPECTED.get(name)
            if want is None:
                continue  # a photo added to the set since the values were recorded
            got = [(t["index"], t["label"], t["prob"]) for t in row["top"]]
            check([g[:2] for g in got] == [w[:2] for w in want],
                  f"{name}: classes {got} != {want}")
            for (_, label, p), (_, _, q) in zip(got, want):
                check(abs(p - q) <= 1e-5, f"{name} {label}: probability {p} != {q} within 1e-5")
        check(set(EXPECTED) <= seen, f"predict printed {sorted(seen)}, expected {sorted(EXPECTED)}")


def test_predict_prints_six_decimals():
    if not have_model_and_photos():
        return
    rc, out, err = run("predict", "--model", MODEL, "--top", "50", "--device", "cpu", PHOTOS)
    check(rc == 0, f"predict --top 50: exit {rc}, {err!r}")
    probs = re.findall(r'"prob":([^,}\]]+)', out)
    check(len(probs) == 50 * len(EXPECTED), f"{len(probs)} probabilities printed")
    for s in probs:
        exponent = decimal.Decimal(s).as_tuple().exponent
        check(exponent >= -6, f"probability {s} has more than six decimals")
    # Not merely truncated: a six-digit value occurs (rounding to fewer would also pass above).
    check(any(len(s) == 8 and s.startswith("0.") for s in probs),
          f"no probability printed as 0.dddddd: {probs[:5]}")


def test_predict_device_option():
    rc, out, _ = run("predict", "--help")
    check(rc == 0 and "--device" in out, "predict --help lists --device")
    rc, _, err = run("predict", "--model", MODEL, "--device", "tpu", PHOTOS)
    check(rc != 0 and "--device" in err, f"predict --device tpu is refused: {rc} {err!r}")
    if not have_model_and_photos():
        return
    rc, out, err = run("predict", "--model", MODEL, "--device", "auto", "--top", "1",
                       os.path.join(PHOTOS, "coffee.png"))
    check(rc == 0 and "espresso" in out, f"predict --device auto: {rc} {out!r} {err!r}")


def test_data_folder_errors(tmp):
    if not os.path.exists(MODEL):
        print("skip the --data checks: run scripts/setup.sh for the model")
        return
    missing = os.path.join(tmp, "no_such_folder")
    rc, _, err = run("eval", "--model", MODEL, "--data", missing, "--device", "cpu")
    one_line_error(rc, err, [missing, "does not exist"], "eval --data on a missing path")
    check("not a folder" not in err, f"a missing path is not called 'not a folder': {err!r}")
    out_dir = os.path.join(tmp, "run")
    rc, _, err = run("train", "--data", missing, "--backbone", MODEL, "--out", out_dir,
                     "--device", "cpu")
    one_line_error(rc, err, [missing, "does not exist"], "train --data on a missing path")

    a_file = os.path.join(tmp, "photo.jpg")
    with open(a_file, "w") as f:
        f.write("a file, not a folder")
    rc, _, err = run("eval", "--model", MODEL, "--data", a_file, "--device", "cpu")
    one_line_error(rc, err, [a_file, "not a folder"], "eval --data on a file")
    check("does not exist" not in err, f"a file is not called missing: {err!r}")

    # The pretrained model's 1000 ImageNet labels: the first 20 are listed, then a count.
    data = os.path.join(tmp, "data")
    for cls in ("espresso", "zebra crossing"):
        os.makedirs(os.path.join(data, cls))
    rc, _, err = run("eval", "--model", MODEL, "--data", data, "--device", "cpu")
    one_line_error(rc, err, ["'zebra crossing'", "1000 classes", "'tench'", "'goldfish'",
                             "... and 980 more"], "eval with a class the model lacks")
    check(len(err) < 1000, f"the class list is cut short: {len(err)} characters")


def main():
    if not GRAFT or not os.path.exists(GRAFT):
        print("skip: GRAFT_BIN is not set to a built graft")
        return 77
    tmp = tempfile.mkdtemp(prefix="graft-predict-")
    try:
        test_predict_matches_the_recorded_probabilities()
        test_predict_prints_six_decimals()
        test_predict_device_option()
        test_data_folder_errors(tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return finish()


if __name__ == "__main__":
    sys.exit(main())
