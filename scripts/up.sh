#!/usr/bin/env bash
# Starts CoinAlarm locally: both NATS sites (leaf-linked), Postgres and Redis on free loopback ports under
# .run/, then builds the `coinalarm` binary, migrates the database, applies the stream topology, starts the
# fake exchange (a random walk in Upbit's protocol) and the fake Twilio, builds the web client (web/, npm;
# only when it changed), runs every service in one `coinalarm serve all` process (the API serving the web
# client at /), seeds a demo user with alerts and shows the first SMS arriving.
# Rerunning it reuses what still runs and restarts the services with the freshly built binary.
#
#   scripts/up.sh                 everything, services in the background (log: .run/logs/coinalarm.log)
#   scripts/up.sh --infra-only    only NATS, Postgres and Redis
#   scripts/up.sh --foreground    services in the foreground (Ctrl-C stops them; the servers keep running)
#   scripts/up.sh --bin PATH      use the coinalarm binary at PATH instead of building target/release/coinalarm
#
# Give COINALARM_POSTGRES_URL / COINALARM_REDIS_URL to use your own Postgres / Redis instead of ours.
# scripts/down.sh stops it all.
set -euo pipefail

# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

usage() { print_usage "${BASH_SOURCE[0]}"; }

infra_only=0 foreground=0 bin=""
while (($# > 0)); do
  case $1 in
    --infra-only) infra_only=1 ;;
    --foreground) foreground=1 ;;
    --bin)
      [[ -n ${2:-} ]] || die "--bin needs the path of a coinalarm binary"
      [[ -f $2 && -x $2 ]] || die "--bin $2: not an executable file"
      bin=$(realpath "$2") # before the cd below: PATH may be relative to the caller's directory
      shift
      ;;
    -h | --help) usage; exit 0 ;;
    *) usage >&2; die "unknown argument: $1" ;;
  esac
  shift
done
cd "$REPO_ROOT"

start=$SECONDS
ensure_infra
record_step "infrastructure (NATS x2, Postgres, Redis)" 0 $((SECONDS - start))

if ((infra_only)); then
  print_infra_summary
  cat <<EOF

Use it:     source .run/env    (exports the app's COINALARM_* settings and the tests' URLs)
Logs:       tail -f .run/logs/*.log
Stop:       scripts/down.sh    (--purge also deletes the data)
EOF
  exit 0
fi

log=$LOG_DIR/coinalarm.log
pidfile=$PID_DIR/coinalarm.pid
if [[ -z $bin ]]; then
  setup_cargo_env
  bin=$REPO_ROOT/target/release/coinalarm
  run_step "cargo build --release -p coinalarm" cargo build --release -p coinalarm ||
    die "the build failed (output above)"
fi
# The web client, served by the API at / (api.web_root). Without npm the API still runs, without it.
web_root_env=()
if ! command -v npm >/dev/null; then
  warn "npm is not installed: the API runs without the web client (install Node.js 20 for it)"
elif ensure_web_build; then
  web_root_env=("COINALARM_API__WEB_ROOT=$WEB_DIR/dist")
else
  warn "building the web client failed (output above): the API runs without it"
fi
run_step "coinalarm db migrate" coinalarm_cli "$bin" db migrate ||
  die "coinalarm db migrate failed (output above; Postgres log: .run/logs/postgres.log)"
run_step "coinalarm nats apply" coinalarm_cli "$bin" nats apply ||
  die "coinalarm nats apply failed (output above; NATS logs: .run/logs/nats-*.log)"

# Processes from an earlier run run an older binary: replace them.
stop_by_pidfile "coinalarm serve all (earlier run)" "$pidfile" " serve all" 30
stop_by_pidfile "fake exchange (earlier run)" "$PID_DIR/fake-exchange.pid" " fake-exchange" 10
stop_by_pidfile "fake twilio (earlier run)" "$PID_DIR/fake-twilio.pid" " fake-twilio" 10

# The outside world, faked: the exchange's websocket feed and the SMS provider's REST API.
choose_port CADEV_FAKE_EXCHANGE_PORT
choose_port CADEV_FAKE_TWILIO_PORT
choose_port CADEV_METRICS_PORT
choose_port CADEV_API_PORT
save_env
start_fake() {
  local name=$1 port=$2
  shift 2
  printf '\n--- %s scripts/up.sh: starting %s\n' "$(date -Is)" "$name" >>"$LOG_DIR/$name.log"
  "${CLI_ENV[@]}" NO_COLOR=1 setsid "$bin" "$@" </dev/null >>"$LOG_DIR/$name.log" 2>&1 9>&- &
  echo "$!" >"$PID_DIR/$name.pid"
  wait_for "$WAIT_SECS" "$name on port $port" "$!" port_is_taken "$port" ||
    fail_with_log "$name did not start" "$LOG_DIR/$name.log"
}
port_is_taken() { ! port_is_free "$1"; }
start_fake fake-exchange "$CADEV_FAKE_EXCHANGE_PORT" fake-exchange --bind "127.0.0.1:$CADEV_FAKE_EXCHANGE_PORT" --feed walk
start_fake fake-twilio "$CADEV_FAKE_TWILIO_PORT" fake-twilio --listen "127.0.0.1:$CADEV_FAKE_TWILIO_PORT" \
  --account-sid "$FAKE_TWILIO_ACCOUNT_SID" --auth-token "$FAKE_TWILIO_AUTH_TOKEN"

print_infra_summary
if ((foreground)); then
  printf '\nRunning coinalarm serve all in the foreground; Ctrl-C stops it (scripts/down.sh stops the rest).\n\n'
  exec "${CLI_ENV[@]}" "${web_root_env[@]}" "$bin" serve all
fi

printf '\n--- %s scripts/up.sh: starting coinalarm serve all\n' "$(date -Is)" >>"$log"
# setsid: a Ctrl-C in this terminal later must not reach it; down.sh stops it by its pid file.
# NO_COLOR: a log file wants no terminal colour codes.
"${CLI_ENV[@]}" "${web_root_env[@]}" NO_COLOR=1 setsid "$bin" serve all </dev/null >>"$log" 2>&1 9>&- &
pid=$!
echo "$pid" >"$pidfile"

# A bad configuration or a taken port ends the process within moments: watch it for a few seconds so
# that such a failure is reported here rather than found later in the log.
watch_until=$((SECONDS + 3))
while ((SECONDS < watch_until)); do
  pid_alive "$pid" || {
    rm -f "$pidfile"
    fail_with_log "coinalarm serve all exited right after start" "$log"
  }
  sleep 0.2
done

# A demo user with alerts around the random walk's prices, once per deployment (the streams keep them).
if [[ ! -f $RUN_DIR/demo-seeded ]]; then
  run_step "coinalarm demo seed" coinalarm_cli "$bin" demo seed && touch "$RUN_DIR/demo-seeded"
fi
ledger_url=http://127.0.0.1:$CADEV_FAKE_TWILIO_PORT/_fake/ledger
first_sms() { curl -fsS "$ledger_url" 2>/dev/null | "$PYTHON_BIN" -c 'import json, sys; l = json.load(sys.stdin); sys.exit(0 if l else 1)'; }
say "waiting for the first SMS at the fake provider (the random walk has to cross an alert)"
if wait_for 120 "the first SMS" "$pid" first_sms; then
  curl -fsS "$ledger_url" | "$PYTHON_BIN" -c '
import json, sys
for entry in json.load(sys.stdin)[-5:]:
    print("  SMS to %s at %s: %s" % (entry["to"], entry["created_at"], entry["body"].replace("\n", " / ")))'
fi

if ((${#web_root_env[@]} > 0)); then
  web_line="web app       http://127.0.0.1:$CADEV_API_PORT/   (sign in with any number; the code is in the SMS ledger below)"
else
  web_line="web app       not built (see the warning above)"
fi
cat <<EOF
  $web_line
  coinalarm     serve all, pid $pid, log .run/logs/coinalarm.log
  fakes         exchange ws://127.0.0.1:$CADEV_FAKE_EXCHANGE_PORT/websocket/v1, twilio http://127.0.0.1:$CADEV_FAKE_TWILIO_PORT
  api           http://127.0.0.1:$CADEV_API_PORT (OpenAPI: /openapi.json, Swagger UI: /docs)
  metrics       http://127.0.0.1:$CADEV_METRICS_PORT/metrics

SMS sent:   curl -s $ledger_url

Logs:       tail -f .run/logs/coinalarm.log   (servers: .run/logs/*.log)
Use it:     source .run/env && ${bin#"$REPO_ROOT"/} nats status
Stop:       scripts/down.sh    (--purge also deletes the data)
EOF
print_step_report "scripts/up.sh"
