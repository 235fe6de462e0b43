#!/usr/bin/env bash
# Runs the benchmark suite against this machine's own limits and prints Markdown tables (the figures in
# BENCHMARKS.md come from here). Starts nothing permanent: the JetStream baseline starts its own two
# NATS sites from nats/*.conf on free ports, like the tests.
#
#   scripts/bench.sh [all|jetstream|matcher|pipeline] [--max-alerts N] [--messages N] [--notifications N]
set -euo pipefail

# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$REPO_ROOT"

setup_cargo_env
mkdir -p "$LOG_DIR"
ensure_tools
ensure_nats_server
cargo build --release -p coinalarm-benches
exec "$REPO_ROOT/target/release/coinalarm-bench" "$@"
