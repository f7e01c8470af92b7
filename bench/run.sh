#!/usr/bin/env bash
# Builds the gateway and the bench tool in release mode and runs the benchmark:
#   bench/run.sh                      # every scenario, sse-gateway only
#   bench/run.sh --vs-nchan           # the same scenarios against nginx + nchan too
#   bench/run.sh --scenarios 1k,10k   # a subset (idle, 1k, 10k, sat)
# Further flags: `target/release/sse-bench run --help`. The table goes to stdout,
# progress to stderr. Uses both cores for tens of seconds per scenario.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --locked -p sse-gateway -p sse-bench
exec target/release/sse-bench run --gateway target/release/sse-gateway "$@"
