#!/usr/bin/env bash
# Stops what scripts/up.sh and scripts/test.sh started (by their pid files): `coinalarm serve all`, both
# NATS sites, our Redis and our Postgres. Servers given by COINALARM_POSTGRES_URL / COINALARM_REDIS_URL
# were never ours and are left alone.
#
#   scripts/down.sh           stop; keep data, passwords and ports for the next scripts/up.sh
#   scripts/down.sh --purge   stop and delete .run/ (data, logs, .run/env, the venv with nats-server)
set -euo pipefail

# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$REPO_ROOT"

usage() { print_usage "${BASH_SOURCE[0]}"; }

purge=0
for arg in "$@"; do
  case $arg in
    --purge) purge=1 ;;
    -h | --help) usage; exit 0 ;;
    *) usage >&2; die "unknown argument: $arg" ;;
  esac
done

if [[ ! -d $RUN_DIR ]]; then
  say "nothing to stop: $RUN_DIR does not exist"
  exit 0
fi

acquire_run_lock
# Only where our Postgres lives is needed from .run/env; read it without the rest of load_env's work.
CADEV_POSTGRES_DIR=$(
  # shellcheck disable=SC1090
  [[ -f $ENV_FILE ]] && source "$ENV_FILE" && echo "${CADEV_POSTGRES_DIR:-}"
) || CADEV_POSTGRES_DIR=""
stop_everything

if ((purge)); then
  pg_area=${CADEV_POSTGRES_DIR:-}
  say "deleting $RUN_DIR"
  release_run_lock
  rm -rf "$RUN_DIR"
  # Postgres may live outside .run (see choose_postgres_area in lib.sh); delete only our own /tmp area.
  tmp_area=/tmp/coinalarm-$(repo_hash)
  if [[ -d $tmp_area && (-z $pg_area || $pg_area == "$tmp_area/postgres") ]]; then
    say "deleting $tmp_area"
    rm -rf "$tmp_area"
  fi
fi
say "stopped"
