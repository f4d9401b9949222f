#!/usr/bin/env bash
# The ingress benchmark: client -HTTPS-> gateway -HTTP-> server, for weft's
# ingress gateway (a Gateway HTTPS server, SIMPLE TLS from a credentialName
# folder, routed by a VirtualService to a ServiceEntry) and HAProxy doing
# the same (TLS termination, keep-alive to the server), against the server
# with no proxy, in one run with the rounds interleaved. Reports throughput
# (wrk, 32 connections), latency p50/p90/p99 at fixed rates (weft-loadgen,
# new TLS sessions only at connection start), CPU seconds per 1,000
# requests and peak RSS of the proxy.
#
# Needs Debian's wrk, haproxy, nginx-light and openssl (installed when
# missing, as root). Everything listens on 127.0.0.x.
# Usage: bench/gateway.sh [SECONDS]
#
# WEFT_BASELINE=/path/to/an/older/weft adds a second gateway running that
# binary (row weft-baseline), to compare two builds in the same run.
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${1:-10}
RATES=(1000 5000)

for pkg in wrk:wrk haproxy:haproxy nginx:nginx-light openssl:openssl; do
  if ! command -v "${pkg%%:*}" >/dev/null 2>&1; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${pkg#*:}" >/dev/null
  fi
done
cargo build --release -q -p weft -p weft-loadgen
WEFT=target/release/weft
LOAD=target/release/weft-loadgen
W=$(mktemp -d /tmp/weft-gateway-bench.XXXXXX)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$W"; }
trap cleanup EXIT
HOST=shop.example.com

# The server: nginx answering 1 KB over plain HTTP.
BODY=$(head -c 1024 /dev/zero | tr '\0' 'x')
mkdir -p "$W/nginx"
cat > "$W/nginx/nginx.conf" <<CONF
worker_processes 1;
pid $W/nginx/pid;
error_log $W/nginx/error.log;
events { worker_connections 4096; }
http {
  access_log off;
  server { listen 127.0.0.40:8080; keepalive_requests 1000000; location / { return 200 "$BODY"; } }
}
CONF
nginx -c "$W/nginx/nginx.conf" -g 'daemon off;' & PIDS+=($!)

# The site's certificate (ECDSA P-256, from a CA of its own), as a
# credentialName folder for weft and one PEM for HAProxy.
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
  -subj /CN=bench-ca -keyout "$W/ca.key" -out "$W/ca.crt" 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=$HOST" \
  -keyout "$W/site.key" -out "$W/site.csr" 2>/dev/null
printf 'subjectAltName=DNS:%s\n' "$HOST" > "$W/san.ext"
openssl x509 -req -in "$W/site.csr" -CA "$W/ca.crt" -CAkey "$W/ca.key" -CAcreateserial \
  -days 2 -extfile "$W/san.ext" -out "$W/site.crt" 2>/dev/null
mkdir -p "$W/mesh/shop-cred"
cp "$W/site.crt" "$W/mesh/shop-cred/tls.crt"
cp "$W/site.key" "$W/mesh/shop-cred/tls.key"
cat "$W/site.crt" "$W/site.key" > "$W/haproxy.pem"

# weft's ingress gateway.
$WEFT ca init --dir "$W/meshca" >/dev/null
cat > "$W/mesh/mesh.yaml" <<YAML
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: ingressgateway, namespace: istio-system}
spec: {address: 127.0.0.70, serviceAccount: ingressgateway, labels: {istio: ingressgateway}}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: shop-backend, namespace: default}
spec:
  hosts: [backend.shop.internal]
  location: MESH_EXTERNAL
  ports: [{number: 8080, name: http, protocol: HTTP}]
  resolution: STATIC
  endpoints: [{address: 127.0.0.40}]
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: shop, namespace: istio-system}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 8443, name: https, protocol: HTTPS}
    hosts: [$HOST]
    tls: {mode: SIMPLE, credentialName: shop-cred}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: shop, namespace: istio-system}
spec:
  hosts: [$HOST]
  gateways: [shop]
  http: [{route: [{destination: {host: backend.shop.internal, port: {number: 8080}}}]}]
YAML
$WEFT proxy --role ingress --mesh-dir "$W/mesh" --workload istio-system/ingressgateway \
  --ca-dir "$W/meshca" --access-log off ${WEFT_THREADS:+--threads $WEFT_THREADS} >/dev/null & WEFT_GW=$!; PIDS+=($WEFT_GW)
PATHS=(direct weft haproxy)
BASE_GW=""
if [ -n "${WEFT_BASELINE:-}" ]; then
  mkdir -p "$W/mesh-base"
  cp -r "$W/mesh/shop-cred" "$W/mesh-base/"
  sed 's/127.0.0.70/127.0.0.71/' "$W/mesh/mesh.yaml" > "$W/mesh-base/mesh.yaml"
  "$WEFT_BASELINE" proxy --role ingress --mesh-dir "$W/mesh-base" --workload istio-system/ingressgateway \
    --ca-dir "$W/meshca" --access-log off ${WEFT_THREADS:+--threads $WEFT_THREADS} >/dev/null & BASE_GW=$!; PIDS+=($BASE_GW)
  PATHS=(direct weft weft-baseline haproxy)
fi

# HAProxy doing the same.
cat > "$W/haproxy.cfg" <<CONF
global
  maxconn 8192
  nbthread $(nproc)
defaults
  mode http
  timeout connect 5s
  timeout client 30s
  timeout server 30s
  http-reuse always
frontend https
  bind 127.0.0.80:8443 ssl crt $W/haproxy.pem alpn http/1.1
  default_backend app
backend app
  server app 127.0.0.40:8080
CONF
haproxy -f "$W/haproxy.cfg" -db >/dev/null 2>&1 & HAP=$!; PIDS+=($HAP)

declare -A URL=( [direct]=http://127.0.0.40:8080/ [weft]=https://127.0.0.70:8443/ [weft-baseline]=https://127.0.0.71:8443/ [haproxy]=https://127.0.0.80:8443/ )
declare -A CONNECT=( [direct]=127.0.0.40:8080 [weft]=127.0.0.70:8443 [weft-baseline]=127.0.0.71:8443 [haproxy]=127.0.0.80:8443 )
declare -A TLS=( [direct]="" [weft]="--tls-roots $W/ca.crt" [weft-baseline]="--tls-roots $W/ca.crt" [haproxy]="--tls-roots $W/ca.crt" )
declare -A PROCS=( [direct]="" [weft]="$WEFT_GW" [weft-baseline]="$BASE_GW" [haproxy]="$HAP" )

for path in "${PATHS[@]}"; do
  ok=""
  for i in $(seq 50); do
    ip=${CONNECT[$path]%:*}; port=${CONNECT[$path]#*:}; scheme=${URL[$path]%%:*}
    if curl -sf -o /dev/null --cacert "$W/ca.crt" --resolve "$HOST:$port:$ip" \
      "$scheme://$HOST:$port/" 2>/dev/null; then ok=1; break; fi
    sleep 0.2
  done
  [ -n "$ok" ] || { echo "$path is not answering" >&2; exit 1; }
done

ticks() { local t=0; for p in "$@"; do t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat"))); done; echo "$t"; }
HZ=$(getconf CLK_TCK)
declare -A RPS P50 P90 P99 CPU
for round in 1 2; do
  for path in "${PATHS[@]}"; do
    out=$(wrk -t2 -c32 -d"${SECS}s" -H "Host: $HOST" "${URL[$path]}" | awk '/Requests\/sec/ {print $2}')
    RPS[$path]=$(python3 -c "print(max(float('${RPS[$path]:-0}'), float('$out')))")
    for rate in "${RATES[@]}"; do
      before=$(ticks ${PROCS[$path]})
      json=$($LOAD --connect "${CONNECT[$path]}" --host "$HOST" --rate "$rate" --duration "$SECS" ${TLS[$path]})
      after=$(ticks ${PROCS[$path]})
      key="$path/$rate"
      read -r p50 p90 p99 ok <<<"$(python3 -c "import json,sys; j=json.loads(sys.argv[1]); print(j['p50_ms'], j['p90_ms'], j['p99_ms'], j['ok'])" "$json")"
      P50[$key]=$(python3 -c "a='${P50[$key]:-}'; print(min(float(a), $p50) if a else $p50)")
      P90[$key]=$(python3 -c "a='${P90[$key]:-}'; print(min(float(a), $p90) if a else $p90)")
      P99[$key]=$(python3 -c "a='${P99[$key]:-}'; print(min(float(a), $p99) if a else $p99)")
      if [ -n "${PROCS[$path]}" ]; then
        cpu=$(python3 -c "print(($after - $before) / $HZ / max($ok, 1) * 1000)")
        CPU[$key]=$(python3 -c "a='${CPU[$key]:-}'; print(min(float(a), $cpu) if a else $cpu)")
      fi
    done
  done
done

rss() { local m=0; for p in "$@"; do v=$(awk '/VmHWM/ {print $2}' "/proc/$p/status"); [ "$v" -gt "$m" ] && m=$v; done; echo $((m / 1024)); }
echo
echo "$(date -u +%Y-%m-%d), $(nproc) cores, $(awk -F: '/model name/ {print $2; exit}' /proc/cpuinfo | sed 's/^ *//'), ${SECS}s per measurement, best of 2 interleaved rounds"
echo
echo "| path | wrk req/s (32 conns) | p50/p90/p99 ms at 1,000 rps | p50/p90/p99 ms at 5,000 rps | CPU s per 1,000 req (at 1,000 / 5,000 rps) | peak RSS |"
echo "| --- | --- | --- | --- | --- | --- |"
for path in "${PATHS[@]}"; do
  lat() { printf "%.2f / %.2f / %.2f" "${P50[$path/$1]}" "${P90[$path/$1]}" "${P99[$path/$1]}"; }
  if [ -n "${PROCS[$path]}" ]; then
    cpu=$(printf "%.3f / %.3f" "${CPU[$path/1000]}" "${CPU[$path/5000]}")
    mem="$(rss ${PROCS[$path]}) MB"
  else
    cpu="-"; mem="-"
  fi
  printf "| %s | %.0f | %s | %s | %s | %s |\n" "$path" "${RPS[$path]}" "$(lat 1000)" "$(lat 5000)" "$cpu" "$mem"
done
