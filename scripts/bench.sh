#!/usr/bin/env bash
# Runs the benchmark suite against this machine's own limits and prints Markdown tables; `all` also
# rewrites the tables in BENCHMARKS.md (between its `<!-- bench:NAME -->` markers). The figures in
# BENCHMARKS.md come from here. Every suite but `api` starts its own two NATS sites from nats/*.conf on
# free ports, like the tests; `api` (and `all`) runs `scripts/up.sh` (the local deployment under .run/),
# adds a second API process on a free port, signs in many users through the fake provider and drives
# alert creation with one `oha` per user. Without oha (.run/tools/bin/oha or on PATH) the API run is skipped
# with a message; install it with `cargo install oha --locked --root .run/tools`.
#
#   scripts/bench.sh [all|jetstream|baselines|matcher|cold-start|pipeline|latency|replay|api] [--write FILE] [OPTIONS]
#
# OPTIONS go to target/release/coinalarm-bench (see its --help): --max-alerts, --messages,
# --notifications, --offered-rate, --latency-rate, --latency-seconds, --rows, --requests.
# Environment: BENCH_API_RATE (500), BENCH_API_SECONDS (60) and BENCH_API_USERS (50) for the API run.
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

# api_bench [--write FILE]: alert creation under `oha` at BENCH_API_RATE req/s for BENCH_API_SECONDS,
# spread over BENCH_API_USERS signed-in users (one oha per user, at an equal share of the rate: oha sends
# one fixed Authorization header). Each oha writes every request to CSV, so the percentiles below are
# exact over all of them. Each user may hold exactly the alerts it creates (the cap is set to that), so
# the run measures creation by many users with realistic alert counts, not one user with 30,000.
api_bench() {
  local rate=${BENCH_API_RATE:-500} seconds=${BENCH_API_SECONDS:-60} users=${BENCH_API_USERS:-50}
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
  local bin=$REPO_ROOT/target/release/coinalarm port metrics_port api_pid per_user_cap
  per_user_cap=$(((rate * seconds + users - 1) / users + 10))
  port=$(pick_free_port)
  metrics_port=$(pick_free_port)
  # A second API next to the deployment's: the same configuration, its own ports (API and metrics), the
  # cap at what each user creates, and sign-in limits per address lifted (every user signs in from here).
  "${CLI_ENV[@]}" NO_COLOR=1 COINALARM_API__LISTEN="127.0.0.1:$port" \
    COINALARM_TELEMETRY__METRICS_LISTEN="127.0.0.1:$metrics_port" \
    COINALARM_API__PUBLIC_BASE_URL="http://127.0.0.1:$port" COINALARM_API__MAX_ALERTS_PER_USER=$per_user_cap \
    COINALARM_API__SIGN_IN__REQUESTS_PER_ADDRESS__LIMIT=100000 COINALARM_API__SIGN_IN__REQUESTS_PER_ADDRESS__WINDOW=3600 \
    COINALARM_API__SIGN_IN__VERIFICATIONS_PER_ADDRESS__LIMIT=100000 COINALARM_API__SIGN_IN__VERIFICATIONS_PER_ADDRESS__WINDOW=600 \
    "$bin" serve api </dev/null >>"$LOG_DIR/bench-api.log" 2>&1 &
  api_pid=$!
  # shellcheck disable=SC2064
  trap "kill $api_pid 2>/dev/null || true" EXIT
  wait_for 60 "the benchmark API on port $port" "$api_pid" curl -fs -o /dev/null "http://127.0.0.1:$port/openapi.json" ||
    fail_with_log "the benchmark API did not start" "$LOG_DIR/bench-api.log"
  local api=http://127.0.0.1:$port ledger=http://127.0.0.1:$CADEV_FAKE_TWILIO_PORT/_fake/ledger
  say "signing in $users users through the fake provider"
  "$PYTHON_BIN" - "$api" "$ledger" "$users" >"$LOG_DIR/bench-api-users.txt" <<'PY' ||
import json, random, re, sys, time, urllib.request
api, ledger, users = sys.argv[1], sys.argv[2], int(sys.argv[3])
def call(method, url, body=None):
    request = urllib.request.Request(url, method=method, data=None if body is None else json.dumps(body).encode(),
                                     headers={"content-type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as answer:
        return json.load(answer)
base = random.randrange(1000, 9000 - users)
for index in range(users):
    phone = "010-56%02d-%04d" % (index % 100, base + index)
    e164 = "+8210" + phone[4:].replace("-", "")
    call("POST", api + "/v1/auth/codes", {"phone": phone, "locale": "en"})
    deadline, code = time.time() + 60, None
    while code is None and time.time() < deadline:
        bodies = [entry["body"] for entry in call("GET", ledger) if entry["to"] == e164]
        match = re.search(r"[0-9]{6}", bodies[-1]) if bodies else None
        code = match.group(0) if match else time.sleep(0.05)
    if code is None:
        sys.exit("no sign-in code arrived for " + phone)
    print(call("POST", api + "/v1/auth/session", {"phone": phone, "code": code})["token"])
PY
    die "signing in the benchmark users failed (see above)"
  # Far above the price: the alerts never fire, so the run measures creation and nothing else.
  local target
  target=$(curl -fsS "$api/v1/markets/KRW-BTC" | "$PYTHON_BIN" -c 'import json, sys; from decimal import Decimal as D; print(int(D(json.load(sys.stdin)["quote"]["price"]) * 10))')
  local share token index=0 pids=()
  share=$("$PYTHON_BIN" -c "print($rate / $users)")
  rm -f "$LOG_DIR"/oha-*.csv
  say "oha: POST /v1/alerts at $rate req/s for ${seconds}s, $users users at $share req/s each"
  while read -r token; do
    # -w: requests still in flight at the deadline are waited for and counted, not aborted as errors.
    "$oha" -z "${seconds}s" -w -q "$share" -c 4 --latency-correction --no-tui --output-format csv \
      -m POST -H "Authorization: Bearer $token" -T application/json \
      -d "{\"condition\": {\"kind\": \"target_price\", \"market\": \"KRW-BTC\", \"target\": \"$target\", \"direction\": \"up\"}, \"repeat\": {\"mode\": \"once\"}}" \
      "$api/v1/alerts" >"$LOG_DIR/oha-$index.csv" &
    pids+=($!)
    index=$((index + 1))
  done <"$LOG_DIR/bench-api-users.txt"
  local failed_runs=0 pid
  for pid in "${pids[@]}"; do wait "$pid" || failed_runs=$((failed_runs + 1)); done
  kill "$api_pid" 2>/dev/null || true
  trap - EXIT
  ((failed_runs == 0)) || die "$failed_runs oha runs failed"
  "$PYTHON_BIN" - "$rate" "$seconds" "$users" "$LOG_DIR"/oha-*.csv <<'PY' | "$bench" section --name api "$@"
import collections, csv, sys
rate, seconds, users, files = sys.argv[1], float(sys.argv[2]), sys.argv[3], sys.argv[4:]
durations, codes, last_end = [], collections.Counter(), 0.0
for name in files:
    for row in csv.DictReader(open(name)):
        durations.append(float(row["request-duration"]))
        codes[row["status"]] += 1
        last_end = max(last_end, float(row["request-start"]) + float(row["request-duration"]))
durations.sort()
def percentile(p):
    return durations[min(len(durations) - 1, int(p * len(durations)))]
ok = sum(count for status, count in codes.items() if status.startswith("2"))
ms = lambda value: "%.1f" % (1000 * value)
print("| offered | users | duration | requests | answered req/s | average (ms) | p50 (ms) | p95 (ms) | p99 (ms) | max (ms) | errors (non-2xx or failed) | status codes |")
print("|---|---|---|---|---|---|---|---|---|---|---|---|")
print("| %s req/s | %s | %.0f s | %d | %.0f | %s | %s | %s | %s | %s | %d | %s |" % (
    rate, users, seconds, len(durations), len(durations) / max(seconds, last_end),
    ms(sum(durations) / len(durations)), ms(percentile(0.50)), ms(percentile(0.95)),
    ms(percentile(0.99)), ms(durations[-1]), len(durations) - ok,
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
