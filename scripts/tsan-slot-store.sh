#!/usr/bin/env bash
# Builds the slot store tests with ThreadSanitizer (ICAE_SANITIZE=thread) in their own build
# folder and runs them: the concurrency tests (8 threads x 1000 mixed ops on every backend,
# readers racing writers in the file store) are the point. Needs redis-server for the Redis
# cases (they skip without it unless ICAE_REQUIRE_REDIS=1). Extra arguments go to ctest.
# The locks are std::mutex (pthread), which TSan understands even though the distro's abseil,
# hiredis and OpenSSL are not instrumented.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR="${ICAE_TSAN_BUILD_DIR:-build-tsan-slot-store}"
TARGETS=(slot_store_record_test slot_store_memory_test slot_store_file_test
         slot_store_redis_test slot_store_conformance_test)
cmake -S . -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DICAE_SANITIZE=thread \
  -DICAE_BUILD_SERVICES=ON -DICAE_BUILD_TESTS=ON >/dev/null
cmake --build "$BUILD_DIR" -j"$(nproc)" --target "${TARGETS[@]}"
# halt_on_error: the first race fails the test instead of scrolling past.
export TSAN_OPTIONS="${TSAN_OPTIONS:-halt_on_error=1 second_deadlock_stack=1}"
ctest --test-dir "$BUILD_DIR" -R '^(AllBackends/)?SlotStore' --output-on-failure \
  -j"$(nproc)" --timeout 300 "$@"
