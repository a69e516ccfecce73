#!/usr/bin/env bash
# The Kubernetes topology on one machine, from the built binaries: one Redis slot cache and N
# encoders + M decoders (default 2 + 2) on free loopback ports, all sharing the Redis store.
#
#   deploy/local/cluster.sh up [options] [-- extra service flags]
#   deploy/local/cluster.sh status [--state-dir DIR]
#   deploy/local/cluster.sh down   [--state-dir DIR]
#   deploy/local/cluster.sh restart NAME [--signal TERM|KILL] [--state-dir DIR]
#       NAME is redis, encoder-I or decoder-I: stops it (TERM: a service drains for its grace
#       period; KILL: at once) and starts it again on the same ports with the same flags, then
#       waits until it serves. Redis comes back empty (no persistence), as after a crash.
#
# up options:
#   --build-dir DIR      where encoder_service/ and decoder_service/ were built (default: build)
#   --state-dir DIR      pid, port and log files (default: /tmp/icae-local)
#   --model DIR          model folder (default: the services' embedded default model)
#   --adapter FILE       ICAE adapter (default: the services' default for the model)
#   --dtype D            bfloat16 | float32 | float16 (default: the services' default)
#   --threads N          LibTorch threads per process (default 1: four processes share the CPU)
#   --encoders N         (default 2)       --decoders N   (default 2)
#   --redis-maxmemory S  Redis maxmemory, e.g. 256mb (default 256mb; policy allkeys-lru)
#   --grace-period D     services' --grace_period (default 5s)
#   --timeout SECONDS    how long to wait for every service to report SERVING (default 300)
#   --encoder-flag F / --decoder-flag F   one more flag for every encoder / decoder (repeatable)
#
# `up` returns once every service is SERVING and prints (also written to STATE/cluster.env):
#   REDIS=127.0.0.1:PORT  STORE=redis://…
#   ENCODERS=HOST:PORT,HOST:PORT   ENCODER_METRICS=HOST:PORT,…
#   DECODERS=HOST:PORT,HOST:PORT   DECODER_METRICS=HOST:PORT,…
# and STATE/prometheus-targets.json for the icae-local job of deploy/monitoring/prometheus.yml.
# `down` sends SIGTERM (the services drain for --grace-period), waits, then stops Redis.
# Processes are detached from the calling shell; `down` is the way to stop them.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
CMD="${1:-}"
[[ $# -gt 0 ]] && shift

BUILD_DIR="$ROOT/build"
STATE_DIR="/tmp/icae-local"
MODEL="" ADAPTER="" DTYPE=""
THREADS=1 N_ENC=2 N_DEC=2 REDIS_MAXMEMORY=256mb GRACE=5s TIMEOUT=300
EXTRA=() EXTRA_ENCODER=() EXTRA_DECODER=()
RESTART_NAME="" SIGNAL=TERM
if [[ "$CMD" == restart && $# -gt 0 && "$1" != --* ]]; then RESTART_NAME="$1"; shift; fi

die() { echo "cluster.sh: $*" >&2; exit 1; }

while [[ $# -gt 0 ]]; do
  case "$1" in
    --build-dir) BUILD_DIR="$2"; shift 2 ;;
    --state-dir) STATE_DIR="$2"; shift 2 ;;
    --model) MODEL="$2"; shift 2 ;;
    --adapter) ADAPTER="$2"; shift 2 ;;
    --dtype) DTYPE="$2"; shift 2 ;;
    --threads) THREADS="$2"; shift 2 ;;
    --encoders) N_ENC="$2"; shift 2 ;;
    --decoders) N_DEC="$2"; shift 2 ;;
    --redis-maxmemory) REDIS_MAXMEMORY="$2"; shift 2 ;;
    --grace-period) GRACE="$2"; shift 2 ;;
    --timeout) TIMEOUT="$2"; shift 2 ;;
    --signal) SIGNAL="$2"; shift 2 ;;
    --encoder-flag) EXTRA_ENCODER+=("$2"); shift 2 ;;
    --decoder-flag) EXTRA_DECODER+=("$2"); shift 2 ;;
    --) shift; EXTRA=("$@"); break ;;
    *) die "unknown option '$1' (see the comment at the top of $0)" ;;
  esac
done

# Seconds of a duration like 5s, 500ms, 1m (for the stop wait).
duration_seconds() {
  local d="$1"
  case "$d" in
    *ms) echo 1 ;;
    *s) d="${d%s}"; d="${d%%.*}" ;;
    *m) d="${d%m}"; [[ "$d" =~ ^[0-9]+$ ]] && d=$(( d * 60 )) ;;
  esac
  if [[ "$d" =~ ^[0-9]+$ ]]; then echo "$d"; else echo 30; fi
}

alive() { [[ -n "$1" ]] && kill -0 "$1" 2>/dev/null; }

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

port_field() {  # port_field FILE grpc|metrics
  sed -n "s/^$2=//p" "$1" 2>/dev/null
}

stop_all() {
  local pids=() f pid
  for f in "$STATE_DIR"/encoder-*.pid "$STATE_DIR"/decoder-*.pid; do
    [[ -f "$f" ]] || continue
    pid="$(cat "$f")"
    if alive "$pid"; then kill -TERM "$pid" 2>/dev/null || true; pids+=("$pid"); fi
  done
  local grace_s limit
  grace_s="$(cat "$STATE_DIR/grace_seconds" 2>/dev/null || echo 30)"
  limit=$(( (grace_s + 10) * 10 ))
  for pid in "${pids[@]}"; do
    local i=0
    while alive "$pid" && (( i < limit )); do sleep 0.1; i=$(( i + 1 )); done
    if alive "$pid"; then
      echo "cluster.sh: pid $pid did not stop after SIGTERM; killing" >&2
      kill -KILL "$pid" 2>/dev/null || true
    fi
  done
  if [[ -f "$STATE_DIR/redis.pid" ]]; then
    pid="$(cat "$STATE_DIR/redis.pid")"
    if alive "$pid"; then
      kill -TERM "$pid" 2>/dev/null || true
      local i=0
      while alive "$pid" && (( i < 100 )); do sleep 0.1; i=$(( i + 1 )); done
      if alive "$pid"; then kill -KILL "$pid" 2>/dev/null || true; fi
    fi
  fi
  rm -f "$STATE_DIR"/*.pid "$STATE_DIR/cluster.env"
}

start_service() {  # start_service encoder|decoder INDEX [GRPC_PORT METRICS_PORT]
  local side="$1" idx="$2" bin
  bin="$BUILD_DIR/${side}_service/${side}_service"
  local name="$side-$idx"
  local args=("--listen=127.0.0.1:${3:-0}" "--metrics_port=${4:-0}" "--port_file=$STATE_DIR/$name.port"
              "--store=$STORE" "--threads=$THREADS" "--grace_period=$GRACE")
  [[ -n "$MODEL" ]] && args+=("--model=$MODEL")
  [[ -n "$ADAPTER" ]] && args+=("--adapter=$ADAPTER")
  [[ -n "$DTYPE" ]] && args+=("--dtype=$DTYPE")
  args+=("${EXTRA[@]}")
  if [[ "$side" == encoder ]]; then args+=("${EXTRA_ENCODER[@]}"); else args+=("${EXTRA_DECODER[@]}"); fi
  rm -f "$STATE_DIR/$name.port"
  # setsid: not in the caller's process group, so a Ctrl-C there does not reach it.
  setsid "$bin" "${args[@]}" </dev/null >"$STATE_DIR/$name.log" 2>&1 &
  echo $! >"$STATE_DIR/$name.pid"
}

wait_serving() {  # wait_serving NAME DEADLINE_EPOCH
  local name="$1" deadline="$2" pid
  pid="$(cat "$STATE_DIR/$name.pid")"
  # RunService logs "...; SERVING" once the model and store are loaded and health says SERVING.
  until grep -q "; SERVING" "$STATE_DIR/$name.log" 2>/dev/null; do
    if ! alive "$pid"; then
      tail -n 20 "$STATE_DIR/$name.log" >&2 || true
      die "$name exited during start-up (log: $STATE_DIR/$name.log)"
    fi
    if (( $(date +%s) > deadline )); then
      tail -n 20 "$STATE_DIR/$name.log" >&2 || true
      die "$name did not report SERVING within ${TIMEOUT}s (log: $STATE_DIR/$name.log)"
    fi
    sleep 0.2
  done
  [[ -s "$STATE_DIR/$name.port" ]] || die "$name: no port file"
}

join_by_comma() { local IFS=,; echo "$*"; }

# Redis: loopback only, no persistence, LRU under a byte bound (as in the k8s base). Fails when
# the port is taken.
start_redis() {  # start_redis PORT
  local port="$1"
  mkdir -p "$STATE_DIR/redis"
  setsid "$REDIS_BIN" --bind 127.0.0.1 --port "$port" --save "" --appendonly no \
    --dir "$STATE_DIR/redis" --maxmemory "$REDIS_MAXMEMORY" --maxmemory-policy allkeys-lru \
    --lazyfree-lazy-eviction yes </dev/null >"$STATE_DIR/redis.log" 2>&1 &
  echo $! >"$STATE_DIR/redis.pid"
  for _ in $(seq 50); do
    grep -q "Ready to accept connections" "$STATE_DIR/redis.log" && return 0
    alive "$(cat "$STATE_DIR/redis.pid")" || break
    sleep 0.1
  done
  kill -KILL "$(cat "$STATE_DIR/redis.pid")" 2>/dev/null || true
  return 1
}

# Stops one process: SIGTERM (waits the grace period + 10 s, then SIGKILL) or SIGKILL.
stop_one() {  # stop_one PID TERM|KILL
  local pid="$1" sig="$2" i=0 limit
  alive "$pid" || return 0
  kill -"$sig" "$pid" 2>/dev/null || true
  limit=$(( ($(cat "$STATE_DIR/grace_seconds" 2>/dev/null || echo 30) + 10) * 10 ))
  while alive "$pid" && (( i < limit )); do sleep 0.1; i=$(( i + 1 )); done
  if alive "$pid"; then kill -KILL "$pid" 2>/dev/null || true; sleep 0.2; fi
}

case "$CMD" in
  up)
    for side in encoder decoder; do
      [[ -x "$BUILD_DIR/${side}_service/${side}_service" ]] ||
        die "$BUILD_DIR/${side}_service/${side}_service not found (build it, or pass --build-dir)"
    done
    REDIS_BIN="${ICAE_REDIS_SERVER:-$(command -v redis-server || echo /usr/bin/redis-server)}"
    [[ -x "$REDIS_BIN" ]] || die "redis-server not found (apt-get install redis-server)"
    mkdir -p "$STATE_DIR"
    if [[ -f "$STATE_DIR/cluster.env" ]]; then
      die "a cluster is already running with state in $STATE_DIR (run: $0 down --state-dir $STATE_DIR)"
    fi
    declare -p BUILD_DIR MODEL ADAPTER DTYPE THREADS GRACE REDIS_MAXMEMORY REDIS_BIN TIMEOUT EXTRA \
      EXTRA_ENCODER EXTRA_DECODER \
      >"$STATE_DIR/settings.sh"
    started_ok=0
    trap 'if [[ $started_ok != 1 ]]; then echo "cluster.sh: start-up failed; stopping what started" >&2; stop_all; fi' EXIT
    duration_seconds "$GRACE" >"$STATE_DIR/grace_seconds"

    REDIS_PORT=""
    for _ in 1 2 3 4 5; do
      port="$(free_port)"
      if start_redis "$port"; then REDIS_PORT="$port"; break; fi
    done
    [[ -n "$REDIS_PORT" ]] || die "redis-server did not start (log: $STATE_DIR/redis.log)"
    STORE="redis://127.0.0.1:$REDIS_PORT/0"
    declare -p STORE >>"$STATE_DIR/settings.sh"

    for i in $(seq 0 $(( N_ENC - 1 ))); do start_service encoder "$i"; done
    for i in $(seq 0 $(( N_DEC - 1 ))); do start_service decoder "$i"; done
    deadline=$(( $(date +%s) + TIMEOUT ))
    enc=() enc_m=() dec=() dec_m=() targets=()
    for i in $(seq 0 $(( N_ENC - 1 ))); do
      wait_serving "encoder-$i" "$deadline"
      enc+=("$(port_field "$STATE_DIR/encoder-$i.port" grpc)")
      enc_m+=("$(port_field "$STATE_DIR/encoder-$i.port" metrics)")
      targets+=("{\"targets\": [\"${enc_m[-1]}\"], \"labels\": {\"component\": \"encoder\", \"pod\": \"encoder-$i\"}}")
    done
    for i in $(seq 0 $(( N_DEC - 1 ))); do
      wait_serving "decoder-$i" "$deadline"
      dec+=("$(port_field "$STATE_DIR/decoder-$i.port" grpc)")
      dec_m+=("$(port_field "$STATE_DIR/decoder-$i.port" metrics)")
      targets+=("{\"targets\": [\"${dec_m[-1]}\"], \"labels\": {\"component\": \"decoder\", \"pod\": \"decoder-$i\"}}")
    done
    started_ok=1
    echo "[$(join_by_comma "${targets[@]}")]" >"$STATE_DIR/prometheus-targets.json"
    {
      echo "REDIS=127.0.0.1:$REDIS_PORT"
      echo "STORE=$STORE"
      echo "ENCODERS=$(join_by_comma "${enc[@]}")"
      echo "ENCODER_METRICS=$(join_by_comma "${enc_m[@]}")"
      echo "DECODERS=$(join_by_comma "${dec[@]}")"
      echo "DECODER_METRICS=$(join_by_comma "${dec_m[@]}")"
      echo "STATE_DIR=$STATE_DIR"
    } >"$STATE_DIR/cluster.env"
    cat "$STATE_DIR/cluster.env"
    ;;
  status)
    [[ -f "$STATE_DIR/cluster.env" ]] || { echo "no cluster in $STATE_DIR"; exit 1; }
    cat "$STATE_DIR/cluster.env"
    code=0
    for f in "$STATE_DIR"/redis.pid "$STATE_DIR"/encoder-*.pid "$STATE_DIR"/decoder-*.pid; do
      [[ -f "$f" ]] || continue
      name="$(basename "$f" .pid)"
      if alive "$(cat "$f")"; then echo "$name: running (pid $(cat "$f"))"
      else echo "$name: NOT running (log: $STATE_DIR/$name.log)"; code=1; fi
    done
    exit "$code"
    ;;
  restart)
    [[ -f "$STATE_DIR/settings.sh" && -f "$STATE_DIR/cluster.env" ]] || die "no cluster in $STATE_DIR"
    [[ "$SIGNAL" == TERM || "$SIGNAL" == KILL ]] || die "--signal must be TERM or KILL"
    sig="$SIGNAL"
    # shellcheck disable=SC1091
    source "$STATE_DIR/settings.sh"
    case "$RESTART_NAME" in
      redis)
        port="${STORE#redis://127.0.0.1:}"; port="${port%%/*}"
        stop_one "$(cat "$STATE_DIR/redis.pid")" "$sig"
        ok=0
        for _ in $(seq 50); do if start_redis "$port"; then ok=1; break; fi; sleep 0.1; done
        (( ok )) || die "redis did not restart on port $port (log: $STATE_DIR/redis.log)"
        ;;
      encoder-[0-9]*|decoder-[0-9]*)
        side="${RESTART_NAME%%-*}" idx="${RESTART_NAME#*-}"
        [[ -f "$STATE_DIR/$RESTART_NAME.pid" ]] || die "no $RESTART_NAME in $STATE_DIR"
        grpc="$(port_field "$STATE_DIR/$RESTART_NAME.port" grpc)"; grpc="${grpc##*:}"
        metrics="$(port_field "$STATE_DIR/$RESTART_NAME.port" metrics)"; metrics="${metrics##*:}"
        stop_one "$(cat "$STATE_DIR/$RESTART_NAME.pid")" "$sig"
        mv -f "$STATE_DIR/$RESTART_NAME.log" "$STATE_DIR/$RESTART_NAME.log.$(date +%s%N)" 2>/dev/null || true
        start_service "$side" "$idx" "$grpc" "$metrics"
        wait_serving "$RESTART_NAME" $(( $(date +%s) + TIMEOUT ))
        ;;
      *) die "restart NAME: redis, encoder-I or decoder-I" ;;
    esac
    echo "$RESTART_NAME restarted ($sig)"
    ;;
  down)
    stop_all
    echo "stopped (logs kept in $STATE_DIR)"
    ;;
  *)
    die "usage: $0 up|status|down|restart [options] (see the comment at the top of the script)"
    ;;
esac
