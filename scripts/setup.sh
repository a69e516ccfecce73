#!/usr/bin/env bash
# Fresh Debian 12 → installed packages, a build, and the main job: local generation with a
# model folder (stories260K from ../shared, converted to the HF layout by `icae convert`).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/install-deps.sh
./scripts/build.sh
SHARED="${ICAE_SHARED:-$(pwd)/../shared}"
MODEL_DIR=build/models/stories260K
mkdir -p "$MODEL_DIR"
./build/tools/icae convert llama2c --checkpoint "$SHARED/models/stories260K/stories260K.bin" \
  --tokenizer "$SHARED/models/stories260K/tok512.bin" --out "$MODEL_DIR"
./build/tools/icae run --model "$MODEL_DIR" --prompt "Once upon a time" --max-new-tokens 200
