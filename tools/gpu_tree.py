#!/usr/bin/env python3
"""Which source tree a GPU check ran on. The GPU machine may get the sources without .git, so
tools/gpu-deps.sh records here, on the development machine, the commit, whether the working tree
differed from it, and a sha256 per file (tracked, plus untracked files git does not ignore: both
are copied); tools/gpu-check.sh then hashes the tree it runs on against that record.

  gpu_tree.py record .gpudeps/tree.json   # development machine, inside the git checkout
  gpu_tree.py check [.gpudeps/tree.json]  # GPU machine: prints the tree's JSON record

check prints {source, commit, dirty, matches, differing, ...}: source is "git" when .git is
there (then commit and dirty come from git itself), else "manifest" (from the record, and
matches says whether every recorded file hashes the same here), else "none".
Standard library only."""
import datetime
import hashlib
import json
import os
import subprocess
import sys

SHOWN = 20  # differing files named in the record; the count says how many there were


def git(*args):
    """git's stdout, or None where there is no git or no repository."""
    try:
        r = subprocess.run(["git", *args], capture_output=True, text=True, check=False)
    except OSError:
        return None
    return r.stdout if r.returncode == 0 else None


def sha256(path):
    h = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    except OSError:
        return None  # absent (deleted in the working tree) or unreadable
    return h.hexdigest()


def record():
    """The manifest of the working tree as it is now."""
    head = git("rev-parse", "HEAD")
    porcelain = git("status", "--porcelain")
    listed = git("ls-files", "-z", "--cached", "--others", "--exclude-standard")
    if head is None or porcelain is None or listed is None:
        raise SystemExit("gpu_tree.py: record: not inside a git checkout (git rev-parse failed)")
    names = sorted(set(n for n in listed.split("\0") if n))
    return {
        "commit": head.strip(),
        "dirty": bool(porcelain.strip()),
        "dirty_files": porcelain.splitlines()[:SHOWN],
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "files": {n: sha256(n) for n in names},
    }


def compare(files, root="."):
    """Recorded files whose hash differs here (or that are missing), sorted."""
    return sorted(n for n, h in files.items() if sha256(os.path.join(root, n)) != h)


def check(manifest_path, root="."):
    manifest, error = None, None
    if manifest_path and os.path.exists(manifest_path):
        try:
            with open(manifest_path, encoding="utf-8") as f:
                manifest = json.load(f)
            files = dict(manifest["files"])
        except (OSError, ValueError, KeyError, TypeError) as e:
            manifest, error = None, f"{manifest_path}: not a tree record ({e})"
    out = {"source": "none", "commit": None, "dirty": None, "matches": None,
           "differing": [], "differing_count": 0}
    if error:
        out["error"] = error
    if manifest is not None:
        diff = compare(files, root)
        out.update(source="manifest", commit=manifest.get("commit"), dirty=manifest.get("dirty"),
                   dirty_files=manifest.get("dirty_files", []), matches=not diff,
                   differing=diff[:SHOWN], differing_count=len(diff),
                   recorded=manifest.get("date"), files=len(files))
    head = git("-C", root, "rev-parse", "HEAD") if os.path.exists(os.path.join(root, ".git")) else None
    if head is not None:
        porcelain = git("-C", root, "status", "--porcelain") or ""
        if manifest is not None:
            out["manifest_commit"], out["manifest_matches"] = out["commit"], out["matches"]
        # git describes the tree it sits in: the commit, and the dirty flag for anything beyond.
        out.update(source="git", commit=head.strip(), dirty=bool(porcelain.strip()),
                   dirty_files=porcelain.splitlines()[:SHOWN], matches=True)
    if out["source"] == "none":
        out["reason"] = "no .git and no tree record (run tools/gpu-deps.sh before copying)"
    return out


def main(argv):
    if len(argv) >= 2 and argv[0] == "record":
        rec = record()
        os.makedirs(os.path.dirname(os.path.abspath(argv[1])), exist_ok=True)
        tmp = argv[1] + ".tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(rec, f, indent=0, sort_keys=True)
        os.replace(tmp, argv[1])
        print(f"{argv[1]}: {len(rec['files'])} files, commit {rec['commit'][:12]}"
              f"{' (working tree differs from it)' if rec['dirty'] else ''}")
        return 0
    if argv and argv[0] == "check":
        print(json.dumps(check(argv[1] if len(argv) > 1 else ".gpudeps/tree.json"), indent=1))
        return 0
    print(__doc__.split("\n\n")[1], file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
