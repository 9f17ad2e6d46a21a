#!/usr/bin/env bash
# HTTP benchmark: wrk against `rolegate serve` (2 workers) for /v1/check and
# /v1/check/batch (100 checks), and against a bare Flask hello (bench/hello_app.py) under the
# same server settings, in the same run. Prints req/s, p50/p99 and the ratio to bare Flask.
# Only 127.0.0.1. Needs wrk (Debian: apt-get install -y wrk).
#
#   bench/http.sh                 # 100 orgs, 10 s per run
#   ORGS=10000 DURATION=20s bench/http.sh
set -euo pipefail

ORGS=${ORGS:-100}
DURATION=${DURATION:-10s}
CONNECTIONS=${CONNECTIONS:-16}
THREADS=${THREADS:-2}
WORKERS=${WORKERS:-2}
PORT=${PORT:-8100}
HELLO_PORT=${HELLO_PORT:-8101}
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(dirname "$HERE")
PYTHON=${PYTHON:-python}

command -v wrk >/dev/null || { echo "wrk not found: apt-get install -y wrk" >&2; exit 2; }
WORK=$(mktemp -d /tmp/rolegate-http-bench.XXXXXX)
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT

wait_for() {  # url
  for _ in $(seq 1 600); do
    curl -fsS -o /dev/null "$1" 2>/dev/null && return 0
    sleep 0.5
  done
  echo "server at $1 did not come up" >&2; exit 1
}

export ROLEGATE_DATABASE_URL="sqlite:///$WORK/store.db"
export ROLEGATE_JWT_SECRET="bench-secret-$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')"
export ROLEGATE_DATA_DIR="$WORK/data"
export ROLEGATE_POLICY_DIR="$WORK/policies"
export ROLEGATE_LOG_LEVEL=WARNING
mkdir -p "$ROLEGATE_POLICY_DIR"

echo "dataset: $ORGS orgs"
(cd "$ROOT" && $PYTHON bench/dataset.py --orgs "$ORGS" --sqlite "$ROLEGATE_DATABASE_URL")

(cd "$ROOT" && exec $PYTHON -m rolegate.cli serve --host 127.0.0.1 --port "$PORT" --workers "$WORKERS" \
  >"$WORK/serve.log" 2>&1) &
PIDS+=($!)
(cd "$ROOT" && exec $PYTHON bench/hello_app.py --port "$HELLO_PORT" --workers "$WORKERS" \
  >"$WORK/hello.log" 2>&1) &
PIDS+=($!)
wait_for "http://127.0.0.1:$PORT/readyz"
wait_for "http://127.0.0.1:$HELLO_PORT/"

ORG=org00001
SUBJECT="user0@$ORG"  # an admin of $ORG
TOKEN=$(cd "$ROOT" && $PYTHON -m rolegate.cli token --sub "$SUBJECT" --org "$ORG" --ttl 1h)

cat >"$WORK/check.lua" <<LUA
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer $TOKEN"
wrk.body = '{"resource": "/kind3/42", "action": "update"}'
LUA
BATCH=$($PYTHON - <<PY
import json
checks = [{"resource": f"/kind{i % 12}/{i}", "action": ("read", "list", "update", "delete")[i % 4]} for i in range(100)]
print(json.dumps({"checks": checks}))
PY
)
cat >"$WORK/batch.lua" <<LUA
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer $TOKEN"
wrk.body = '$BATCH'
LUA

# Sanity: the service answers (and allows) before we measure it.
curl -fsS "http://127.0.0.1:$PORT/v1/check" -H "Authorization: Bearer $TOKEN" \
  -H 'Content-Type: application/json' -d '{"resource": "/kind3/42", "action": "update"}' \
  | grep -q '"allowed":true' || { echo "check did not allow; see $WORK/serve.log" >&2; exit 1; }

run_wrk() {  # name url [script]
  local name=$1 url=$2 script=${3:-}
  local args=(-t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" --latency)
  [ -n "$script" ] && args+=(-s "$script")
  wrk "${args[@]}" "$url" >"$WORK/$name.txt"
  local rps p50 p99 non2xx
  rps=$(awk '/Requests\/sec/ {print $2}' "$WORK/$name.txt")
  p50=$(awk '$1 == "50%" {print $2}' "$WORK/$name.txt")
  p99=$(awk '$1 == "99%" {print $2}' "$WORK/$name.txt")
  non2xx=$(awk '/Non-2xx/ {print $NF}' "$WORK/$name.txt")
  printf '%-14s %10s req/s  p50 %8s  p99 %8s  non-2xx %s\n' "$name" "$rps" "$p50" "$p99" "${non2xx:-0}"
  eval "RPS_${name//-/_}=$rps"
}

echo "wrk: $THREADS threads, $CONNECTIONS connections, $DURATION each; $WORKERS workers"
run_wrk hello "http://127.0.0.1:$HELLO_PORT/"
run_wrk check "http://127.0.0.1:$PORT/v1/check" "$WORK/check.lua"
run_wrk batch "http://127.0.0.1:$PORT/v1/check/batch" "$WORK/batch.lua"
run_wrk hello-again "http://127.0.0.1:$HELLO_PORT/"

$PYTHON - <<PY
hello = max($RPS_hello, $RPS_hello_again)
print(f"single check / bare Flask hello: {$RPS_check / hello:.0%} (target >= 70%)")
print(f"batch of 100: {$RPS_batch * 100:,.0f} decisions/s (target >= 50,000)")
PY
