#!/usr/bin/env bash
# Checks that a portable graft binary (GRAFT_NATIVE=OFF) runs on every x86-64 CPU: instructions
# beyond the baseline may appear only in the CPU path built for them (kernels/cpu/cpu_path.h).
#   EVEX-encoded (AVX-512) instructions only in graft::cpu::avx512:: functions;
#   VEX-encoded (AVX, AVX2, FMA) instructions only there or in graft::cpu::avx2:: functions.
# A function that breaks this is usually an inline or template function (a std::vector member,
# say) that a path's file compiled with its flags and the linker then kept for every caller.
#
#   scripts/check-cpu-paths.sh BINARY
#
# Then, where qemu-x86_64 is installed, the binary runs on emulated CPUs without AVX-512
# (Haswell) and without AVX (Nehalem), and must pick the avx2 and the sse2 path there.
set -euo pipefail
bin=${1:?usage: scripts/check-cpu-paths.sh BINARY}
case "$(uname -m)" in x86_64) ;; *) echo "check-cpu-paths: not an x86-64 machine; nothing to check"; exit 0 ;; esac

objdump -d --show-raw-insn -C "$bin" | awk '
  /^[0-9a-f]+ <.*>:$/ { fn = substr($0, index($0, "<") + 1); sub(/>:$/, "", fn); next }
  /^ +[0-9a-f]+:\t/ {
    n = split($0, part, "\t")
    if (n < 3) next                      # the rest of a long instruction'"'"'s bytes
    split(part[2], bytes, " ")
    i = 1
    while (bytes[i] ~ /^(67|2e|3e|26|36|64|65)$/) i++
    kind = bytes[i] == "62" ? "evex" : (bytes[i] == "c4" || bytes[i] == "c5") ? "vex" : ""
    if (kind == "") next
    ok = fn ~ /graft::cpu::avx512::/ || (kind == "vex" && fn ~ /graft::cpu::avx2::/)
    if (ok) { allowed[kind]++; next }
    if (!(fn in bad)) { bad[fn] = kind ": " part[3]; nbad++ }
  }
  END {
    printf "check-cpu-paths: %d AVX-512 and %d AVX/AVX2 instructions, all in their paths\n",
           allowed["evex"], allowed["vex"] > "/dev/stderr"
    for (f in bad) printf "  outside its path: %s (first: %s)\n", f, bad[f]
    if (allowed["evex"] == 0 || allowed["vex"] == 0) { print "  no path code found: is this a graft binary?"; exit 1 }
    exit nbad > 0
  }'

if command -v qemu-x86_64 >/dev/null; then
  for cpu_want in Haswell:avx2 Nehalem:sse2; do
    model=${cpu_want%%:*} want=${cpu_want##*:}
    got=$(qemu-x86_64 -cpu "$model" "$bin" --version 2>/dev/null | sed -n 's/^CPU path: \([a-z0-9]*\).*/\1/p')
    echo "check-cpu-paths: on an emulated $model, graft picks the $got path"
    [ "$got" = "$want" ] || { echo "  expected $want"; exit 1; }
  done
else
  echo "check-cpu-paths: qemu-x86_64 not installed; the emulated-CPU runs are skipped"
fi
