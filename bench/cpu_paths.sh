#!/usr/bin/env bash
# The CPU paths side by side on this machine: for every path the CPU runs (kernels/cpu/cpu_path.h),
# the FMA peak on one core and on all, the Lite0 layers of bench_cpu_ops on one thread, and the
# EfficientNet-Lite0 forward (bench_forward) at batch 1, 8 and 32 on every core.
#
#   bench/cpu_paths.sh [BUILD_DIR] [PATH...]     (default: build, every path this CPU runs)
#
# Prints the CPU model and its instruction set first: every figure is for that machine and path.
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build}
shift || true
paths=("$@")
if [ ${#paths[@]} -eq 0 ]; then
  # Every path this binary and this CPU run: an unsupported GRAFT_CPU ends the first kernel call.
  for p in avx512 avx2 neon sse2 generic; do
    GRAFT_CPU=$p "$build/bench/bench_cpu_ops" --benchmark_filter='^Peak' \
      --benchmark_min_time=0.01 >/dev/null 2>&1 && paths+=("$p")
  done
fi
echo "machine: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(nproc) cores;" \
  "instruction sets: $(grep -m1 -o -w 'avx512f\|avx2' /proc/cpuinfo | sort -u | tr '\n' ' ')"
echo "commit $(git rev-parse --short HEAD), $(date -u +%Y-%m-%d)"
json=$(mktemp)
trap 'rm -f "$json"' EXIT
for p in "${paths[@]}"; do
  echo "== path $p"
  for t in 1 "$(nproc)"; do
    GRAFT_CPU=$p OMP_NUM_THREADS=$t "$build/bench/bench_cpu_ops" --benchmark_filter='^Peak' \
      --benchmark_repetitions=3 --benchmark_report_aggregates_only=true \
      --benchmark_format=json >"$json" 2>/dev/null
    python3 -c "import json,sys; b=[x for x in json.load(open('$json'))['benchmarks'] if x['aggregate_name']=='median'][0]; print(f'peak, $t thread(s): {b[\"GFLOP/s\"]:.0f} GFLOP/s')"
  done
  GRAFT_CPU=$p OMP_NUM_THREADS=1 "$build/bench/bench_cpu_ops" --benchmark_filter='^Conv/.*/1/' \
    --benchmark_min_time=0.2 --benchmark_format=json >"$json" 2>/dev/null
  python3 -c "
import json
for b in json.load(open('$json'))['benchmarks']:
    print(f'  {b[\"name\"].split(\"/\")[1]:<28} 1 thread, batch 1: {b[\"GFLOP/s\"]:6.1f} GFLOP/s')"
  GRAFT_CPU=$p "$build/bench/bench_forward" --benchmark_repetitions=3 \
    --benchmark_report_aggregates_only=true --benchmark_format=json >"$json" 2>/dev/null
  python3 -c "
import json
for b in json.load(open('$json'))['benchmarks']:
    if b.get('aggregate_name') == 'median':
        print(f'  Lite0 forward, batch {b[\"name\"].split(\"/\")[2]:>2}, $(nproc) threads:'
              f' {b[\"img/s\"]:6.1f} images/s')"
done
