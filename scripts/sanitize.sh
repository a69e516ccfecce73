#!/usr/bin/env bash
# Sanitizer builds of the tests, each in its own build folder (gcc, -O1 -g):
#   scripts/sanitize.sh asan [CTEST ARGS...]        ASan + UBSan (build-asan): every unit and
#       integration test (ctest labels unit|integration; conformance is left out: the unit
#       tests' code on bigger reference models). Builds everything.
#   scripts/sanitize.sh asan-quick [CTEST ARGS...]  ASan + UBSan over the code without LibTorch
#       that parses bytes from outside: the slot store (records, URIs, every backend, the Redis
#       protocol and cluster client) and the tokenizers. Builds about a fifth of the tree.
#   scripts/sanitize.sh tsan [CTEST ARGS...]        TSan (build-tsan): the code with threads —
#       the slot store, the decoder scheduler and encoder batching core in-process
#       (server_scheduler_test, server_common_test: metrics, the /metrics listener), and the
#       services on loopback (services_test, hostile_client_test). Debian's gRPC is not
#       instrumented, so races through gRPC's callback code are suppressed (tsan.supp says
#       which and why); races between our own threads in the service processes are reported.
#   scripts/sanitize.sh tsan-quick [CTEST ARGS...]  TSan without the services on loopback (no
#       `icae` tool or service binaries to build): the slot store and both cores in-process.
# UB aborts the test (-fno-sanitize-recover=undefined); any report fails the test that hit it.
# Debian's LibTorch, OpenBLAS, libgomp, gRPC, protobuf, abseil and hiredis are not
# instrumented; reports from inside them only are suppressed in scripts/sanitize/*.supp, each
# entry with its reason. Our own code is never suppressed. Extra arguments go to ctest.
# Environment: ICAE_SANITIZE_BUILD_DIR (default build-asan / build-tsan), ICAE_SANITIZE_JOBS
# (build and ctest jobs, default all cores).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
if [[ $# -lt 1 ]] || ! [[ "$1" =~ ^(asan|asan-quick|tsan|tsan-quick)$ ]]; then
  echo "usage: $0 asan|asan-quick|tsan|tsan-quick [ctest args...]" >&2
  exit 2
fi
kind=$1
shift
jobs="${ICAE_SANITIZE_JOBS:-$(nproc)}"
supp="$root/scripts/sanitize"

slot_store_tests=(slot_store_record_test slot_store_memory_test slot_store_file_test
                  slot_store_redis_test slot_store_redis_cluster_unit_test
                  slot_store_redis_cluster_test slot_store_conformance_test)
# ctest names are "<executable>.<suite>.<case>": a regex over executables.
executables() { local IFS='|'; echo "^($*)\\."; }
exclude=()
case "$kind" in
  asan)
    build="${ICAE_SANITIZE_BUILD_DIR:-$root/build-asan}"
    sanitize="address,undefined"
    targets=(all)
    select=(-L '^(unit|integration)$')
    ;;
  asan-quick)
    build="${ICAE_SANITIZE_BUILD_DIR:-$root/build-asan}"
    sanitize="address,undefined"
    targets=("${slot_store_tests[@]}" tokenizer_test)
    select=(-R "$(executables "${targets[@]}")")
    # These run the `icae` tool, which this subset does not build (they would skip).
    exclude=(-E '^tokenizer_test\.TokenizeCommandTest\.')
    ;;
  tsan|tsan-quick)
    build="${ICAE_SANITIZE_BUILD_DIR:-$root/build-tsan}"
    sanitize="thread"
    # Without slot_store_redis_cluster_test: six redis-servers per case, and the cluster client
    # is covered by the unit test and the conformance suite.
    tests=(slot_store_record_test slot_store_memory_test slot_store_file_test
           slot_store_redis_test slot_store_redis_cluster_unit_test slot_store_conformance_test
           server_common_test server_scheduler_test)
    targets=("${tests[@]}")
    if [[ "$kind" == tsan ]]; then
      tests+=(services_test hostile_client_test)
      targets+=(services_test hostile_client_test encoder_service decoder_service icae)
    fi
    select=(-R "$(executables "${tests[@]}")")
    ;;
esac

case "$kind" in
  asan*)
    # detect_leaks: LeakSanitizer checks at every exit (tests, and the service binaries the
    # integration tests start). abort_on_error=0: a report exits non-zero, without a core dump.
    # detect_odr_violation=0: LibTorch's and protobuf's shared objects define the same globals
    # as their static copies; ODR checks of uninstrumented libraries are noise.
    export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0:detect_odr_violation=0:check_initialization_order=1:strict_init_order=1}"
    export LSAN_OPTIONS="${LSAN_OPTIONS:-suppressions=$supp/lsan.supp:print_suppressions=0}"
    export UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1:suppressions=$supp/ubsan.supp}"
    ;;
  tsan*)
    # libgomp (LibTorch's OpenMP) is not instrumented: its barriers look like races to TSan.
    # One OpenMP thread keeps LibTorch's parallel loops on the calling thread (the services
    # under test run with --threads=1 too).
    export OMP_NUM_THREADS=1
    export TSAN_OPTIONS="${TSAN_OPTIONS:-halt_on_error=1 second_deadlock_stack=1 suppressions=$supp/tsan.supp}"
    ;;
esac

if [[ ! -f "$build/CMakeCache.txt" ]]; then
  cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DCMAKE_C_FLAGS_RELWITHDEBINFO="-O1 -g" -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O1 -g" \
    -DICAE_SANITIZE="$sanitize" -DICAE_BUILD_SERVICES=ON -DICAE_BUILD_TESTS=ON >/dev/null
fi
cmake --build "$build" -j"$jobs" --target "${targets[@]}"
ctest --test-dir "$build" "${select[@]}" "${exclude[@]}" --output-on-failure -j"$jobs" \
  --timeout 900 "$@"
