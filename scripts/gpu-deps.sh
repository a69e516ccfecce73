#!/usr/bin/env bash
# Unpacks the Debian packages that the GPU build needs besides LibTorch into DIR, so that DIR
# can travel with the working tree to a GPU machine that has no apt, no network and no gRPC
# (scripts/gpu-check.sh then builds with CMAKE_PREFIX_PATH=DIR/usr and ICAE_BUILD_SERVICES=OFF).
#   scripts/gpu-deps.sh DIR        run on a Debian 12 machine with apt sources (this one)
# What and why:
#   abseil (libabsl-dev + its shared libraries)   Status/StatusOr, strings, flags everywhere
#   nlohmann-json3-dev                            config.json, icae_config.json, safetensors headers
#   protobuf (dev, runtime, protoc)               the tokenizer parses tokenizer.model with our
#                                                 own copy of its schema (common/tokenizer)
#   googletest (gtest + gmock)                    the conformance and unit tests
#   glog + gflags                                 logging of the gRPC parts; not needed with the
#                                                 services off, carried so either build finds it
# It also copies the shared test data the conformance tests read (icae-golden, the stories260K
# references and model) into DIR/shared, from ../shared beside the repository (or $ICAE_SHARED):
# gpu-check.sh points ICAE_TESTDATA there. The whole of DIR is ~50 MB.
# The .debs are built for Debian 12: the unpacked libraries need glibc >= 2.34 and a libstdc++
# with GLIBCXX_3.4.29 (GCC 11+) on the machine that runs them; DIR/MANIFEST records the exact
# versions and gpu-check.sh compares them with the GPU machine. Packages are unpacked
# (dpkg-deb -x), not installed.
set -euo pipefail
if [[ $# -ne 1 ]]; then
  echo "usage: $0 DIR" >&2
  exit 2
fi
dir=$1
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)
packages=(
  libabsl-dev libabsl20220623
  nlohmann-json3-dev
  libprotobuf-dev libprotobuf32 libprotobuf-lite32 libprotoc32 protobuf-compiler
  libgtest-dev libgmock-dev googletest
  libgoogle-glog-dev libgoogle-glog0v6 libgflags-dev libgflags2.2 libunwind8 libunwind-dev
)
for p in "${packages[@]}"; do
  if ! apt-cache show "$p" >/dev/null 2>&1; then
    echo "gpu-deps: apt knows no package '$p' (run apt-get update; is this Debian 12?)" >&2
    exit 1
  fi
done
debs="$dir/debs"
rm -rf "$debs"
mkdir -p "$debs"
# apt-get download writes into the current folder, as the user running it (no root needed).
(cd "$debs" && apt-get download "${packages[@]}" >/dev/null)
n=0
for deb in "$debs"/*.deb; do
  dpkg-deb -x "$deb" "$dir"
  n=$((n + 1))
done
# Smaller to carry: abseil's and protobuf's static libraries (their CMake packages and the
# build use the shared ones; other packages' configs name their .a files, which stay),
# documentation and sources.
find "$dir/usr/lib/x86_64-linux-gnu" -maxdepth 1 \( -name 'libabsl_*.a' -o -name 'libproto*.a' \) -delete
rm -rf "$dir/usr/share/doc" "$dir/usr/share/man" "$dir/usr/src"
# The prefix must be self-contained: a CMake project pointed at it (as gpu-check.sh does) must
# resolve every package inside DIR, not in the build machine's /usr.
probe=$(mktemp -d)
cat > "$probe/CMakeLists.txt" <<'CMAKE'
cmake_minimum_required(VERSION 3.18)
project(gpu_deps_probe CXX)
find_package(absl REQUIRED)
find_package(nlohmann_json 3 REQUIRED)
find_package(GTest REQUIRED)
find_package(Protobuf REQUIRED)
get_target_property(a absl::strings INTERFACE_INCLUDE_DIRECTORIES)
get_target_property(j nlohmann_json::nlohmann_json INTERFACE_INCLUDE_DIRECTORIES)
get_target_property(g GTest::gtest INTERFACE_INCLUDE_DIRECTORIES)
foreach(p "${a}" "${j}" "${g}" "${Protobuf_INCLUDE_DIRS}" "${Protobuf_LIBRARY}" "${Protobuf_PROTOC_EXECUTABLE}")
  message(STATUS "PROBE ${p}")
endforeach()
CMAKE
if ! cmake -S "$probe" -B "$probe/b" -DCMAKE_PREFIX_PATH="$dir/usr" -DCMAKE_FIND_USE_PACKAGE_REGISTRY=OFF \
     > "$probe/log" 2>&1; then
  cat "$probe/log" >&2
  echo "gpu-deps: CMake does not find the packages in $dir" >&2
  exit 1
fi
if grep '^-- PROBE ' "$probe/log" | grep -v "PROBE $dir/" | grep -q .; then
  grep '^-- PROBE ' "$probe/log" >&2
  echo "gpu-deps: some packages resolve outside $dir (above)" >&2
  exit 1
fi
rm -rf "$probe"
for f in usr/include/absl/status/statusor.h usr/include/nlohmann/json.hpp \
         usr/include/google/protobuf/message.h usr/bin/protoc usr/include/gtest/gtest.h \
         usr/lib/x86_64-linux-gnu/libabsl_strings.so usr/lib/x86_64-linux-gnu/libprotobuf.so; do
  if [[ ! -e "$dir/$f" ]]; then
    echo "gpu-deps: $dir/$f missing after unpacking" >&2
    exit 1
  fi
done
{
  echo "# unpacked by scripts/gpu-deps.sh on $(date -u +%Y-%m-%dT%H:%M:%SZ) from:"
  for deb in "$debs"/*.deb; do dpkg-deb -f "$deb" Package Version | paste -sd' '; done
  echo "glibc of the build machine: $(ldd --version | head -1)"
  # What the unpacked binaries ask of the machine that runs them (gpu-check.sh compares).
  echo "needs GLIBC $(objdump -T "$dir"/usr/lib/x86_64-linux-gnu/*.so* "$dir"/usr/bin/protoc 2>/dev/null \
    | grep -o 'GLIBC_2\.[0-9]*' | sed 's/GLIBC_//' | sort -t. -k2 -n -u | tail -1)"
  echo "needs GLIBCXX $(objdump -T "$dir"/usr/lib/x86_64-linux-gnu/*.so* "$dir"/usr/bin/protoc 2>/dev/null \
    | grep -o 'GLIBCXX_3\.4\.[0-9]*' | sed 's/GLIBCXX_//' | sort -t. -k3 -n -u | tail -1)"
} > "$dir/MANIFEST"
rm -rf "$debs"
shared=${ICAE_SHARED:-$(cd "$(dirname "$0")/.." && pwd)/../shared}
if [[ -d "$shared/testdata/icae-golden" ]]; then
  rm -rf "$dir/shared"
  mkdir -p "$dir/shared/testdata" "$dir/shared/models"
  cp -r "$shared/testdata/icae-golden" "$shared/testdata/stories260K_golden.json" "$dir/shared/testdata/"
  cp -r "$shared/models/stories260K" "$dir/shared/models/"
  echo "gpu-deps: conformance test data copied into $dir/shared"
else
  echo "gpu-deps: no test data at $shared (set ICAE_SHARED): the conformance tests will skip" >&2
fi
echo "gpu-deps: $n packages unpacked into $dir ($(du -sh "$dir" | cut -f1)); see $dir/MANIFEST"
