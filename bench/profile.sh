#!/usr/bin/env bash
# Instruction profile of the gateway's fan-out path with callgrind: counts, not
# seconds, so it is repeatable on a busy machine. The gateway runs under valgrind
# pinned to core 0 (one tokio worker), the origin and subscribers on core 1.
# Collection is switched on only after every client is connected, and the
# gateway's own delivery counter (admin /metrics) gives instructions per delivery.
#   bench/profile.sh [clients] [events/s] [seconds]      (default 100 20 10)
# Writes callgrind.out.gateway.1 (the window's dump) and prints the top functions (exclusive and inclusive).
set -euo pipefail
cd "$(dirname "$0")/.."
clients=${1:-100}; rate=${2:-20}; secs=${3:-10}
cargo build --release --locked -p sse-gateway -p sse-bench >&2
B=target/release/sse-bench
work=$(mktemp -d)
rm -f callgrind.out.gateway callgrind.out.gateway.*
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT

port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
origin_port=$(port); gw_port=$(port); admin_port=$(port)
taskset -c 1 $B origin --listen 127.0.0.1:$origin_port --rate "$rate" 2>/dev/null & pids+=($!)
printf 'routes:\n  - path: /events\n    upstream: http://127.0.0.1:%s/events\n' "$origin_port" > "$work/gw.yaml"
RUST_LOG=warn taskset -c 0 valgrind --tool=callgrind --instr-atstart=no \
  --callgrind-out-file=callgrind.out.gateway \
  target/release/sse-gateway -c "$work/gw.yaml" --listen 127.0.0.1:$gw_port --admin 127.0.0.1:$admin_port \
  2>"$work/valgrind.log" & gw=$!; pids+=($gw)
for _ in $(seq 100); do curl -sf http://127.0.0.1:$admin_port/healthz >/dev/null && break; sleep 0.2; done
taskset -c 1 $B load --url http://127.0.0.1:$gw_port/events --clients "$clients" --warmup 2 --duration $((secs + 4)) \
  > "$work/load.json" 2>/dev/null & pids+=($!)
until [ "$(curl -s http://127.0.0.1:$admin_port/metrics | awk '/^sse_gateway_clients /{print $2}')" = "$clients" ]; do sleep 0.2; done
delivered() { curl -s http://127.0.0.1:$admin_port/metrics | awk '/^sse_gateway_events_delivered_total/{print $2}'; }
d0=$(delivered); callgrind_control -i on $gw >/dev/null 2>&1
sleep "$secs"
callgrind_control -i off $gw >/dev/null 2>&1; d1=$(delivered); callgrind_control -d $gw >/dev/null 2>&1
sleep 1
out=callgrind.out.gateway.1
total=$(callgrind_annotate $out 2>/dev/null | awk '/PROGRAM TOTALS/{gsub(",","",$1); print $1}')
echo "deliveries in window: $((d1 - d0)); instructions (user space): $total; per delivery: $(( total / (d1 - d0 > 0 ? d1 - d0 : 1) ))"
echo "== exclusive"
callgrind_annotate $out 2>/dev/null | sed -n '/file:function/,$p' | head -30 || true
echo "== inclusive"
callgrind_annotate --inclusive=yes $out 2>/dev/null | sed -n '/file:function/,$p' | head -45 || true
