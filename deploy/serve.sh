#!/usr/bin/env bash
# `make serve` / `make stop`: a Prefect server on loopback, the process work pool, the deployments of
# deploy/prefect.yaml and one worker, all in the background; pid files and logs under $PREFECT_HOME.
#
#   deploy/serve.sh start    # server (127.0.0.1:$PREFECT_PORT) -> pool -> deployments -> worker
#   deploy/serve.sh stop     # stops the worker and the server it started (by their pid files under the
#                            # same PREFECT_HOME); flow runs in progress go on: cancel them in the UI
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
PYTHON="$(dirname "$PREFECT")/python"  # the health check's: the environment of the prefect given
POOL=trelm-process

# start a command in its own session (so `stop` can end it with its children); pid to $1.pid
start_bg() {
  local name=$1; shift
  setsid "$@" >"$PREFECT_HOME/$name.log" 2>&1 < /dev/null &
  echo $! >"$PREFECT_HOME/$name.pid"
}

wait_healthy() {
  for _ in $(seq 1 240); do
    if "$PYTHON" -c "import urllib.request,sys; urllib.request.urlopen(sys.argv[1], timeout=2)" \
        "$PREFECT_API_URL/health" 2>/dev/null; then
      return 0
    fi
    kill -0 "$(cat "$PREFECT_HOME/server.pid")" 2>/dev/null || { tail -50 "$PREFECT_HOME/server.log"; exit 1; }
    sleep 0.5
  done
  echo "prefect server not healthy at $PREFECT_API_URL after 120 s" >&2
  exit 1
}

# stop the process of $1.pid and its session; says what it stopped; fails when there was no pid file
stop_one() {
  local pidfile="$PREFECT_HOME/$1.pid"
  [ -f "$pidfile" ] || return 1
  local pid; pid=$(cat "$pidfile")
  if ! kill -0 "$pid" 2>/dev/null; then
    echo "$1 (pid $pid) was not running"
  else
    # TERM to the process itself (TERM to its whole group at once makes the worker hang); prefect
    # 3.8's worker can still hang on its way out once it has run a flow: the group is killed after 10 s
    kill -TERM "$pid"
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    echo "stopped $1 (pid $pid)"
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
  # the server must not talk to an API URL (it is the API), and it tells the UI where the API is from
  # its own host and port settings (`/ui-settings`): set those rather than `--port`, or the UI of a server
  # on another port looks for its API on 4200
  start_bg server env -u PREFECT_API_URL PREFECT_SERVER_API_HOST=127.0.0.1 \
    PREFECT_SERVER_API_PORT="$PREFECT_PORT" "$PREFECT" server start
  wait_healthy
  "$PREFECT" work-pool create "$POOL" --type process --overwrite >/dev/null
  cd "$ROOT"
  "$PREFECT" --no-prompt deploy --prefect-file deploy/prefect.yaml --name full-pipeline \
    ${TRELM_SCHEDULE:+--cron "$TRELM_SCHEDULE"} >/dev/null
  "$PREFECT" --no-prompt deploy --prefect-file deploy/prefect.yaml --name sample >/dev/null
  start_bg worker "$PREFECT" worker start --pool "$POOL"
  echo "started: Prefect server (pid $(cat "$PREFECT_HOME/server.pid")), UI http://127.0.0.1:$PREFECT_PORT"
  echo "started: worker on pool $POOL (pid $(cat "$PREFECT_HOME/worker.pid")); deployments trelm/full-pipeline," \
    "trelm/sample (outputs in $TRELM_DATA_ROOT)"
  echo "logs and pid files: $PREFECT_HOME"
  echo "next: export PREFECT_API_URL=$PREFECT_API_URL; prefect deployment run trelm/sample --watch"
  echo "stop: PREFECT_HOME=$PREFECT_HOME make stop"
}

stop() {
  local stopped=0
  stop_one worker && stopped=1
  stop_one server && stopped=1
  if [ "$stopped" = 0 ]; then
    echo "nothing to stop: no pid files in $PREFECT_HOME (serve and stop need the same PREFECT_HOME)" >&2
    exit 1
  fi
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  *) echo "usage: $0 start|stop" >&2; exit 2 ;;
esac
