#!/usr/bin/env python3
"""Generates the demo's photo folder: one sub-folder per class of drawn shapes (circle, square,
triangle, star) on textured backgrounds, as JPEG and PNG files of assorted sizes, deterministic
for a seed. It stands in for a user's photos on machines that have no real labelled set; the
fish photos in ../shared/data/fish are the real-data check. Needs numpy and Pillow."""
import argparse
import math
import os

import numpy as np
from PIL import Image, ImageDraw, ImageFilter


def background(rng, w, h):
    """Smooth colour gradient plus noise, so no two images share pixels."""
    c0, c1 = rng.integers(0, 256, 3), rng.integers(0, 256, 3)
    t = np.linspace(0, 1, w)[None, :, None] if rng.random() < 0.5 else np.linspace(0, 1, h)[:, None, None]
    img = c0 * (1 - t) + c1 * t + rng.normal(0, 12, (h, w, 3))
    return Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))


def draw_shape(draw, kind, cx, cy, r, angle, colour):
    if kind == "circle":
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=colour)
        return
    points = {"square": 4, "triangle": 3, "star": 10}[kind]
    pts = []
    for i in range(points):
        rr = r * (0.45 if kind == "star" and i % 2 else 1.0)
        a = angle + 2 * math.pi * i / points
        pts.append((cx + rr * math.cos(a), cy + rr * math.sin(a)))
    draw.polygon(pts, fill=colour)


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("out")
    ap.add_argument("--per-class", type=int, default=60)
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args()
    rng = np.random.default_rng(args.seed)
    for kind in ("circle", "square", "star", "triangle"):
        os.makedirs(os.path.join(args.out, kind), exist_ok=True)
        for i in range(args.per_class):
            w, h = int(rng.integers(240, 640)), int(rng.integers(240, 640))
            img = background(rng, w, h)
            draw = ImageDraw.Draw(img)
            r = rng.uniform(0.18, 0.4) * min(w, h)
            cx, cy = rng.uniform(r, w - r), rng.uniform(r, h - r)
            colour = tuple(int(v) for v in rng.integers(0, 256, 3))
            draw_shape(draw, kind, cx, cy, r, rng.uniform(0, 2 * math.pi), colour)
            img = img.filter(ImageFilter.GaussianBlur(rng.uniform(0, 1.5)))
            path = os.path.join(args.out, kind, f"{kind}_{i:03d}")
            if i % 5 == 4:
                img.save(path + ".png")
            else:
                img.save(path + ".jpg", quality=int(rng.integers(70, 95)))
    print(f"wrote {4 * args.per_class} images to {args.out}")


if __name__ == "__main__":
    main()
