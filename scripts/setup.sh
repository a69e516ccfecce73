#!/usr/bin/env bash
# Fresh Debian 12 → installed packages, a build, and the main job: the encoder and decoder
# services on the embedded default model (models/default), started by `icae up` on free
# loopback ports, with a real example sent through them: a context is compressed into slots
# by the encoder, then the decoder reconstructs it from the slots and answers a question.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/install-deps.sh
./scripts/build.sh
ICAE=build/tools/icae
EXAMPLE=${1:-deploy/example-context.txt}
LOG=$(mktemp -d)/up.log
$ICAE up >"$LOG.out" 2>"$LOG" &
UP=$!
trap 'kill -TERM $UP 2>/dev/null; wait $UP 2>/dev/null || true' EXIT
for _ in $(seq 1 600); do
  if [[ $(grep -c '=' "$LOG.out" 2>/dev/null || true) -ge 2 ]]; then break; fi
  if ! kill -0 $UP 2>/dev/null; then cat "$LOG" >&2; exit 1; fi
  sleep 0.2
done
ENCODER=$(sed -n 's/^encoder=//p' "$LOG.out")
DECODER=$(sed -n 's/^decoder=//p' "$LOG.out")
echo "services: encoder=$ENCODER decoder=$DECODER"
echo "--- context ($EXAMPLE; text the model never trained on)"
cat "$EXAMPLE"
SLOT=$($ICAE encode --server "$ENCODER" --file "$EXAMPLE" --verbose)  # counts on stderr
echo "--- slot id: $SLOT"
OUT=$(dirname "$LOG")
echo "--- decoder, autoencode: the context rebuilt from its slots alone"
$ICAE generate --server "$DECODER" --slot "$SLOT" --mode autoencode --max-new-tokens 400 | tee "$OUT/rebuilt.txt"
echo
echo "--- original vs rebuilt (on the model's tokens):"
$ICAE compare --reference-file "$EXAMPLE" --hypothesis-file "$OUT/rebuilt.txt"
echo "--- decoder, continue (what comes next, from the slots):"
$ICAE generate --server "$DECODER" --slot "$SLOT" --mode continue --max-new-tokens 48
echo
for q in "Repeat the first sentence of the text." "Which word follows \"sister\" in the text?"; do
  echo "--- decoder, instruct: $q"
  $ICAE generate --server "$DECODER" --slot "$SLOT" --mode instruct --prompt "$q" --max-new-tokens 48
  echo
done
