#!/usr/bin/env bash
# Checks of deploy/ (Kubernetes manifests, monitoring, local cluster script). Run by ctest
# (tests/deploy.cmake) and by hand:
#   scripts/check-deploy.sh render   [OUT_DIR]   kubectl kustomize renders every overlay, and
#                                                every component on top of the base
#   scripts/check-deploy.sh lint                 yamllint (deploy/yamllint.yaml, strict) over
#                                                deploy/; dashboard JSON parses; scripts parse
#   scripts/check-deploy.sh flags    [BUILD_DIR] rendered manifests use only flags that
#                                                encoder_service/decoder_service --helpfull list
#   scripts/check-deploy.sh metrics  [BUILD_DIR] deploy/local/cluster.sh up (Redis + 2 + 2, tiny
#                                                test model), one encode/generate round trip
#                                                across processes, then the dashboard, adapter
#                                                rules and HPAs name only exported metrics
#   scripts/check-deploy.sh all      [BUILD_DIR]
# BUILD_DIR defaults to $ICAE_BUILD_DIR or build/. A missing tool (kubectl, yamllint, python3
# with yaml, redis-server, test data) skips with exit code 77, or fails when
# ICAE_REQUIRE_DEPLOY_TOOLS=1 or ICAE_REQUIRE_REDIS=1 (CI) is set.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DEPLOY="$ROOT/deploy"
CHECKS="$ROOT/tests/integration/deploy_checks.py"
CMD="${1:-all}"
[[ $# -gt 0 ]] && shift

skip() {
  if [[ "${ICAE_REQUIRE_DEPLOY_TOOLS:-0}" == 1 || "${ICAE_REQUIRE_REDIS:-0}" == 1 ]]; then
    echo "check-deploy: $* (required in CI)" >&2
    exit 1
  fi
  echo "check-deploy: SKIP: $*" >&2
  exit 77
}

need() {  # need TOOL PACKAGE
  command -v "$1" >/dev/null 2>&1 || skip "$1 not found (install: $2)"
}

# A python3 that has the yaml module (Debian's python3-yaml comes with yamllint).
python_with_yaml() {
  local p
  for p in /usr/bin/python3 python3; do
    if command -v "$p" >/dev/null 2>&1 && "$p" -c 'import yaml' 2>/dev/null; then
      echo "$p"
      return
    fi
  done
  skip "no python3 with the yaml module (install: python3-yaml)"
}

build_dir() {
  local b="${1:-${ICAE_BUILD_DIR:-$ROOT/build}}"
  [[ "$b" = /* ]] || b="$ROOT/$b"
  echo "$b"
}

render() {  # render OUT_DIR: one file per overlay and per component variant
  local out="$1" d name rel n
  need kubectl "kubectl (v1.27+; kustomize is built in)"
  mkdir -p "$out"
  n=0
  for d in "$DEPLOY"/k8s/overlays/*/; do
    name="$(basename "$d")"
    kubectl kustomize "$d" >"$out/overlay-$name.yaml" || { echo "render: overlay $name failed" >&2; exit 1; }
    echo "render: overlay $name: $(grep -c '^kind:' "$out/overlay-$name.yaml") objects"
    n=$((n + 1))
  done
  (( n >= 2 )) || { echo "render: expected the local and production overlays" >&2; exit 1; }
  for d in "$DEPLOY"/k8s/components/*/; do
    name="$(basename "$d")"
    local tmp
    tmp="$(mktemp -d "$out/component-XXXXXX")"
    rel="$(python3 -c 'import os,sys; print(os.path.relpath(sys.argv[1], sys.argv[2]))' "$DEPLOY/k8s" "$tmp")"
    printf 'apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources:\n  - %s/base\ncomponents:\n  - %s/components/%s\n' \
      "$rel" "$rel" "$name" >"$tmp/kustomization.yaml"
    kubectl kustomize "$tmp" >"$out/component-$name.yaml" || { echo "render: component $name failed" >&2; exit 1; }
    rm -rf "$tmp"
    echo "render: base + component $name: $(grep -c '^kind:' "$out/component-$name.yaml") objects"
  done
}

lint() {
  need yamllint "apt-get install yamllint"
  yamllint -c "$DEPLOY/yamllint.yaml" --strict -f parsable "$DEPLOY"
  echo "lint: yamllint clean ($(find "$DEPLOY" -name '*.yaml' -o -name '*.yml' | wc -l) files)"
  python3 -m json.tool "$DEPLOY/monitoring/grafana-dashboard.json" >/dev/null
  echo "lint: grafana-dashboard.json parses"
  bash -n "$DEPLOY/local/cluster.sh"
  bash -n "$ROOT/scripts/check-deploy.sh"
  if command -v shellcheck >/dev/null 2>&1; then  # optional: not in install-deps.sh
    shellcheck "$DEPLOY/local/cluster.sh" "$ROOT/scripts/check-deploy.sh"
    echo "lint: shell scripts parse and pass shellcheck"
  else
    echo "lint: shell scripts parse (shellcheck not installed)"
  fi
}

flags() {
  local b py out
  b="$(build_dir "${1:-}")"
  py="$(python_with_yaml)"
  for s in encoder_service decoder_service; do
    [[ -x "$b/$s/$s" ]] || { echo "flags: $b/$s/$s not built" >&2; exit 1; }
  done
  out="$(mktemp -d)"
  render "$out" >/dev/null
  local rc=0
  "$py" "$CHECKS" flags --encoder "$b/encoder_service/encoder_service" \
    --decoder "$b/decoder_service/decoder_service" "$out"/*.yaml || rc=$?
  rm -rf "$out"
  return "$rc"
}

metrics() {
  local b py out state golden icae env
  b="$(build_dir "${1:-}")"
  py="$(python_with_yaml)"
  need redis-server "apt-get install redis-server"
  golden="${ICAE_TESTDATA:-$ROOT/../shared/testdata}/icae-golden"
  [[ -d "$golden/model" ]] || skip "test data not found at $golden (set ICAE_TESTDATA)"
  icae="$b/tools/icae"
  [[ -x "$icae" ]] || { echo "metrics: $icae not built (needed for the round trip)" >&2; exit 1; }
  out="$(mktemp -d)"
  state="$out/cluster"
  # shellcheck disable=SC2064
  trap "'$DEPLOY/local/cluster.sh' down --state-dir '$state' >/dev/null 2>&1 || true; rm -rf '$out'" EXIT
  render "$out" >/dev/null
  "$DEPLOY/local/cluster.sh" up --build-dir "$b" --state-dir "$state" --model "$golden/model" \
    --adapter "$golden/icae_adapter.safetensors" --dtype float32 --threads 1 --timeout 120 \
    --grace-period 2s
  env="$state/cluster.env"
  local enc0 enc1 dec0 dec1 slot
  enc0="$(sed -n 's/^ENCODERS=//p' "$env" | cut -d, -f1)"
  enc1="$(sed -n 's/^ENCODERS=//p' "$env" | cut -d, -f2)"
  dec0="$(sed -n 's/^DECODERS=//p' "$env" | cut -d, -f1)"
  dec1="$(sed -n 's/^DECODERS=//p' "$env" | cut -d, -f2)"
  # Slots written by one encoder are read by both decoders through Redis; the second encoder
  # sees the same context as a cache hit (same slot ID).
  local text="A shared slot cache lets any decoder answer for a context that any encoder compressed."
  slot="$("$icae" encode --server "$enc0" --text "$text")"
  [[ "$slot" =~ ^[0-9a-f]{16,}$ ]] || { echo "metrics: encode printed '$slot'" >&2; exit 1; }
  local slot2
  slot2="$("$icae" encode --server "$enc1" --text "$text")"
  [[ "$slot2" == "$slot" ]] || { echo "metrics: encoders disagree: $slot vs $slot2" >&2; exit 1; }
  "$icae" generate --server "$dec0" --slot "$slot" --mode autoencode --max-new-tokens 4 >/dev/null
  "$icae" generate --server "$dec1" --slot "$slot" --mode autoencode --max-new-tokens 4 >/dev/null
  echo "metrics: encode on $enc0 (hit on $enc1) -> generate on $dec0 and $dec1: OK"
  local scrape=()
  IFS=, read -r -a scrape <<<"$(sed -n 's/^ENCODER_METRICS=//p' "$env"),$(sed -n 's/^DECODER_METRICS=//p' "$env")"
  "$py" "$CHECKS" metrics --dashboard "$DEPLOY/monitoring/grafana-dashboard.json" \
    --rules "$DEPLOY/monitoring/prometheus-adapter-rules.yaml" \
    --hpa "$out/overlay-production.yaml" --scrape "${scrape[@]}"
  "$DEPLOY/local/cluster.sh" down --state-dir "$state"
  # Every process the script started is gone.
  if pgrep -f -- "--state-dir $state" >/dev/null || pgrep -f -- "$state/" >/dev/null; then
    echo "metrics: processes left after cluster.sh down" >&2
    exit 1
  fi
  echo "metrics: cluster.sh down stopped every process"
}

case "$CMD" in
  render)
    if [[ -n "${1:-}" ]]; then render "$1"; else t="$(mktemp -d)"; render "$t"; rm -rf "$t"; fi ;;
  lint) lint ;;
  flags) flags "${1:-}" ;;
  metrics) metrics "${1:-}" ;;
  all) t="$(mktemp -d)"; render "$t"; rm -rf "$t"; lint; flags "${1:-}"; metrics "${1:-}" ;;
  *) echo "usage: $0 render|lint|flags|metrics|all [DIR]" >&2; exit 2 ;;
esac
