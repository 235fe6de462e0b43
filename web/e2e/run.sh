#!/usr/bin/env bash
# The web client's browser test against a real local backend of its own: a fresh pair of NATS sites
# (from nats/*.conf, on free ports, in a temporary directory), a fresh database in the Postgres of .run/,
# its own Redis namespace, the fake exchange (random walk) and the fake Twilio, and `coinalarm serve all`
# serving the built client (api.web_root = web/dist). Then web/e2e/app.e2e.mjs drives Debian's chromium
# through it with playwright-core. Everything it started is stopped on exit, the database dropped.
#
#   web/e2e/run.sh [--bin PATH]     PATH: the coinalarm binary (default target/debug/coinalarm)
#
# Needs web/dist (npm run build) and chromium (scripts/test.sh installs both when missing).
# CADEV_WEB_E2E_KEEP=1 keeps the temporary directory (logs, screenshots) for a look afterwards.
set -euo pipefail

# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/../../scripts/lib.sh"
cd "$REPO_ROOT"

bin=$REPO_ROOT/target/debug/coinalarm
while (($# > 0)); do
  case $1 in
    --bin) bin=$(realpath "$2"); shift ;;
    -h | --help) print_usage "${BASH_SOURCE[0]}"; exit 0 ;;
    *) die "unknown argument: $1" ;;
  esac
  shift
done
[[ -x $bin ]] || die "no coinalarm binary at $bin (cargo build -p coinalarm)"
[[ -f $REPO_ROOT/web/dist/index.html ]] || die "web/dist is missing: run npm run build in web/"
chromium_bin=${CHROMIUM_BIN:-$(command -v chromium || command -v chromium-browser || true)}
[[ -n $chromium_bin ]] || die "chromium is not installed (apt-get install -y chromium)"

ensure_infra
# shellcheck disable=SC1090
source "$ENV_FILE"

# From here on, this run's own places and ports: lib.sh's functions follow these variables.
work=$(mktemp -d /tmp/coinalarm-web-e2e.XXXXXX)
RUN_DIR=$work LOG_DIR=$work/logs PID_DIR=$work/pids
mkdir -p "$LOG_DIR" "$PID_DIR"
database=web_e2e_$(date +%s)_$$
postgres_admin_url=$COINALARM_TEST_POSTGRES_URL
pids=()
cleanup() {
  local status=$? pid
  set +e
  for pid in "${pids[@]}"; do stop_pid "pid $pid" "$pid" 10 2>/dev/null; done
  stop_nats_site onprem 2>/dev/null
  stop_nats_site cloud 2>/dev/null
  psql -q "$postgres_admin_url" -c "DROP DATABASE IF EXISTS \"$database\" WITH (FORCE)" >/dev/null 2>&1 || true
  if ((status != 0)); then
    for log in "$LOG_DIR"/*.log; do
      [[ -f $log ]] || continue
      printf '\n--- last lines of %s\n' "${log##*/}" >&2
      tail -n 25 "$log" >&2
    done
  fi
  if [[ ${CADEV_WEB_E2E_KEEP:-0} == 1 ]]; then
    say "kept $work"
  else
    rm -rf "$work"
  fi
  exit "$status"
}
trap cleanup EXIT

for var in CADEV_NATS_CLOUD_PORT CADEV_NATS_CLOUD_HTTP_PORT CADEV_NATS_CLOUD_LEAF_PORT \
  CADEV_NATS_ONPREM_PORT CADEV_NATS_ONPREM_HTTP_PORT CADEV_FAKE_EXCHANGE_PORT CADEV_FAKE_TWILIO_PORT \
  CADEV_API_PORT CADEV_METRICS_PORT; do
  unset "$var"
done
start_nats_sites
choose_port CADEV_FAKE_EXCHANGE_PORT
choose_port CADEV_FAKE_TWILIO_PORT
choose_port CADEV_API_PORT
choose_port CADEV_METRICS_PORT
export COINALARM_POSTGRES_URL=${postgres_admin_url%/*}/$database
derive_app_config
export COINALARM_REDIS__NAMESPACE=$database
export COINALARM_API__WEB_ROOT=$REPO_ROOT/web/dist
export COINALARM_TELEMETRY__LOG_FORMAT=pretty NO_COLOR=1

start_background() {
  local name=$1
  shift
  "${CLI_ENV[@]}" setsid "$@" </dev/null >>"$LOG_DIR/$name.log" 2>&1 9>&- &
  pids+=("$!")
}
port_taken() { ! port_is_free "$1"; }
coinalarm_cli "$bin" db migrate >>"$LOG_DIR/setup.log" 2>&1 || die "db migrate failed"
coinalarm_cli "$bin" nats apply >>"$LOG_DIR/setup.log" 2>&1 || die "nats apply failed"
start_background fake-exchange "$bin" fake-exchange --bind "127.0.0.1:$CADEV_FAKE_EXCHANGE_PORT" --feed walk
start_background fake-twilio "$bin" fake-twilio --listen "127.0.0.1:$CADEV_FAKE_TWILIO_PORT" \
  --account-sid "$FAKE_TWILIO_ACCOUNT_SID" --auth-token "$FAKE_TWILIO_AUTH_TOKEN"
start_background coinalarm "$bin" serve all
api_ready() { curl -fsS -m 2 -o /dev/null "http://127.0.0.1:$CADEV_API_PORT/readyz" 2>/dev/null; }
wait_for 60 "the API to be ready" "${pids[2]}" api_ready || die "the API did not become ready"

say "browser test against http://127.0.0.1:$CADEV_API_PORT (chromium: $chromium_bin)"
WEB_E2E_BASE_URL=http://127.0.0.1:$CADEV_API_PORT \
  WEB_E2E_LEDGER_URL=http://127.0.0.1:$CADEV_FAKE_TWILIO_PORT/_fake/ledger \
  WEB_E2E_ARTIFACTS=$work \
  CHROMIUM_BIN=$chromium_bin \
  node "$REPO_ROOT/web/e2e/app.e2e.mjs"
