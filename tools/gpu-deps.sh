#!/usr/bin/env bash
# Prepares, on a development machine, what tools/gpu-check.sh needs on a GPU machine that cannot
# download anything: Debian's packages of graft's build dependencies, unpacked into .gpudeps/root
# (a prefix CMake searches), the fish photos the checks train on, and a record of the source tree
# (.gpudeps/tree.json). Copy .gpudeps, models and .cache/photos to the GPU machine with the
# sources; run this again whenever the sources change before a copy.
#
#   tools/gpu-deps.sh          # everything (downloads the packages)
#   tools/gpu-deps.sh --tree   # only the tree record, just before copying: nothing downloaded
set -euo pipefail
cd "$(dirname "$0")/.."
record_tree() {
  mkdir -p .gpudeps
  git rev-parse HEAD >.gpudeps/commit
  # The commit, whether the working tree differs from it, and a sha256 per file: tools/gpu-check.sh
  # hashes the tree it runs on against it, since the GPU machine may get the sources without .git.
  python3 tools/gpu_tree.py record .gpudeps/tree.json
  if [ -n "$(git status --porcelain)" ]; then
    echo "gpu-deps: warning: the working tree differs from $(cat .gpudeps/commit); the GPU summary" \
      "says so (git_dirty), and a file changed after this moment shows in tree.matches" >&2
  fi
}
if [ "${1:-}" = --tree ]; then
  record_tree
  exit
fi
PKGS=(libturbojpeg0 libturbojpeg0-dev libpng16-16 libpng-dev zlib1g-dev nlohmann-json3-dev
      libcli11-dev libgtest-dev libbenchmark-dev libbenchmark1debian)
rm -rf .gpudeps && mkdir -p .gpudeps/debs .gpudeps/root
(cd .gpudeps/debs && apt-get download "${PKGS[@]}" >/dev/null)
for deb in .gpudeps/debs/*.deb; do dpkg -x "$deb" .gpudeps/root; done
rm -rf .gpudeps/debs
# zlib's development link is absolute and versioned; point it at the soname every distro has.
ln -sf /lib/x86_64-linux-gnu/libz.so.1 .gpudeps/root/usr/lib/x86_64-linux-gnu/libz.so
# The fish photos live outside the repository; the GPU machine gets a copy that is never committed.
if [ -d ../shared/data/fish ]; then
  rm -rf .gpudeps/fish && cp -r ../shared/data/fish .gpudeps/fish
fi
record_tree # last, so it describes the tree as it is copied
# What the GPU machine needs beside the sources, and its size.
du -shc .gpudeps models .cache/photos 2>/dev/null
