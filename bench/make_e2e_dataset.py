#!/usr/bin/env python3
"""Makes the end-to-end benchmark's photo folder: COUNT JPEGs at phone-camera sizes, one
sub-folder per class, from a small folder of real photos (one sub-folder per class).

    python3 bench/make_e2e_dataset.py SRC OUT [--count 6000] [--seed 1] [--workers N]
        [--sizes WxH,...]
    python3 bench/make_e2e_dataset.py --bench-sample DATA DIR

Each output image takes a source photo of its class (classes in turn, the photo at random), a
random crop of 50-100% of each side (so the aspect ratio jitters too), brightness and contrast
jitter of +-10%, a resize to one of the sizes phones shoot at, gaussian noise of sigma 3 and a
JPEG save at quality 85-95 with 4:2:0 chroma. Upsampling the ~384 px sources is fine: the
benchmark is about the cost of decoding photos of real size, and the noise keeps the files as
large as a camera's (a flat upscale compresses to a fraction of that).

--sizes replaces the phone sizes, e.g. --sizes 256x256 for photos that need no resize before
the 224 centre crop (the shorter side is already 224 / 0.875): a folder where decoding costs
little, for measuring how busy the GPU stays when decoding is not the limit.

The output depends only on SRC, --count and --seed, never on the number of workers. Files
already in OUT with the expected name are kept (a run that was cut short resumes), so remove
OUT to regenerate. Needs numpy and Pillow.

--bench-sample copies photos of DATA into DIR in the layout bench/bench_loader.cpp reads from
$GRAFT_BENCH_PHOTOS (16 photos each of 1080x1440 and 3024x4032, either orientation, as
SIZE/photoN.jpg), so that bench_loader and bench/pil_decode.py time the same files.
"""
import argparse
import multiprocessing
import os
import shutil
import sys
import time

import numpy as np
from PIL import Image, ImageEnhance

# Width x height, portrait and landscape, as phone cameras save them: 12 MP (4:3 both ways),
# 1.5 MP (a messaging app's re-encode, both ways) and 9 MP (a 16:9 crop).
SIZES = [(3024, 4032), (4032, 3024), (1080, 1440), (1440, 1080), (2268, 4032)]
NOISE_SIGMA = 3.0
NOISE_TILE = 1024  # noise comes from one shared tile, rolled per image: far cheaper than fresh noise
EXTENSIONS = ('.jpg', '.jpeg', '.png')


def list_sources(src):
    classes = sorted(d for d in os.listdir(src)
                     if os.path.isdir(os.path.join(src, d)) and not d.startswith('.'))
    sources = {}
    for c in classes:
        files = sorted(f for f in os.listdir(os.path.join(src, c))
                       if f.lower().endswith(EXTENSIONS) and not f.startswith('.'))
        if files:
            sources[c] = [os.path.join(src, c, f) for f in files]
    return sources


_noise = None  # per worker: int16 tile of shape (NOISE_TILE, NOISE_TILE, 3)


def init_worker(seed):
    global _noise
    # The same tile in every worker (seeded), so the output does not depend on which worker
    # made which image.
    rng = np.random.default_rng([seed, 0xC0FFEE])
    _noise = np.rint(rng.normal(0.0, NOISE_SIGMA, (NOISE_TILE, NOISE_TILE, 3))).astype(np.int16)


def add_noise(pixels, rng):
    """pixels: uint8 HxWx3. Adds the noise tile, repeated over the image from a random offset."""
    h, w, _ = pixels.shape
    tile = np.roll(_noise, (int(rng.integers(NOISE_TILE)), int(rng.integers(NOISE_TILE))), (0, 1))
    out = pixels.astype(np.int16)
    for y in range(0, h, NOISE_TILE):  # block by block: no image-sized noise array
        for x in range(0, w, NOISE_TILE):
            block = out[y:y + NOISE_TILE, x:x + NOISE_TILE]
            block += tile[:block.shape[0], :block.shape[1]]
    np.clip(out, 0, 255, out=out)
    return out.astype(np.uint8)


def make_one(job):
    """job: (index, class name, candidate source paths, output path, seed, sizes) -> bytes
    written."""
    i, cls, paths, out_path, seed, sizes = job
    if os.path.exists(out_path):
        return os.path.getsize(out_path)
    rng = np.random.default_rng([seed, i])  # per image: independent of the worker's history
    src = paths[int(rng.integers(len(paths)))]
    with Image.open(src) as im:
        im = im.convert('RGB')
    sw, sh = im.size
    cw = max(1, int(round(sw * rng.uniform(0.5, 1.0))))
    ch = max(1, int(round(sh * rng.uniform(0.5, 1.0))))
    x0, y0 = int(rng.integers(sw - cw + 1)), int(rng.integers(sh - ch + 1))
    im = im.crop((x0, y0, x0 + cw, y0 + ch))
    # Colour jitter on the small crop: the same result as after the resize, for a fraction of
    # the work (both are per-pixel affine maps).
    im = ImageEnhance.Brightness(im).enhance(rng.uniform(0.9, 1.1))
    im = ImageEnhance.Contrast(im).enhance(rng.uniform(0.9, 1.1))
    w, h = sizes[int(rng.integers(len(sizes)))]
    im = im.resize((w, h), Image.BICUBIC)
    pixels = add_noise(np.asarray(im), rng)
    quality = int(rng.integers(85, 96))
    tmp = out_path + '.tmp'
    # subsampling=2 is 4:2:0, what phone cameras write.
    Image.fromarray(pixels).save(tmp, 'JPEG', quality=quality, subsampling=2)
    os.replace(tmp, out_path)  # a file under its final name is always whole
    return os.path.getsize(out_path)


# bench_loader's sub-folders and how many photos it reads from each (kSizes, kPerSize).
BENCH_SIZES = {'1080x1440': {(1080, 1440), (1440, 1080)}, '3024x4032': {(3024, 4032), (4032, 3024)}}
BENCH_PER_SIZE = 16


def bench_sample(data, out):
    """The first photos of DATA (sorted by path) of each bench_loader size, copied into OUT."""
    picked = {name: [] for name in BENCH_SIZES}
    for root, dirs, files in sorted(os.walk(data)):
        dirs.sort()
        for f in sorted(files):
            if not f.lower().endswith(('.jpg', '.jpeg')):
                continue
            path = os.path.join(root, f)
            with Image.open(path) as im:  # reads the header only
                size = im.size
            for name, sizes in BENCH_SIZES.items():
                if size in sizes and len(picked[name]) < BENCH_PER_SIZE:
                    picked[name].append(path)
        if all(len(p) == BENCH_PER_SIZE for p in picked.values()):
            break
    for name, paths in picked.items():
        os.makedirs(os.path.join(out, name), exist_ok=True)
        for i, p in enumerate(paths):
            shutil.copyfile(p, os.path.join(out, name, f'photo{i}.jpg'))
        if len(paths) < BENCH_PER_SIZE:
            # bench_loader would fill the gap with its synthetic photos: say so.
            print(f'make_e2e_dataset: only {len(paths)} photos of {name} in {data}', file=sys.stderr)
    total = sum(len(p) for p in picked.values())
    print(f'make_e2e_dataset: decode sample of {total} photos in {out} '
          f'({", ".join(f"{len(p)} of {n}" for n, p in picked.items())})')


def parse_sizes(text):
    """'3024x4032,1080x1440' -> [(3024, 4032), (1080, 1440)]; a clear message on bad input."""
    try:
        sizes = [tuple(int(v) for v in part.lower().split('x')) for part in text.split(',') if part]
    except ValueError:
        sizes = []
    if not sizes or any(len(s) != 2 or min(s) < 1 for s in sizes):
        sys.exit(f'make_e2e_dataset: --sizes {text!r}: expected WxH[,WxH...], e.g. 256x256')
    return sizes


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('src', help='folder of real photos, one sub-folder per class')
    ap.add_argument('out', help='output folder (created), same class sub-folders')
    ap.add_argument('--count', type=int, default=6000)
    ap.add_argument('--seed', type=int, default=1)
    ap.add_argument('--workers', type=int, default=os.cpu_count() or 1)
    ap.add_argument('--sizes', default=','.join(f'{w}x{h}' for w, h in SIZES),
                    help='output sizes WxH, comma-separated (default: the phone sizes)')
    ap.add_argument('--bench-sample', action='store_true',
                    help='copy a decode sample of SRC into OUT in bench_loader\'s layout')
    args = ap.parse_args()
    if args.bench_sample:
        return bench_sample(args.src, args.out)

    sizes = parse_sizes(args.sizes)
    sources = list_sources(args.src)
    if not sources:
        sys.exit(f'make_e2e_dataset: no photos in class sub-folders of {args.src}')
    classes = sorted(sources)
    for c in classes:
        d = os.path.join(args.out, c)
        os.makedirs(d, exist_ok=True)
        for f in os.listdir(d):  # half-written files of a run that was killed
            if f.endswith('.tmp'):
                os.remove(os.path.join(d, f))
    jobs = []
    for i in range(args.count):
        c = classes[i % len(classes)]  # classes in turn: balanced
        jobs.append((i, c, sources[c], os.path.join(args.out, c, f'e2e_{i:05d}.jpg'), args.seed,
                     sizes))

    t0 = time.perf_counter()
    total = 0
    with multiprocessing.Pool(args.workers, initializer=init_worker, initargs=(args.seed,)) as pool:
        for n, size in enumerate(pool.imap_unordered(make_one, jobs, chunksize=4), 1):
            total += size
            if n % 500 == 0:
                print(f'  {n}/{len(jobs)}', file=sys.stderr, flush=True)
    seconds = time.perf_counter() - t0
    print(f'make_e2e_dataset: {len(jobs)} images in {len(classes)} classes under {args.out}, '
          f'{total / 1e6:.1f} MB ({total / max(len(jobs), 1) / 1e6:.2f} MB per image), '
          f'{seconds:.1f} s with {args.workers} workers')


if __name__ == '__main__':
    main()
