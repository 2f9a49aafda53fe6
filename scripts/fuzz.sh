#!/usr/bin/env bash
# Builds the fuzz targets (tests/fuzz) into build-fuzz and runs each for SECONDS (default 30).
#
#   scripts/fuzz.sh [SECONDS] [TARGET...]     TARGET: fuzz_safetensors fuzz_image fuzz_dataset
#                                                      fuzz_convert (default: all four)
#
# Each target runs on a fresh copy of its seed corpus under build-fuzz/run/TARGET/, so the
# repository is never written to. Prints executions per target; exits non-zero if any target
# crashed, leaked, ran out of memory or hung, naming the input that did it (reproduce with
# `build-fuzz/TARGET INPUT`, or `python3 tests/fuzz/fuzz_convert.py INPUT`). A crash input
# becomes a regression test in tests/test_regressions.cpp or tests/py/test_converter.py.
# Needs clang with libFuzzer (CXX=clang++ by default); fuzz_convert needs `pip install atheris`
# and is reported as skipped without it.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1

seconds=${1:-30}
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(fuzz_safetensors fuzz_image fuzz_dataset fuzz_convert)
build=${FUZZ_BUILD_DIR:-build-fuzz}

generator=()
command -v ninja >/dev/null && [ ! -f "$build/Makefile" ] && generator=(-G Ninja)
mkdir -p "$build"
cmake -S tests/fuzz -B "$build" "${generator[@]}" -DCMAKE_CXX_COMPILER="${CXX:-clang++}" \
  >"$build/configure.log" 2>&1 || { cat "$build/configure.log"; exit 1; }
cmake --build "$build" -j"$(nproc)" || exit 1

seeds_of() {
  case $1 in
    # The reader's unit-test corpus (valid and invalid files) plus extra dtype coverage.
    fuzz_safetensors) echo tests/corpus/safetensors tests/fuzz/corpus/safetensors ;;
    *) echo "tests/fuzz/corpus/${1#fuzz_}" ;;
  esac
}

failed=0
summary=()
for t in "${targets[@]}"; do
  run="$build/run/$t"
  rm -rf "$run"
  mkdir -p "$run/corpus"
  for dir in $(seeds_of "$t"); do cp "$dir"/* "$run/corpus/"; done

  flags=(-max_total_time="$seconds" -rss_limit_mb=2048 -timeout=25 -print_final_stats=1
         -artifact_prefix="$run/")
  case $t in
    fuzz_safetensors) flags+=(-dict=tests/fuzz/safetensors.dict) ;;
    fuzz_image) flags+=(-dict=tests/fuzz/image.dict) ;;
    fuzz_convert) flags+=(-max_len=8192) ;;  # the zip seed is 4 KB; leave room to grow
  esac
  if [ "$t" = fuzz_convert ]; then
    if ! python3 -c 'import atheris' 2>/dev/null; then
      summary+=("$t: SKIPPED (atheris is not installed: pip install atheris)")
      continue
    fi
    cmd=(python3 tests/fuzz/fuzz_convert.py)
  else
    cmd=("$build/$t")
  fi

  echo "== $t: ${seconds}s"
  "${cmd[@]}" "${flags[@]}" "$run/corpus" >"$run/log" 2>&1
  rc=$?
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$run/log" | tail -1)
  corpus=$(find "$run/corpus" -type f | wc -l)
  if [ $rc -eq 0 ]; then
    summary+=("$t: ${execs:-?} executions in ${seconds}s, corpus $corpus files, no crash")
  else
    failed=1
    input=$(sed -n 's/.*Test unit written to \(.*\)$/\1/p' "$run/log" | tail -1)
    tail -n 60 "$run/log"
    summary+=("$t: FAILED (exit $rc) after ${execs:-?} executions; input: ${input:-see $run/log}")
  fi
done

echo "== fuzz summary"
printf '%s\n' "${summary[@]}"
exit $failed
