#!/usr/bin/env bash
# Prepares, on a development machine, what tools/gpu-check.sh needs on a GPU machine that cannot
# download anything: Debian's packages of graft's build dependencies, unpacked into .gpudeps/root
# (a prefix CMake searches), and the real photos and weights the checks use. Copy .gpudeps,
# models and .cache/photos to the GPU machine with the sources.
set -euo pipefail
cd "$(dirname "$0")/.."
PKGS=(libturbojpeg0 libturbojpeg0-dev libpng16-16 libpng-dev zlib1g-dev nlohmann-json3-dev
      libcli11-dev libgtest-dev libbenchmark-dev libbenchmark1debian)
rm -rf .gpudeps && mkdir -p .gpudeps/debs .gpudeps/root
(cd .gpudeps/debs && apt-get download "${PKGS[@]}" >/dev/null)
for deb in .gpudeps/debs/*.deb; do dpkg -x "$deb" .gpudeps/root; done
rm -rf .gpudeps/debs
# zlib's development link is absolute and versioned; point it at the soname every distro has.
ln -sf /lib/x86_64-linux-gnu/libz.so.1 .gpudeps/root/usr/lib/x86_64-linux-gnu/libz.so
git rev-parse HEAD > .gpudeps/commit 2>/dev/null || true
# The summary names this commit: say so when the working tree differs from it.
if ! git diff --quiet HEAD 2>/dev/null; then
  echo "gpu-deps: warning: uncommitted changes; the GPU summary will name $(cat .gpudeps/commit)" >&2
fi
# The fish photos live outside the repository; the GPU machine gets a copy that is never committed.
if [ -d ../shared/data/fish ]; then
  rm -rf .gpudeps/fish && cp -r ../shared/data/fish .gpudeps/fish
fi
# What the GPU machine needs beside the sources, and its size.
du -shc .gpudeps models .cache/photos 2>/dev/null
