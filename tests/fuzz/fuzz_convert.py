#!/usr/bin/env python3
"""atheris (libFuzzer for Python) target for tools/convert.py: torch.save zip and legacy
pickle checkpoints and safetensors files, end to end through convert.main().

convert.py promises that any fault in the input is one line on stderr and exit code 2. So an
exception escaping main() is a crash here, and so is a message of several lines or an output
file left behind by a failed run. main() has two ways to fail cleanly: the readers' own
GraftError, which names the fault, and a fallback for exception types a malformed file can
raise anywhere ("unreadable checkpoint (TypeError: ...)"). The fallback is allowed, but each
new kind is printed once, since it marks a place where a reader could say more; with
GRAFT_FUZZ_STRICT=1 it counts as a crash too.

    python3 tests/fuzz/fuzz_convert.py CORPUS_DIR -max_total_time=60 [libFuzzer flags]
"""

import contextlib
import io
import os
import sys
import tempfile

import atheris

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(REPO, 'tools'))

with atheris.instrument_imports():
    import zipfile  # noqa: F401  (instrumented: its parsing is what the zip inputs exercise)
    import graftfile  # noqa: F401
    import convert

STRICT = os.environ.get('GRAFT_FUZZ_STRICT') == '1'
WORK = tempfile.mkdtemp(prefix='graft-fuzz-convert-')
INPUT = os.path.join(WORK, 'input.pt')
OUTPUT = os.path.join(WORK, 'out.safetensors')
seen_fallbacks = set()


def TestOneInput(data):
    with open(INPUT, 'wb') as f:
        f.write(data)
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        # resnet18 because it is the smallest architecture to check a real file against; the
        # readers, which are what gets fuzzed, do not depend on it.
        rc = convert.main([INPUT, '-o', OUTPUT, '--arch', 'resnet18'])
    message = err.getvalue()
    if rc == 0:
        os.remove(OUTPUT)
        return
    if rc != 2 or message.count('\n') != 1:
        raise RuntimeError(f'unclean failure: exit {rc}, stderr {message!r}')
    if os.path.exists(OUTPUT):
        raise RuntimeError('failed run left its output file behind')
    if 'unreadable checkpoint (' in message:
        kind = message.split('unreadable checkpoint (', 1)[1].split(':', 1)[0]
        if STRICT:
            raise RuntimeError(f'fallback error instead of a GraftError: {message.strip()}')
        if kind not in seen_fallbacks:
            seen_fallbacks.add(kind)
            print(f'fuzz_convert: new fallback error kind: {message.strip()[:300]}',
                  file=sys.stderr)


def main():
    atheris.Setup(sys.argv, TestOneInput)
    try:
        atheris.Fuzz()
    finally:
        import shutil
        shutil.rmtree(WORK, ignore_errors=True)


if __name__ == '__main__':
    main()
