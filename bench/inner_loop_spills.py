#!/usr/bin/env python3
"""Register spills in the CPU kernels' innermost loops, read off the disassembly.

    python3 bench/inner_loop_spills.py BINARY

For every function of every CPU path (graft::cpu::<path>::..., the register-tiled kernels
inlined into them), finds the innermost loops that do the multiply-adds (a backward jump whose
body holds FMAs, or mulps on sse2) and counts the stack accesses inside them: a load from
or store to the stack of a vector register in such a loop is an accumulator or operand the vector
register file could not hold (a spill); other stack accesses are integer registers reloaded
(pointers, counters) or a call's arguments. Prints one row per function and path (the loops, the
most multiply-adds in one loop body, the vector spills and the other stack accesses in all of
them, and the memset calls of the whole function) and exits 1 when any loop spills a vector
register. A tile kernel that calls memset keeps its accumulator array on the stack (zeroed there,
then loaded): the inner loop can be clean while every call pays for a stack round trip; a loop
over the tile bounded at run time (rows < MR) does that. Tile shapes come from
kernels/cpu/simd.h's accumulator budget; this is how that budget is checked. Read it on a GCC
build: clang names the OpenMP bodies it outlines apart from their function (.omp_outlined.).
"""
import re
import subprocess
import sys

PATHS = ('avx512', 'avx2', 'sse2', 'neon')
HEADER = re.compile(r'^([0-9a-f]+) <(.*)>:$')
FMA = re.compile(r'^(vfmadd|vfnmadd|fmla|mulps)')
JUMP = re.compile(r'^(j[a-z]+|b\.[a-z]+|b|cbn?z|tbn?z)$')
STACK = re.compile(r'\((%rsp|%rbp)[,)]|\[sp')
VECTOR = re.compile(r'%[xyz]mm\d|\b[qv]\d+\b')


def functions(binary):
    out = subprocess.run(['objdump', '-d', '--no-show-raw-insn', '-C', binary], check=True,
                         capture_output=True, text=True).stdout
    name, insns = None, []
    for line in out.splitlines():
        m = HEADER.match(line)
        if m:
            if name:
                yield name, insns
            name, insns = m.group(2), []
            continue
        m = re.match(r'^ +([0-9a-f]+):\t(\S+)\s*(.*)$', line)
        if m and name:
            insns.append((int(m.group(1), 16), m.group(2), m.group(3)))
    if name:
        yield name, insns


def inner_loops(insns):
    """(start, end) address ranges of loops whose body holds multiply-adds and no other loop."""
    loops = []
    for addr, op, args in insns:
        if not JUMP.match(op):
            continue
        target = re.match(r'([0-9a-f]+)', args)
        if not target or int(target.group(1), 16) >= addr:
            continue
        start = int(target.group(1), 16)
        body = [i for i in insns if start <= i[0] <= addr]
        # Loops that call (expf, sqrtf) save registers around the call: not a tile's loop.
        if any(FMA.match(op2) for _, op2, _ in body) and \
                not any(op2.startswith(('call', 'bl')) for _, op2, _ in body):
            loops.append((start, addr, body))
    inner = []
    for lp in loops:
        if not any(o is not lp and lp[0] <= o[0] and o[1] <= lp[1] and
                   (o[0], o[1]) != (lp[0], lp[1]) for o in loops):
            inner.append(lp)
    return inner


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    rows, bad = {}, 0
    for name, insns in functions(sys.argv[1]):
        path = next((p for p in PATHS if f'graft::cpu::{p}::' in name), None)
        if not path:
            continue
        # graft::cpu::avx2::(anonymous namespace)::tile_kernel<6, 2>(...) [clone ...] -> tile_kernel<6, 2>
        kernel = name.split(f'graft::cpu::{path}::', 1)[1]
        kernel = re.sub(r'^\(anonymous namespace\)::', '', kernel)
        kernel = re.sub(r'\(.*', '', kernel) + (' (omp)' if '_omp_fn' in name else '')
        memsets = sum(1 for _, op, args in insns
                      if op.startswith('call') and '<memset' in args)
        for start, end, body in inner_loops(insns):
            fmas = sum(1 for _, op, _ in body if FMA.match(op))
            stack = [(op, args) for _, op, args in body if STACK.search(args)]
            # A scalar read of one lane (vaddss 0x80(%rsp),...) is a horizontal sum, not a spill.
            spills = sum(1 for op, args in stack
                         if VECTOR.search(args) and not op.endswith(('ss', 'sd')))
            key = (kernel, path)
            r = rows.setdefault(key, [0, 0, 0, 0, 0])
            r[4] = max(r[4], memsets)
            r[0] += 1
            r[1] = max(r[1], fmas)
            r[2] += spills
            r[3] += len(stack) - spills
    print(f'{"function":<34}{"path":<8}{"loops":>6}{"max FMAs/loop":>15}{"vector spills":>15}'
          f'{"other stack":>13}{"memsets":>9}')
    for (kernel, path), (loops, fmas, spills, other, memsets) in sorted(rows.items()):
        print(f'{kernel[:33]:<34}{path:<8}{loops:>6}{fmas:>15}{spills:>15}{other:>13}'
              f'{memsets:>9}')
        bad += spills
    if not rows:
        sys.exit('no CPU kernels found: is this a graft binary built with its CPU paths?')
    sys.exit(1 if bad else 0)


if __name__ == '__main__':
    main()
