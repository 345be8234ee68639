#!/usr/bin/env bash
# `make serve` / `make stop`: a Prefect server on loopback, the process work pool, the deployments of
# deploy/prefect.yaml and one worker, all in the background; pid files and logs under $PREFECT_HOME.
#
#   deploy/serve.sh start    # server (127.0.0.1:$PREFECT_PORT) -> pool -> deployments -> worker
#   deploy/serve.sh stop     # stops the worker and the server it started (by their pid files); flow
#                            # runs in progress go on (each in its own session): cancel them in the UI
#
# Settings (environment): PREFECT_PORT (4200), PREFECT_HOME (./.prefect), TRELM_DATA_ROOT (./data, where
# the `sample` deployment writes), TRELM_SCHEDULE (cron of `full-pipeline`; default: prefect.yaml's),
# PREFECT (the prefect executable; default: the one beside this checkout's .venv python).
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
PREFECT_PORT="${PREFECT_PORT:-4200}"
export PREFECT_HOME="${PREFECT_HOME:-$ROOT/.prefect}"
export PREFECT_API_URL="http://127.0.0.1:${PREFECT_PORT}/api"
export TRELM_HOME="$ROOT" TRELM_DATA_ROOT="${TRELM_DATA_ROOT:-$ROOT/data}"
export PREFECT_SERVER_ANALYTICS_ENABLED=false
PREFECT="${PREFECT:-$ROOT/.venv/bin/prefect}"
POOL=trelm-process

# start a command in its own session (so `stop` can end it with its children); pid to $1.pid
start_bg() {
  local name=$1; shift
  setsid "$@" >"$PREFECT_HOME/$name.log" 2>&1 < /dev/null &
  echo $! >"$PREFECT_HOME/$name.pid"
}

wait_healthy() {
  for _ in $(seq 1 240); do
    if "$ROOT/.venv/bin/python" -c "import urllib.request,sys; urllib.request.urlopen(sys.argv[1], timeout=2)" \
        "$PREFECT_API_URL/health" 2>/dev/null; then
      return 0
    fi
    kill -0 "$(cat "$PREFECT_HOME/server.pid")" 2>/dev/null || { tail -50 "$PREFECT_HOME/server.log"; exit 1; }
    sleep 0.5
  done
  echo "prefect server not healthy at $PREFECT_API_URL after 120 s" >&2
  exit 1
}

stop_one() {
  local pidfile="$PREFECT_HOME/$1.pid"
  [ -f "$pidfile" ] || return 0
  local pid; pid=$(cat "$pidfile")
  if kill -0 "$pid" 2>/dev/null; then
    # TERM to the process itself (TERM to its whole group at once makes the worker hang); prefect
    # 3.8's worker can still hang on its way out once it has run a flow: the group is killed after 10 s
    kill -TERM "$pid"
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
  fi
  kill -KILL -- "-$pid" 2>/dev/null || true
  rm -f "$pidfile"
}

start() {
  mkdir -p "$PREFECT_HOME"
  if [ -f "$PREFECT_HOME/server.pid" ] && kill -0 "$(cat "$PREFECT_HOME/server.pid")" 2>/dev/null; then
    echo "already serving (pid $(cat "$PREFECT_HOME/server.pid")); run 'make stop' first" >&2
    exit 1
  fi
  # the server itself must not talk to an API URL: it is the API
  start_bg server env -u PREFECT_API_URL "$PREFECT" server start --host 127.0.0.1 --port "$PREFECT_PORT"
  wait_healthy
  "$PREFECT" work-pool create "$POOL" --type process --overwrite >/dev/null
  cd "$ROOT"
  "$PREFECT" --no-prompt deploy --prefect-file deploy/prefect.yaml --name full-pipeline \
    ${TRELM_SCHEDULE:+--cron "$TRELM_SCHEDULE"} >/dev/null
  "$PREFECT" --no-prompt deploy --prefect-file deploy/prefect.yaml --name sample >/dev/null
  start_bg worker "$PREFECT" worker start --pool "$POOL"
  echo "Prefect API $PREFECT_API_URL (UI http://127.0.0.1:$PREFECT_PORT); worker on pool $POOL;" \
    "logs and pids in $PREFECT_HOME; sample outputs in $TRELM_DATA_ROOT"
}

case "${1:-}" in
  start) start ;;
  stop) stop_one worker; stop_one server ;;
  *) echo "usage: $0 start|stop" >&2; exit 2 ;;
esac
