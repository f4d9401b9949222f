#!/usr/bin/env bash
# The data-plane benchmark: client -> proxy -> mTLS hop -> proxy -> server,
# for a weft sidecar pair (HBONE) and an HAProxy pair (TLS 1.3 with client
# certificates), against the same request with no proxy, in one run with the
# rounds interleaved. Reports throughput (wrk), latency p50/p90/p99 at fixed
# rates (weft-loadgen), CPU seconds per 1,000 requests and peak RSS per proxy,
# each the median over the rounds, then the issue's targets as ratios to
# HAProxy with the number of rounds that met them.
#
# Needs Debian's wrk, haproxy and nginx-light (installed when missing, as
# root). Everything listens on 127.0.0.x.
# Usage: [ROUNDS=5] bench/run.sh [SECONDS per measurement, 10]
#
# WEFT_BASELINE=/path/to/an/older/weft adds a second weft pair running that
# binary (row weft-baseline), to compare two builds in the same run.
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${1:-10}
ROUNDS=${ROUNDS:-5}
RATES=(1000 5000)

source bench/lib.sh
need wrk:wrk haproxy:haproxy nginx:nginx-light
cargo build --release -q -p weft -p weft-loadgen
WEFT=target/release/weft
LOAD=target/release/weft-loadgen
W=$(mktemp -d /tmp/weft-bench.XXXXXX)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$W"; }
trap cleanup EXIT

# The server: nginx answering 1 KB.
BODY=$(head -c 1024 /dev/zero | tr '\0' 'x')
mkdir -p "$W/nginx"
cat > "$W/nginx/nginx.conf" <<CONF
worker_processes 1;
pid $W/nginx/pid;
error_log $W/nginx/error.log;
events { worker_connections 4096; }
http {
  access_log off;
  server { listen 127.0.0.40:8080; listen 127.0.0.41:8080; keepalive_requests 1000000; location / { return 200 "$BODY"; } }
}
CONF
nginx -c "$W/nginx/nginx.conf" -g 'daemon off;' & PIDS+=($!)

# The mesh: a CA, the two workloads and the service.
$WEFT ca init --dir "$W/ca" >/dev/null
# A mesh of client (at $2) and echo (at $3, where nginx listens) in dir $1.
mesh() {
  mkdir -p "$1"
  cat > "$1/mesh.yaml" <<YAML
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: client, namespace: default}
spec: {address: $2, serviceAccount: client, ports: {http: 8000}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: echo, namespace: default}
spec: {address: $3, serviceAccount: echo, labels: {app: echo}, ports: {http: 8080}}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: echo, namespace: default}
spec:
  hosts: [echo.default.svc.cluster.local]
  location: MESH_INTERNAL
  ports: [{number: 8080, name: http, protocol: HTTP}]
  resolution: STATIC
  workloadSelector: {labels: {app: echo}}
YAML
}
mesh "$W/mesh" 127.0.0.21 127.0.0.40
$WEFT proxy --mesh-dir "$W/mesh" --workload default/client --ca-dir "$W/ca" --access-log off ${WEFT_THREADS:+--threads $WEFT_THREADS} >/dev/null & WEFT_A=$!; PIDS+=($WEFT_A)
$WEFT proxy --mesh-dir "$W/mesh" --workload default/echo --ca-dir "$W/ca" --access-log off ${WEFT_THREADS:+--threads $WEFT_THREADS} >/dev/null & WEFT_B=$!; PIDS+=($WEFT_B)
PATHS=(direct weft haproxy)
if [ -n "${WEFT_BASELINE:-}" ]; then
  mesh "$W/mesh-base" 127.0.0.22 127.0.0.41
  for w in client echo; do
    "$WEFT_BASELINE" proxy --mesh-dir "$W/mesh-base" --workload "default/$w" --ca-dir "$W/ca" --access-log off ${WEFT_THREADS:+--threads $WEFT_THREADS} >/dev/null & BASE+=($!); PIDS+=($!)
  done
  PATHS=(direct weft weft-baseline haproxy)
fi

# The HAProxy pair, with certificates from the same CA.
for side in a b; do
  $WEFT ca issue --dir "$W/ca" --spiffe-id "spiffe://cluster.local/ns/default/sa/haproxy-$side" --out-dir "$W/$side" >/dev/null
  cat "$W/$side/cert-chain.pem" "$W/$side/key.pem" > "$W/$side/crt.pem"
done
cat > "$W/haproxy-a.cfg" <<CONF
global
  maxconn 8192
defaults
  mode http
  timeout connect 5s
  timeout client 30s
  timeout server 30s
  http-reuse always
frontend out
  bind 127.0.0.50:8081
  default_backend mesh
backend mesh
  server b 127.0.0.60:8443 ssl crt $W/a/crt.pem ca-file $W/a/root-cert.pem verify required ssl-min-ver TLSv1.3 alpn http/1.1
CONF
cat > "$W/haproxy-b.cfg" <<CONF
global
  maxconn 8192
defaults
  mode http
  timeout connect 5s
  timeout client 30s
  timeout server 30s
  http-reuse always
frontend in
  bind 127.0.0.60:8443 ssl crt $W/b/crt.pem ca-file $W/b/root-cert.pem verify required ssl-min-ver TLSv1.3 alpn http/1.1
  default_backend app
backend app
  server app 127.0.0.40:8080
CONF
haproxy -f "$W/haproxy-a.cfg" -db >/dev/null 2>&1 & HAP_A=$!; PIDS+=($HAP_A)
haproxy -f "$W/haproxy-b.cfg" -db >/dev/null 2>&1 & HAP_B=$!; PIDS+=($HAP_B)

# Each path: where to connect and the Host header.
declare -A CONNECT=( [direct]=127.0.0.40:8080 [weft]=127.0.0.21:15001 [weft-baseline]=127.0.0.22:15001 [haproxy]=127.0.0.50:8081 )
HOST=echo.default.svc.cluster.local:8080
declare -A PROCS=( [direct]="" [weft]="$WEFT_A $WEFT_B" [weft-baseline]="${BASE[*]:-}" [haproxy]="$HAP_A $HAP_B" )
declare -A URL LOAD_ARGS
for path in "${PATHS[@]}"; do URL[$path]=http://${CONNECT[$path]}/; done

for path in "${PATHS[@]}"; do
  for i in $(seq 50); do
    if curl -sf -o /dev/null -H "Host: $HOST" "http://${CONNECT[$path]}/" 2>/dev/null; then break; fi
    sleep 0.2
  done
  curl -sf -o /dev/null -H "Host: $HOST" "http://${CONNECT[$path]}/" || { echo "$path is not answering" >&2; exit 1; }
done

measure "$W/data"
python3 bench/report.py "$W/data" "$SECS" "$ROUNDS" "pair, " "peak RSS per proxy"
