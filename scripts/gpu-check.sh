#!/usr/bin/env bash
# The GPU check (issue 17), one script for the GPU machine: build against its CUDA LibTorch,
# run the conformance tests on CUDA, benchmark decode and compress on the 246M shape and on a
# Mistral-7B shape with the data-sheet bounds beside, the same work through HF transformers +
# peft for a ratio, and a training-throughput figure. Everything lands in OUT_DIR; summary.txt
# says what was measured and which goals were met. The whole run stays within 10 minutes: every
# step has its own time limit, cut to what is left of the total budget, and a failed step is
# recorded and the next one still runs.
#
#   scripts/gpu-check.sh OUT_DIR
#
# The GPU machine has PyTorch (LibTorch inside), nvcc, cmake and ninja, but no gRPC, no apt and
# no network: the build is -DICAE_BUILD_SERVICES=OFF, LibTorch is found through
#   python3 -c 'import torch; print(torch.utils.cmake_prefix_path)'
# and abseil, nlohmann-json, protobuf and googletest come from a prefix of unpacked Debian
# packages made beforehand by `scripts/gpu-deps.sh gpu-deps` (carried with the working tree),
# which also holds the conformance test data.
#
# Environment:
#   GPU_CHECK_DEVICE      cuda (default), cuda:N, or cpu for a dry run on a CPU machine
#   GPU_CHECK_QUICK=1     tiny shapes and few steps (dry run of the script itself)
#   GPU_CHECK_DEPS        the gpu-deps prefix (default: gpu-deps in the repository)
#   GPU_CHECK_BUILD_DIR   build folder (default build-gpu); one that is already configured is
#                         only brought up to date (e.g. the Debian build for a CPU dry run)
#   GPU_CHECK_JOBS        build jobs (default: all cores)
#   GPU_CHECK_BUILD_LIMIT seconds the build may take (default 420; more for a 2-core rehearsal)
#   GPU_CHECK_TOTAL_S     the whole run's budget in seconds (default 570): each step's limit is
#                         cut to what is left, and steps that no longer fit are skipped
#   GPU_CHECK_PYTHON      the Python with torch (default python3)
#   GPU_CHECK_HBM_GBS     memory bandwidth bound, GB/s (default 4800: H200 HBM3e)
#   GPU_CHECK_PEAK_TFLOPS bf16 dense tensor-core peak, TFLOP/s (default 989: H100/H200 SXM)
#   GPU_CHECK_CUDA_ARCH   TORCH_CUDA_ARCH_LIST for the build (default 9.0: Hopper)
set -uo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
if [[ $# -ne 1 ]]; then
  echo "usage: $0 OUT_DIR   (see the comment at the top for the environment variables)" >&2
  exit 2
fi
mkdir -p "$1" || exit 2
out=$(cd "$1" && pwd)
device=${GPU_CHECK_DEVICE:-cuda}
quick=${GPU_CHECK_QUICK:-0}
deps=${GPU_CHECK_DEPS:-$root/gpu-deps}
build=${GPU_CHECK_BUILD_DIR:-$root/build-gpu}
jobs=${GPU_CHECK_JOBS:-$(nproc)}
build_limit=${GPU_CHECK_BUILD_LIMIT:-420}
python=${GPU_CHECK_PYTHON:-python3}
hbm_gbs=${GPU_CHECK_HBM_GBS:-4800}
peak_tflops=${GPU_CHECK_PEAK_TFLOPS:-989}
cuda_arch=${GPU_CHECK_CUDA_ARCH:-9.0}
case "$device" in
  cpu|cuda|cuda:[0-9]|cuda:[0-9][0-9]) ;;
  *) echo "gpu-check: GPU_CHECK_DEVICE must be cpu, cuda or cuda:N, not '$device'" >&2; exit 2 ;;
esac
start=$(date +%s)
deadline=$((start + ${GPU_CHECK_TOTAL_S:-570}))
failed=()
: > "$out/steps.txt"

log() { echo "[gpu-check +$(( $(date +%s) - start ))s] $*" | tee -a "$out/steps.txt"; }

# step NAME SECONDS COMMAND…: runs COMMAND with a time limit, output to OUT_DIR/NAME.txt
# (stdout to OUT_DIR/NAME.json instead when STEP_JSON=1: the benchmarks' --json figures).
step() {
  local name=$1 limit=$2
  shift 2
  limit=$(budget "$limit") || { skip_step "$name"; return 1; }
  log "$name (limit ${limit}s): $*"
  local t0=$(date +%s)
  if [[ "${STEP_JSON:-0}" == 1 ]]; then
    timeout --kill-after=10 "$limit" "$@" > "$out/$name.json" 2> "$out/$name.txt"
  else
    timeout --kill-after=10 "$limit" "$@" > "$out/$name.txt" 2>&1
  fi
  local rc=$?
  if [[ $rc -eq 0 ]]; then
    log "$name: ok in $(( $(date +%s) - t0 ))s"
  else
    [[ $rc -eq 124 || $rc -eq 137 ]] && log "$name: TIMED OUT after ${limit}s" || log "$name: FAILED (exit $rc)"
    failed+=("$name")
    tail -n 15 "$out/$name.txt" | sed 's/^/    /' | tee -a "$out/steps.txt"
  fi
  return $rc
}

# budget SECONDS: SECONDS cut to what is left of the total budget; fails when under 10 s are left.
budget() {
  local left=$((deadline - $(date +%s)))
  [[ $left -ge 10 ]] || return 1
  echo $(($1 < left ? $1 : left))
}
skip_step() {
  log "$1: SKIPPED (the total budget of ${GPU_CHECK_TOTAL_S:-570}s is spent)"
  failed+=("$1")
}

# ---------------------------------------------------------------- the machine
{
  echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)  device: $device  quick: $quick"
  echo "git: $(git -C "$root" rev-parse HEAD 2>/dev/null) $(git -C "$root" status --porcelain 2>/dev/null | wc -l) changed files"
  uname -a
  ldd --version 2>&1 | head -1
  nproc
  command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv
  command -v nvcc >/dev/null && nvcc --version | tail -2
  cmake --version | head -1
  command -v ninja >/dev/null && echo "ninja $(ninja --version)"
  "$python" -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda, "available", torch.cuda.is_available())' 2>&1
  for m in transformers peft; do "$python" -c "import $m; print('$m', $m.__version__)" 2>&1 | tail -1; done
  [[ -f "$deps/MANIFEST" ]] && cat "$deps/MANIFEST"
} > "$out/env.txt" 2>&1
if command -v nvidia-smi >/dev/null; then
  log "machine: $(nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | head -1), device $device"
else
  log "machine: no nvidia-smi, device $device"
fi

# The unpacked Debian libraries need a glibc at least as new as their MANIFEST says.
if [[ -f "$deps/MANIFEST" ]]; then
  need=$(sed -n 's/^needs GLIBC //p' "$deps/MANIFEST")
  have=$(ldd --version 2>&1 | head -1 | grep -o '[0-9]*\.[0-9]*$')
  if [[ -n "$need" && -n "$have" ]] && [[ "$(printf '%s\n%s\n' "$need" "$have" | sort -V | head -1)" != "$need" ]]; then
    log "this machine's glibc $have is older than the $need the gpu-deps libraries need: they cannot load here"
    failed+=(glibc)
  fi
fi
if [[ -d "$deps/usr/lib/x86_64-linux-gnu" ]]; then
  export LD_LIBRARY_PATH="$deps/usr/lib/x86_64-linux-gnu${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
fi
if [[ -d "$deps/shared/testdata" && -z "${ICAE_TESTDATA:-}" ]]; then
  export ICAE_TESTDATA="$deps/shared/testdata"
fi

# ---------------------------------------------------------------- build
targets=(icae model_conformance_test icae_conformance_test device_test)
if [[ -f "$build/CMakeCache.txt" ]]; then
  log "build: $build is configured; bringing it up to date"
else
  torch_prefix=$("$python" -c 'import torch; print(torch.utils.cmake_prefix_path)' 2>>"$out/env.txt")
  if [[ -z "$torch_prefix" ]]; then
    log "build: '$python' cannot import torch: no LibTorch to build against"
    failed+=(build)
    "$python" "$root/scripts/gpu_check_report.py" "$out"
    exit 1
  fi
  # gpu-deps first: its packages win over any of the same name beside LibTorch.
  prefix="$torch_prefix"
  [[ -d "$deps/usr" ]] && prefix="$deps/usr;$torch_prefix"
  [[ -d "$deps/usr" ]] || log "build: no $deps (run scripts/gpu-deps.sh there on a Debian 12 machine); relying on system packages"
  args=(-S "$root" -B "$build" -DCMAKE_BUILD_TYPE=Release -DICAE_BUILD_SERVICES=OFF -DCMAKE_PREFIX_PATH="$prefix")
  command -v ninja >/dev/null && args+=(-G Ninja)
  if [[ "$device" == cuda* ]]; then
    nvcc=$(command -v nvcc || ls /usr/local/cuda/bin/nvcc 2>/dev/null)
    if [[ -n "$nvcc" ]]; then
      args+=(-DCMAKE_CUDA_COMPILER="$nvcc" -DCUDAToolkit_ROOT="$(dirname "$(dirname "$nvcc")")")
    fi
    # Caffe2's CMake package enables the CUDA language: give it the architecture rather than
    # have it probe one.
    args+=(-DTORCH_CUDA_ARCH_LIST="$cuda_arch" -DCMAKE_CUDA_ARCHITECTURES="${cuda_arch//./}")
  fi
  step configure 180 cmake "${args[@]}" || { "$python" "$root/scripts/gpu_check_report.py" "$out"; exit 1; }
fi
if ! step build "$build_limit" nice -n 10 cmake --build "$build" -j "$jobs" --target "${targets[@]}"; then
  "$python" "$root/scripts/gpu_check_report.py" "$out"
  exit 1
fi
icae="$build/tools/icae"

# ---------------------------------------------------------------- conformance on the device
# The golden cases of icae-golden and stories260K, on $device (tests/testing/device.h).
for t in device_test model_conformance_test icae_conformance_test; do
  ICAE_TEST_DEVICE=$device step "test-$t" 180 "$build/tests/$t" --gtest_brief=0
done

# ---------------------------------------------------------------- benchmarks
common=(--device "$device" --dtype bfloat16 --threads "$(nproc)")
bounds_decode=()
bounds_compress=()
if [[ "$device" == cuda* ]]; then
  bounds_decode=(--bandwidth-gbs "$hbm_gbs" --peak-tflops "$peak_tflops")
  bounds_compress=(--peak-tflops "$peak_tflops")
fi
if [[ "$quick" == 1 ]]; then
  s246=(--hidden 128 --layers 2 --heads 4 --kv-heads 2 --intermediate 256)
  s7b=(--hidden 256 --layers 2 --heads 8 --kv-heads 2 --intermediate 512)
  dec=(--prompt-tokens 32 --decode-tokens 8 --reps 1 --vocab 1000)
  comp=(--lengths 64,200 --mem-size 16 --reps 1)
  hf=(--prompt-tokens 32 --decode-tokens 8 --vocab 1000 --lengths 64,200 --mem-size 16 --reps 1)
  lora246=(--lora-r 8) lora7b=(--lora-r 16)
else
  # 246M: the benchmarks' default shape; 7B: Mistral-7B (GQA 32/8, FFN 14336), LoRA r 512 as
  # the released adapter.
  s246=(--hidden 1024 --layers 16 --heads 16 --kv-heads 4 --intermediate 2816)
  s7b=(--hidden 4096 --layers 32 --heads 32 --kv-heads 8 --intermediate 14336)
  dec=(--prompt-tokens 512 --decode-tokens 128 --reps 3 --vocab 32000)
  comp=(--lengths 512,2048,5120 --mem-size 128 --reps 3)
  hf=(--prompt-tokens 512 --decode-tokens 128 --vocab 32000 --lengths 512,2048,5120 --mem-size 128 --reps 2)
  lora246=(--lora-r 64) lora7b=(--lora-r 512)
fi
# Tables to NAME.txt, the --json figures (what the report reads) to NAME.json.
export STEP_JSON=1
step bench-decode-246m 120 "$icae" bench decode --json "${common[@]}" "${s246[@]}" "${dec[@]}" "${bounds_decode[@]}"
step bench-decode-7b 150 "$icae" bench decode --json "${common[@]}" "${s7b[@]}" "${dec[@]}" "${bounds_decode[@]}"
step bench-compress-246m 120 "$icae" bench compress --json "${common[@]}" "${s246[@]}" "${comp[@]}" "${lora246[@]}" "${bounds_compress[@]}"
step bench-compress-7b 150 "$icae" bench compress --json "${common[@]}" "${s7b[@]}" "${comp[@]}" "${lora7b[@]}" "${bounds_compress[@]}"
export STEP_JSON=0

# ---------------------------------------------------------------- HF transformers + peft
for shape in 246m 7b; do
  if [[ $shape == 246m ]]; then s=("${s246[@]}") l=("${lora246[@]}"); else s=("${s7b[@]}") l=("${lora7b[@]}"); fi
  limit=$(budget 180) || { skip_step "hf-$shape"; continue; }
  log "hf-$shape: HF transformers + peft, same shape and work (limit ${limit}s)"
  timeout --kill-after=10 "$limit" "$python" "$root/scripts/gpu_hf_bench.py" --device "$device" "${s[@]}" "${l[@]}" \
    "${hf[@]}" > "$out/hf-$shape.json" 2> "$out/hf-$shape.log"
  rc=$?
  if [[ $rc -eq 3 ]]; then
    tail -1 "$out/hf-$shape.log" > "$out/hf-$shape.skipped"
    rm -f "$out/hf-$shape.json"
    log "hf-$shape: skipped: $(cat "$out/hf-$shape.skipped")"
  elif [[ $rc -ne 0 ]]; then
    log "hf-$shape: FAILED (exit $rc, see hf-$shape.log)"
    failed+=("hf-$shape")
  else
    log "hf-$shape: ok"
  fi
done

# ---------------------------------------------------------------- training throughput
# A base LM of the 246M body shape trained from scratch for a few steps: bf16 autocast over
# fp32 master weights, the tokenizer and text of the repository's default model and docs.
cat "$root"/README.md "$root"/docs/*.md > "$out/train-text.txt" 2>/dev/null
if [[ "$quick" == 1 ]]; then
  tr=(--hidden 64 --layers 2 --heads 2 --intermediate 128 --seq-len 64 --batch-size 2 --steps 3)
else
  tr=(--hidden 1024 --layers 16 --heads 16 --kv-heads 4 --intermediate 2816 --seq-len 512 --batch-size 8 --steps 30)
fi
step train-lm 180 "$icae" train lm --tokenizer "$root/models/default/tokenizer.model" \
  --train-text "$out/train-text.txt" --out "$out/train-lm-model" --device "$device" \
  --threads "$(nproc)" --log-every 5 --save-every 1000000 "${tr[@]}"
rm -rf "$out/train-lm-model"

# ---------------------------------------------------------------- summary
"$python" "$root/scripts/gpu_check_report.py" "$out" > /dev/null || failed+=(report)
cat "$out/summary.txt" 2>/dev/null
log "done in $(( $(date +%s) - start ))s; failed steps: ${failed[*]:-none}"
[[ ${#failed[@]} -eq 0 ]]
