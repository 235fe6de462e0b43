#!/usr/bin/env bash
# Runs the benchmark suite against this machine's own limits and prints Markdown tables; `all` also
# rewrites the tables in BENCHMARKS.md (between its `<!-- bench:NAME -->` markers). The figures in
# BENCHMARKS.md come from here. Every suite but `api` starts its own two NATS sites from nats/*.conf on
# free ports, like the tests; `api` (and `all`) runs `scripts/up.sh` (the local deployment under .run/),
# adds a second API process on a free port with the alert cap lifted, signs in through the fake provider
# and drives alert creation with `oha`. Without oha (.run/tools/bin/oha or on PATH) the API run is skipped
# with a message; install it with `cargo install oha --locked --root .run/tools`.
#
#   scripts/bench.sh [all|jetstream|baselines|matcher|cold-start|pipeline|latency|replay|api] [--write FILE] [OPTIONS]
#
# OPTIONS go to target/release/coinalarm-bench (see its --help): --max-alerts, --messages,
# --notifications, --offered-rate, --latency-rate, --latency-seconds, --rows, --requests.
# Environment: BENCH_API_RATE (500) and BENCH_API_SECONDS (60) for the API run.
set -euo pipefail

# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$REPO_ROOT"

suite=${1:-all}
(($# > 0)) && shift
extra=("$@")
if [[ $suite == all ]]; then
  extra=(--write "$REPO_ROOT/BENCHMARKS.md" "${extra[@]}")
fi

setup_cargo_env
mkdir -p "$LOG_DIR"
ensure_tools
ensure_nats_server
if [[ $suite == api || $suite == all ]]; then
  # One build for both: up.sh is then handed this binary instead of building its own.
  cargo build --release -p coinalarm -p coinalarm-benches
else
  cargo build --release -p coinalarm-benches
fi
bench=$REPO_ROOT/target/release/coinalarm-bench

# api_bench [--write FILE]: alert creation under `oha` at BENCH_API_RATE req/s for BENCH_API_SECONDS.
api_bench() {
  local rate=${BENCH_API_RATE:-500} seconds=${BENCH_API_SECONDS:-60}
  local oha=$RUN_DIR/tools/bin/oha
  if [[ ! -x $oha ]]; then
    oha=$(command -v oha || true)
  fi
  if [[ -z $oha ]]; then
    say "skipping the API benchmark: oha is not installed (install it with:" \
      "CARGO_TARGET_DIR=.run/tools/target cargo install oha --locked --root .run/tools)"
    return 0
  fi
  scripts/up.sh --bin "$REPO_ROOT/target/release/coinalarm"
  # shellcheck source=/dev/null
  source "$RUN_DIR/env"
  local bin=$REPO_ROOT/target/release/coinalarm port metrics_port api_pid
  port=$(pick_free_port)
  metrics_port=$(pick_free_port)
  # A second API next to the deployment's: the same configuration, its own ports (API and metrics), and
  # no cap on alerts per user (one signed-in user creates rate × seconds alerts).
  "${CLI_ENV[@]}" NO_COLOR=1 COINALARM_API__LISTEN="127.0.0.1:$port" \
    COINALARM_TELEMETRY__METRICS_LISTEN="127.0.0.1:$metrics_port" \
    COINALARM_API__PUBLIC_BASE_URL="http://127.0.0.1:$port" COINALARM_API__MAX_ALERTS_PER_USER=10000000 \
    "$bin" serve api </dev/null >>"$LOG_DIR/bench-api.log" 2>&1 &
  api_pid=$!
  # shellcheck disable=SC2064
  trap "kill $api_pid 2>/dev/null || true" EXIT
  wait_for 60 "the benchmark API on port $port" "$api_pid" curl -fs -o /dev/null "http://127.0.0.1:$port/openapi.json" ||
    fail_with_log "the benchmark API did not start" "$LOG_DIR/bench-api.log"
  local api=http://127.0.0.1:$port ledger=http://127.0.0.1:$CADEV_FAKE_TWILIO_PORT/_fake/ledger
  local phone=010-5555-$((1000 + RANDOM % 9000)) e164 code="" token price
  e164=+82${phone//-/}
  e164=${e164/+820/+82}
  curl -fsS -X POST "$api/v1/auth/codes" -H 'content-type: application/json' \
    -d "{\"phone\": \"$phone\", \"locale\": \"en\"}" >/dev/null
  read_code() {
    code=$(curl -fsS "$ledger" | "$PYTHON_BIN" -c '
import json, re, sys
bodies = [entry["body"] for entry in json.load(sys.stdin) if entry["to"] == sys.argv[1]]
match = re.search(r"[0-9]{6}", bodies[-1]) if bodies else None
print(match.group(0) if match else "")' "$e164")
    [[ -n $code ]]
  }
  wait_for 60 "the sign-in code at the fake provider" "" read_code || die "no sign-in code arrived"
  token=$(curl -fsS -X POST "$api/v1/auth/session" -H 'content-type: application/json' \
    -d "{\"phone\": \"$phone\", \"code\": \"$code\"}" | "$PYTHON_BIN" -c 'import json, sys; print(json.load(sys.stdin)["token"])')
  price=$(curl -fsS "$api/v1/markets/KRW-BTC" | "$PYTHON_BIN" -c 'import json, sys; print(json.load(sys.stdin)["quote"]["price"])')
  # Far above the price: the alerts never fire, so the run measures creation and nothing else.
  local target
  target=$("$PYTHON_BIN" -c "from decimal import Decimal as D; print(int(D('$price') * 10))")
  say "oha: POST /v1/alerts at $rate req/s for ${seconds}s"
  # -w: requests still in flight at the deadline are waited for and counted, not aborted as errors.
  "$oha" -z "${seconds}s" -w -q "$rate" --latency-correction --no-tui --output-format json \
    -m POST -H "Authorization: Bearer $token" -T application/json \
    -d "{\"condition\": {\"kind\": \"target_price\", \"market\": \"KRW-BTC\", \"target\": \"$target\", \"direction\": \"up\"}, \"repeat\": {\"mode\": \"once\"}}" \
    "$api/v1/alerts" >"$LOG_DIR/oha.json"
  kill "$api_pid" 2>/dev/null || true
  trap - EXIT
  "$PYTHON_BIN" - "$LOG_DIR/oha.json" "$rate" "$seconds" <<'PY' | "$bench" section --name api "$@"
import json, sys
report = json.load(open(sys.argv[1]))
summary, latency = report["summary"], report["latencyPercentiles"]
codes = report.get("statusCodeDistribution", {})
ok = sum(count for status, count in codes.items() if status.startswith("2"))
failed = sum(codes.values()) - ok + sum(report.get("errorDistribution", {}).values())
ms = lambda seconds: "%.1f" % (1000 * seconds)
print("| offered | duration | requests | req/s | average (ms) | p50 (ms) | p95 (ms) | p99 (ms) | errors (non-2xx or failed) | status codes |")
print("|---|---|---|---|---|---|---|---|---|---|")
print("| %s req/s | %s s | %d | %.0f | %s | %s | %s | %s | %d | %s |" % (
    sys.argv[2], sys.argv[3], ok + failed, summary["requestsPerSec"], ms(summary["average"]),
    ms(latency["p50"]), ms(latency["p95"]), ms(latency["p99"]), failed,
    ", ".join("%s: %d" % item for item in sorted(codes.items()))))
PY
}

case $suite in
  api) api_bench "${extra[@]}" ;;
  all)
    "$bench" all "${extra[@]}"
    api_bench --write "$REPO_ROOT/BENCHMARKS.md"
    ;;
  *) exec "$bench" "$suite" "${extra[@]}" ;;
esac
