#!/usr/bin/env bash
# Where an idle connection's memory goes: the gateway runs under valgrind's massif
# with N idle subscribers (default 1000), and a detailed heap snapshot is taken
# once all are connected. Prints the biggest allocation sites; divide by N for
# bytes per connection. (RSS per connection also counts allocator slack, which
# massif does not: `bench/run.sh --scenarios idle` gives that figure.)
#   bench/idle-heap.sh [clients]
set -euo pipefail
cd "$(dirname "$0")/.."
clients=${1:-1000}
cargo build --release --locked -p sse-gateway -p sse-bench >&2
B=target/release/sse-bench
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
origin_port=$(port); gw_port=$(port); admin_port=$(port)

taskset -c 1 $B origin --listen 127.0.0.1:$origin_port --rate 0 2>/dev/null & pids+=($!)
printf 'routes:\n  - path: /events\n    upstream: http://127.0.0.1:%s/events\n' "$origin_port" > "$work/gw.yaml"
RUST_LOG=warn taskset -c 0 valgrind --tool=massif --massif-out-file="$work/massif.out" \
  target/release/sse-gateway -c "$work/gw.yaml" --listen 127.0.0.1:$gw_port --admin 127.0.0.1:$admin_port \
  2>"$work/valgrind.log" & gw=$!; pids+=($gw)
for _ in $(seq 150); do curl -sf http://127.0.0.1:$admin_port/healthz >/dev/null && break; sleep 0.2; done
taskset -c 1 $B load --url http://127.0.0.1:$gw_port/events --clients "$clients" --warmup 600 --duration 1 \
  >/dev/null 2>&1 & pids+=($!)
for _ in $(seq 300); do
  [ "$(curl -s http://127.0.0.1:$admin_port/metrics | awk '/^sse_gateway_clients /{print $2}')" = "$clients" ] && break
  sleep 0.3
done
sleep 2
vgdb --pid=$gw detailed_snapshot "$work/snapshot.out" >/dev/null 2>&1
echo "heap with $clients idle clients (massif detailed snapshot):"
# Each top-level allocation site, named by its first frame in our code or a crate
# we use (the frames above it are the allocator's).
ms_print --threshold=0.5 "$work/snapshot.out" | python3 -c '
import re, sys
lines = sys.stdin.read().splitlines()
total = next((l for l in lines if l.startswith("98") or "(heap allocation functions)" in l), "")
print(total.strip())
site = None
for l in lines:
    m = re.match(r"^(->|\| ->)", l)
    top = re.match(r"^->([\d.]+)% \(([\d,]+)B\)", l)
    if top:
        if site: print(site)
        site = None; size = top.group(2)
        continue
    if site is None and re.search(r"(sse_gateway|hyper|h2|tokio|tracing|bytes|dashmap)::", l):
        name = re.sub(r"^[| ]*->[\d.]+% \([\d,]+B\) 0x[0-9A-F]+: ", "", l)
        site = f"{size:>14} B  {name[:160]}"
if site: print(site)
'

