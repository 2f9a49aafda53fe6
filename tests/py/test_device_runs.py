#!/usr/bin/env python3
"""graft train on the CUDA device against the same run on the CPU, head only and --fine-tune 2: a
small EfficientNet-Lite0 (the pretrained weights converted for 64x64 input) on 12 sample photos,
2 epochs. Per epoch, the device's loss, accuracy, val_loss and val_accuracy match the CPU's within
1e-5 (absolute; the device sums in another order), and so do the test split's loss and confusion
matrix; two runs on the device agree bit for bit. graft eval and graft predict with the trained
model give the CPU's loss and probabilities on the device, within the same bound. With GRAFT_TEST_SHAPES=small (the sanitized
emulation, where the device is slowest) only --fine-tune 2 runs, once on each. On a machine without a CUDA device (and not the
emulated build) it skips (77), or fails with GRAFT_REQUIRE_GPU=1. Standard library only; run by
ctest with GRAFT_BIN and GRAFT_SOURCE_DIR set. Exit 0: pass, 1: fail, 77: skip."""
import json
import os
import sys
import tempfile

from cli_util import PHOTOS, SRC, check, finish, make_data, run

PTH = os.path.join(SRC, ".cache", "efficientnet-lite0-57934424.pth")
TOL = 1e-5
FIELDS = ("loss", "accuracy", "val_loss", "val_accuracy")


def train(tmp, name, data, model, device, *extra):
    """The run's per-epoch metrics and its test evaluation, or None if it failed."""
    out = os.path.join(tmp, name)
    rc, _, err = run("train", "--data", data, "--backbone", model, "--out", out, "--device",
                     device, "--epochs", "2", "--batch-size", "4", "--seed", "7", "--no-progress",
                     *extra, timeout=1200)
    if rc != 0:
        return None, err
    with open(os.path.join(out, "metrics.jsonl")) as f:
        lines = [json.loads(line) for line in f]
    epochs = [e for e in lines if "epoch" in e]
    tests = [e for e in lines if e.get("split") == "test"]
    return (epochs, tests[-1] if tests else None), err


def compare(what, cpu, dev):
    (ce, ct), (de, dt) = cpu, dev
    check(len(ce) == len(de) == 2, f"{what}: 2 epochs each ({len(ce)}, {len(de)})")
    for c, d in zip(ce, de):
        for k in FIELDS:
            diff = abs(c[k] - d[k])
            check(diff <= TOL, f"{what} epoch {c['epoch']} {k}: cpu {c[k]} cuda {d[k]} "
                               f"(differ by {diff:.2e} > {TOL})")
    check(ct is not None and dt is not None, f"{what}: both runs evaluate the test split")
    if ct and dt:
        check(abs(ct["loss"] - dt["loss"]) <= TOL, f"{what} test loss: {ct['loss']} {dt['loss']}")
        check(ct["confusion"] == dt["confusion"], f"{what} test confusion matrices differ")


def strip_times(result):
    epochs, test = result
    keep = [{k: v for k, v in e.items() if k in ("epoch",) + FIELDS} for e in epochs]
    return keep, test


def main():
    for path in (PTH, PHOTOS):
        if not os.path.exists(path):
            print(f"SKIP: {path} is missing (scripts/setup.sh fetches it)")
            return 77
    with tempfile.TemporaryDirectory() as tmp:
        model = os.path.join(tmp, "lite0_64.safetensors")
        rc, _, err = run("convert", PTH, "-o", model, "--arch", "efficientnet_lite0",
                         "--input-size", "64")
        if not check(rc == 0, f"convert at 64x64: exit {rc}, {err!r}"):
            return finish()
        data = make_data(tmp)
        small = os.environ.get("GRAFT_TEST_SHAPES") == "small"
        settings = [("head only", ()), ("--fine-tune 2", ("--fine-tune", "2"))]
        for what, extra in settings[1:] if small else settings:
            tag = what.replace(" ", "_").replace("-", "")
            dev, err = train(tmp, "cuda_" + tag, data, model, "cuda", *extra)
            if dev is None and "--device cuda:" in err:
                if os.environ.get("GRAFT_REQUIRE_GPU") == "1":
                    check(False, f"GRAFT_REQUIRE_GPU=1 but {err.strip()}")
                    return finish()
                print(f"SKIP: {err.strip()}")
                return 77
            if not check(dev is not None, f"{what} on cuda failed: {err!r}"):
                continue
            cpu, err = train(tmp, "cpu_" + tag, data, model, "cpu", *extra)
            if not check(cpu is not None, f"{what} on cpu failed: {err!r}"):
                continue
            compare(what, cpu, dev)
            if small:
                continue
            again, err = train(tmp, "cuda2_" + tag, data, model, "cuda", *extra)
            if check(again is not None, f"{what} on cuda, again, failed: {err!r}"):
                check(strip_times(again) == strip_times(dev),
                      f"{what}: two runs on cuda differ: {strip_times(dev)} {strip_times(again)}")
        trained = os.path.join(tmp, "cuda_finetune_2", "model.safetensors")
        if check(os.path.exists(trained), f"the fine-tuned run wrote {trained}"):
            eval_and_predict(trained, data)
    return finish()


def eval_and_predict(model, data):
    photo = os.path.join(data, "a", "0_astronaut.png")
    got = {}
    for device in ("cpu", "cuda"):
        rc, out, err = run("eval", "--model", model, "--data", data, "--device", device)
        if check(rc == 0, f"eval --device {device}: exit {rc}, {err!r}"):
            got["eval", device] = json.loads(out.strip().splitlines()[-1])
        rc, out, err = run("predict", "--model", model, "--device", device, "--top", "2", photo)
        if check(rc == 0, f"predict --device {device}: exit {rc}, {err!r}"):
            got["predict", device] = json.loads(out.strip().splitlines()[-1])["top"]
    if ("eval", "cpu") in got and ("eval", "cuda") in got:
        c, d = got["eval", "cpu"], got["eval", "cuda"]
        check(abs(c["loss"] - d["loss"]) <= TOL, f"eval loss: cpu {c['loss']} cuda {d['loss']}")
        check(c["confusion"] == d["confusion"], "eval confusion matrices differ")
    if ("predict", "cpu") in got and ("predict", "cuda") in got:
        c, d = got["predict", "cpu"], got["predict", "cuda"]
        check([t["label"] for t in c] == [t["label"] for t in d], f"predict: {c} vs {d}")
        check(all(abs(a["prob"] - b["prob"]) <= TOL for a, b in zip(c, d)),
              f"predict probabilities: {c} vs {d}")


if __name__ == "__main__":
    sys.exit(main())
