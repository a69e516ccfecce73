#!/usr/bin/env bash
# libFuzzer targets of the parsers of bytes from outside (fuzz/; CMake option ICAE_FUZZ).
#   scripts/fuzz.sh --list             the target names
#   scripts/fuzz.sh TARGET SECONDS     build if needed, fuzz TARGET for SECONDS from its seed
#                                      corpus; non-zero exit on a finding (crash, UB, leak,
#                                      timeout, out of memory), with the input saved.
# ICAE_FUZZ_BUILD_DIR (default build-fuzz), ICAE_FUZZ_WORK_DIR (default a temp folder, removed
# after a clean run: the working corpus and findings; fuzz/corpus/TARGET is only read),
# ICAE_FUZZ_JOBS (build jobs, default all cores).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
build="${ICAE_FUZZ_BUILD_DIR:-$root/build-fuzz}"
targets=$(sed -n 's/^ *\([a-z0-9_]*\):icae_[a-z_]*$/\1/p; s/^ *\([a-z0-9_]*\):icae_[a-z_]*)$/\1/p' \
  fuzz/CMakeLists.txt)

if [[ "${1:-}" == "--list" ]]; then
  echo "$targets"
  exit 0
fi
if [[ $# -ne 2 ]] || ! [[ "$2" =~ ^[0-9]+$ ]]; then
  echo "usage: $0 --list | TARGET SECONDS" >&2
  exit 2
fi
target=$1
seconds=$2
if ! grep -qx "$target" <<<"$targets"; then
  echo "fuzz: unknown target '$target' (known: $(echo $targets))" >&2
  exit 2
fi

if [[ ! -f "$build/CMakeCache.txt" ]]; then
  CC=clang-14 CXX=clang++-14 cmake -S "$root" -B "$build" -DICAE_FUZZ=ON \
    -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
fi
cmake --build "$build" --target "${target}_fuzz" -j "${ICAE_FUZZ_JOBS:-$(nproc)}" >/dev/null

if [[ -n "${ICAE_FUZZ_WORK_DIR:-}" ]]; then
  work=$ICAE_FUZZ_WORK_DIR
else
  work=$(mktemp -d "${TMPDIR:-/tmp}/icae-fuzz.XXXXXX")
fi
mkdir -p "$work/$target/corpus" "$work/$target/findings"
cp -r "fuzz/corpus/$target/." "$work/$target/corpus/"
echo "fuzz: $target for ${seconds}s; corpus and findings in $work/$target"
# -timeout: one input taking over 10 s is a hang; -rss_limit_mb: over 2 GB is unbounded
# allocation; -malloc_limit_mb: so is one allocation of over 512 MB on a small input.
rc=0
"$build/fuzz/${target}_fuzz" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 \
  -malloc_limit_mb=512 -print_final_stats=1 \
  -artifact_prefix="$work/$target/findings/" "$work/$target/corpus" || rc=$?
if [[ $rc -ne 0 ]]; then
  echo "fuzz: $target FOUND a problem (exit $rc); input(s) in $work/$target/findings:" >&2
  ls -l "$work/$target/findings" >&2
  exit "$rc"
fi
# A clean run in our own temp folder leaves nothing behind.
if [[ -z "${ICAE_FUZZ_WORK_DIR:-}" ]]; then rm -rf "$work"; fi
echo "fuzz: $target clean"
