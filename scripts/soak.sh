#!/usr/bin/env bash
# Soak with faults (issue 14): scripts/soak.sh [--minutes M] [--clients N] [--build-dir DIR]
# [--state-dir DIR]. Starts Redis + 2 encoders + 2 decoders (deploy/local/cluster.sh), runs
# concurrent clients for M minutes (default 5) while Redis, a decoder (SIGKILL) and an encoder
# (SIGTERM, drain) are restarted, and prints
#   soak: requests=N ok=N recovered=N failed=N cut_streams=N rss_growth_pct=X
# Exit status 1 when failed or cut_streams is not 0. Needs a build (scripts/build.sh), which
# also generates the Python client's stubs. See scripts/soak.py for what each figure counts.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
exec /usr/bin/python3 "$ROOT/scripts/soak.py" "$@"
