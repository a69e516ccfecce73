#!/usr/bin/env bash
# The one list of Debian 12 packages this project needs to build, test and run.
# Called by the README's setup command and by .ci/run; keep both in step by editing only here.
set -euo pipefail

PACKAGES=(
  build-essential cmake pkg-config git ca-certificates
  # LibTorch (CPU) and the fast BLAS it needs: without libopenblas0-pthread Debian's
  # libtorch multiplies float32 matrices with the generic reference BLAS (~20x slower).
  libtorch-dev libopenblas0-pthread
  # abseil (status, flags, strings), glog (logging; LibTorch links it already), JSON.
  libabsl-dev libgoogle-glog-dev nlohmann-json3-dev
  # gRPC services and our own protobuf parser of tokenizer.model.
  libgrpc++-dev libprotobuf-dev protobuf-compiler protobuf-compiler-grpc
  # Slot store backends.
  libssl-dev libhiredis-dev redis-server
  # redis-cli (redis-tools): forms the Redis Cluster of the redis-cluster:// tests and bench.
  redis-tools
  # Prometheus metrics and the /metrics endpoint (prometheus-cpp's pull exposer, civetweb).
  prometheus-cpp-dev
  # Tests and benchmarks.
  libgtest-dev libgmock-dev libbenchmark-dev
  # Fuzzing the parsers (scripts/fuzz.sh, CMake option ICAE_FUZZ): clang and libFuzzer.
  clang-14 libfuzzer-14-dev
  # Training a tokenizer for the embedded default model.
  sentencepiece
  # deploy/ checks (kubectl itself comes with the machine image).
  python3 python3-yaml yamllint
  # The Python client (clients/python) and its tests: Debian's Python, gRPC and protobuf
  # (stubs come from protobuf-compiler-grpc's grpc_python_plugin at build time).
  python3-grpcio python3-protobuf python3-pytest
  # The default model's learning-curve plot (scripts/plot-curve.sh).
  gnuplot-nox
)

SUDO=""
if [[ $(id -u) -ne 0 ]]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update
$SUDO apt-get install -y --no-install-recommends "${PACKAGES[@]}"
