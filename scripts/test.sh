#!/usr/bin/env bash
# Runs the workspace's tests against real servers: starts (or reuses) what `scripts/up.sh --infra-only`
# starts, sources .run/env, then
#   1. doc tests            cargo test --workspace --doc
#   2. CLI smoke test       cargo build; coinalarm db migrate / nats apply / nats status
#                           against the .run/ servers
#   3. the web client       npm ci + build (when web/ changed), its unit tests (vitest), and its browser test
#                           (web/e2e/run.sh: playwright-core drives Debian's chromium, apt-installed when
#                           missing, through a backend of its own)
#   4. the tests            cargo nextest run --workspace --no-fail-fast (cargo test when nextest is missing)
# Every step runs even when an earlier one failed; the exit status is non-zero if any failed. The
# servers keep running afterwards, so the next run starts at once (scripts/down.sh stops them).
# The full test run comes last so that its summary closes the output.
#
#   scripts/test.sh [--no-smoke] [--] [ARGS...]
#
# ARGS go to the test runner (e.g. `scripts/test.sh -p proto-events`, `scripts/test.sh -- some_test`);
# with ARGS, doc tests, the smoke test and the web client's tests are skipped: a filtered run is a
# developer's quick loop.
# Formatting and clippy are .ci/run's job. CADEV_INSTALL_NEXTEST=1 lets a machine without
# cargo-nextest build it (several minutes) instead of falling back to cargo test.
set -euo pipefail

# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$REPO_ROOT"

usage() { print_usage "${BASH_SOURCE[0]}"; }

smoke=1
runner_args=()
while (($# > 0)); do
  case $1 in
    --no-smoke) smoke=0 ;;
    -h | --help) usage; exit 0 ;;
    --) shift; runner_args+=("$@"); break ;;
    *) runner_args+=("$1") ;;
  esac
  shift
done
filtered=$((${#runner_args[@]} > 0))

# --workspace would override a package selection given in ARGS (-p/--package).
scope=(--workspace)
for arg in "${runner_args[@]}"; do
  case $arg in -p | -p* | --package | --package=*) scope=() ;; esac
done

setup_cargo_env

start=$SECONDS
ensure_infra
# shellcheck disable=SC1090
source "$ENV_FILE"
record_step "infrastructure (NATS x2, Postgres, Redis)" 0 $((SECONDS - start))
print_infra_summary

# Cargo runs without the app's settings from .run/env (COINALARM_SITE, COINALARM_NATS__*, ...): tests
# start and configure what they need themselves, and ambient settings would leak into tests of
# configuration loading. They keep COINALARM_TEST_* and COINALARM_NATS_SERVER.
TEST_ENV=(env)
for var in $(compgen -e); do
  case $var in
    COINALARM_TEST_* | COINALARM_NATS_SERVER | COINALARM_KEEP_TEST_DIRS) ;;
    COINALARM_*) TEST_ENV+=(-u "$var") ;;
  esac
done

# have_nextest: cargo-nextest is there, or is built when CADEV_INSTALL_NEXTEST=1. Building it takes
# minutes on a 2-core machine, more than the test run it would speed up, so that is not the default.
have_nextest() {
  cargo nextest --version >/dev/null 2>&1 && return 0
  if [[ ${CADEV_INSTALL_NEXTEST:-0} == 1 ]]; then
    run_step "cargo install cargo-nextest --locked" cargo install cargo-nextest --locked && return 0
  fi
  warn "cargo-nextest is not installed: running cargo test instead (CADEV_INSTALL_NEXTEST=1 builds it)"
  return 1
}

failed=0

if ((!filtered)); then
  run_step "doc tests: cargo test --workspace --doc" "${TEST_ENV[@]}" cargo test --workspace --doc || failed=1
fi

if ((smoke && !filtered)); then
  # The CLI against the servers of .run/: schema, stream topology, and the status report of both sites.
  bin=$REPO_ROOT/target/debug/coinalarm
  # All targets of the workspace, not just `-p coinalarm`: that is the test build's feature set (with
  # dev-dependencies), so the binary costs no second build of the dependencies, and the test run below
  # finds its test binaries built.
  if run_step "smoke: cargo build --workspace --all-targets" \
    "${TEST_ENV[@]}" cargo build --workspace --all-targets; then
    run_step "smoke: coinalarm db migrate" coinalarm_cli "$bin" db migrate || failed=1
    run_step "smoke: coinalarm nats apply" coinalarm_cli "$bin" nats apply || failed=1
    run_step "smoke: coinalarm nats status" coinalarm_cli "$bin" nats status || failed=1
  else
    failed=1
  fi
fi

if ((!filtered)); then
  web_tests() {
    ensure_web_build || return 1
    say "web: vitest (unit tests)"
    npm --prefix "$WEB_DIR" test || return 1
    ensure_chromium
    local bin=$REPO_ROOT/target/debug/coinalarm
    [[ -x $bin ]] || "${TEST_ENV[@]}" cargo build -p coinalarm || return 1
    "$WEB_DIR/e2e/run.sh" --bin "$bin"
  }
  run_step "web: unit and browser tests" web_tests || failed=1
fi

if have_nextest; then
  nextest_args=("${scope[@]}" --no-fail-fast)
  # A CI profile (retries, JUnit output, ...) is used when the repository defines one.
  if is_ci && grep -qs '^\[profile\.ci\]' .config/nextest.toml; then
    nextest_args+=(--profile ci)
  fi
  test_command=(cargo nextest run "${nextest_args[@]}" "${runner_args[@]}")
else
  # Doc tests ran above; --lib --bins --tests leaves them out here.
  test_command=(cargo test "${scope[@]}" --no-fail-fast --lib --bins --tests "${runner_args[@]}")
fi
run_step "tests: ${test_command[*]}" "${TEST_ENV[@]}" "${test_command[@]}" || failed=1

print_step_report "scripts/test.sh"
if ((failed)); then
  printf '\nscripts/test.sh: FAILED (see the failed steps above; server logs in .run/logs/)\n' >&2
  exit 1
fi
printf '\nscripts/test.sh: all steps passed\n'
