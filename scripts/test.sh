#!/usr/bin/env bash
# Builds (if needed) and runs every test. Tests that need the shared reference data read it
# from $ICAE_TESTDATA (default ../shared/testdata) and skip with a message when it is absent.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR="${ICAE_BUILD_DIR:-build}"
./scripts/build.sh
ctest --test-dir "$BUILD_DIR" --output-on-failure -j"$(nproc)" --timeout 600 "$@"
