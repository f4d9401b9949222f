#!/usr/bin/env bash
# The data-plane benchmark: client -> proxy -> mTLS hop -> proxy -> server,
# for a weft sidecar pair (HBONE) and an HAProxy pair (TLS 1.3 with client
# certificates), against the same request with no proxy, in one run with the
# rounds interleaved. Reports throughput (wrk), latency p50/p90/p99 at fixed
# rates (weft-loadgen), CPU seconds per 1,000 requests and peak RSS per proxy,
# each the median over the rounds, then the issue's targets as ratios to
# HAProxy with the number of rounds that met them, and the p99 of all the
# rounds' requests pooled with a 95% bootstrap interval over the rounds.
#
# Needs Debian's wrk, haproxy and nginx-light (installed when missing, as
# root). Everything listens on 127.0.0.x.
# Usage: [ROUNDS=15] [RATES="1000 5000"] bench/run.sh [SECONDS per measurement, 3]
#
# Many short rounds rather than a few long ones: this machine's stalls come
# in spells of seconds, and short interleaved measurements share them out
# between the paths instead of handing one path a whole bad spell.
#
# WEFT_BASELINE=/path/to/an/older/weft adds a second weft pair running that
# binary (row weft-baseline), to compare two builds in the same run.
# HAPROXY_THREADS=N runs each HAProxy on N threads (default: its own, one
# per core); a weft sidecar runs on one. BENCH_DATA=DIR keeps the raw
# measurements and every request's latency there.
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${1:-3}
ROUNDS=${ROUNDS:-15}
read -ra RATES <<< "${RATES:-1000 5000}"

source bench/lib.sh
need wrk:wrk haproxy:haproxy nginx:nginx-light
prepare bench

start_nginx "$W/nginx" 127.0.0.40 127.0.0.41

# The mesh: a CA, the two workloads and the service.
$WEFT ca init --dir "$W/ca" >/dev/null
sidecar_mesh "$W/mesh" 127.0.0.21 127.0.0.40
$WEFT proxy --mesh-dir "$W/mesh" --workload default/client --ca-dir "$W/ca" --access-log off ${WEFT_THREADS:+--threads $WEFT_THREADS} >/dev/null & WEFT_A=$!; PIDS+=($WEFT_A)
$WEFT proxy --mesh-dir "$W/mesh" --workload default/echo --ca-dir "$W/ca" --access-log off ${WEFT_THREADS:+--threads $WEFT_THREADS} >/dev/null & WEFT_B=$!; PIDS+=($WEFT_B)
PATHS=(direct weft haproxy)
if [ -n "${WEFT_BASELINE:-}" ]; then
  sidecar_mesh "$W/mesh-base" 127.0.0.22 127.0.0.41
  for w in client echo; do
    "$WEFT_BASELINE" proxy --mesh-dir "$W/mesh-base" --workload "default/$w" --ca-dir "$W/ca" --access-log off ${WEFT_THREADS:+--threads $WEFT_THREADS} >/dev/null & BASE+=($!); PIDS+=($!)
  done
  PATHS=(direct weft weft-baseline haproxy)
fi

# The HAProxy pair, with certificates from the same CA.
haproxy_pair "$W" "$W/ca" 127.0.0.50 127.0.0.60 127.0.0.40
haproxy -f "$W/haproxy-a.cfg" -db >/dev/null 2>&1 & HAP_A=$!; PIDS+=($HAP_A)
haproxy -f "$W/haproxy-b.cfg" -db >/dev/null 2>&1 & HAP_B=$!; PIDS+=($HAP_B)

# Each path: where to connect and the Host header.
declare -A CONNECT=( [direct]=127.0.0.40:8080 [weft]=127.0.0.21:15001 [weft-baseline]=127.0.0.22:15001 [haproxy]=127.0.0.50:8081 )
HOST=echo.default.svc.cluster.local:8080
declare -A PROCS=( [direct]="" [weft]="$WEFT_A $WEFT_B" [weft-baseline]="${BASE[*]:-}" [haproxy]="$HAP_A $HAP_B" )
declare -A URL LOAD_ARGS
for path in "${PATHS[@]}"; do URL[$path]=http://${CONNECT[$path]}/; done

for path in "${PATHS[@]}"; do answering "${CONNECT[$path]}"; done

measure "$W/data"
python3 bench/report.py "$W/data" "$SECS" "$ROUNDS" "pair, " "peak RSS per proxy"
