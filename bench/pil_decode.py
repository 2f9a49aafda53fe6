#!/usr/bin/env python3
"""Decode + resize throughput of torchvision's ImageFolder path, per core, for comparison with
bench/bench_loader.cpp on the same photos.

Each image goes through what ImageFolder's default loader and the usual evaluation transforms
do: PIL open + convert("RGB") (a full-size decode: torchvision does not call Image.draft), then
Resize(256) (PIL bilinear, antialiased) and CenterCrop(224), then np.asarray for the uint8
pixels, as graft's loader produces uint8 too. One process, one thread: images/s is per core.
torchvision's transforms are used when installed, an equivalent of them otherwise.

    python3 bench/pil_decode.py [--draft] [FOLDER]   (default: the folder bench_loader writes)

--draft adds Image.draft("RGB", (256, 256)) before convert: libjpeg's DCT-scaled decode, which
ImageFolder does not do but a tuned PIL pipeline could; it shows how much of the gap is scaling.

Prints one line per photo size: images/s (wall) and images per CPU second.
"""
import os
import sys
import tempfile
import time

import numpy as np
from PIL import Image

try:
    from torchvision import transforms

    _TRANSFORM = transforms.Compose([transforms.Resize(256), transforms.CenterCrop(224)])
    BACKEND = "torchvision transforms"
except ImportError:
    _TRANSFORM = None
    BACKEND = "torchvision-equivalent PIL code"


def resize_center_crop(img, size=256, crop=224):
    """torchvision Resize(size) + CenterCrop(crop) on a PIL image, without torchvision."""
    w, h = img.size
    short, long = (w, h) if w <= h else (h, w)
    new_long = int(size * long / short)
    new_w, new_h = (size, new_long) if w <= h else (new_long, size)
    img = img.resize((new_w, new_h), Image.BILINEAR)
    top = int(round((new_h - crop) / 2.0))
    left = int(round((new_w - crop) / 2.0))
    return img.crop((left, top, left + crop, top + crop))


DRAFT = False


def load(path):
    # torchvision.datasets.folder.pil_loader
    with open(path, "rb") as f:
        img = Image.open(f)
        if DRAFT:
            img.draft("RGB", (256, 256))
        img = img.convert("RGB")
    img = _TRANSFORM(img) if _TRANSFORM else resize_center_crop(img)
    return np.asarray(img)


def bench(paths, min_seconds=3.0):
    for p in paths:  # warm the page cache and the code paths
        load(p)
    n = 0
    wall0, cpu0 = time.perf_counter(), time.process_time()
    while True:
        for p in paths:
            out = load(p)
            assert out.shape == (224, 224, 3)
        n += len(paths)
        if time.perf_counter() - wall0 >= min_seconds:
            break
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    return n / wall, n / cpu


def main():
    global DRAFT
    args = sys.argv[1:]
    if "--draft" in args:
        DRAFT = True
        args.remove("--draft")
    default = os.environ.get("GRAFT_BENCH_PHOTOS") or os.path.join(
        tempfile.gettempdir(), "graft_bench_photos")
    root = args[0] if args else default
    sets = {}
    for sub in sorted(os.listdir(root)):
        d = os.path.join(root, sub)
        if os.path.isdir(d):
            sets[sub] = sorted(os.path.join(d, f) for f in os.listdir(d) if f.endswith(".jpg"))
    if not sets:
        sys.exit(f"no photos under {root}: run bench_loader first")
    sets["mixed"] = [p for ps in list(sets.values()) for p in ps]
    draft = ", draft" if DRAFT else ""
    print(f"PIL {Image.__version__} ({BACKEND}{draft}), one thread, photos under {root}")
    for name, paths in sets.items():
        rate, per_cpu = bench(paths)
        print(f"{name:>10}: {len(paths):3d} files  {rate:8.1f} images/s  {per_cpu:8.1f} images/cpu_s")


if __name__ == "__main__":
    main()
