#!/usr/bin/env bash
# The ingress benchmark: client -HTTPS-> gateway -HTTP-> server, for weft's
# ingress gateway (a Gateway HTTPS server, SIMPLE TLS from a credentialName
# folder, routed by a VirtualService to a ServiceEntry) and HAProxy doing
# the same (TLS termination, keep-alive to the server), against the server
# with no proxy, in one run with the rounds interleaved. Reports throughput
# (wrk, 32 connections), latency p50/p90/p99 at fixed rates (weft-loadgen,
# new TLS sessions only at connection start), CPU seconds per 1,000
# requests and peak RSS of the proxy, each the median over the rounds;
# then the targets against HAProxy, as medians and pooled (as bench/run.sh).
#
# Needs Debian's wrk, haproxy, nginx-light and openssl (installed when
# missing, as root). Everything listens on 127.0.0.x.
# Usage: [ROUNDS=5] [RATES="1000 5000"] bench/gateway.sh [SECONDS per measurement, 10]
#
# WEFT_BASELINE=/path/to/an/older/weft adds a second gateway running that
# binary (row weft-baseline), to compare two builds in the same run.
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${1:-10}
ROUNDS=${ROUNDS:-5}
read -ra RATES <<< "${RATES:-1000 5000}"

source bench/lib.sh
need wrk:wrk haproxy:haproxy nginx:nginx-light openssl:openssl
prepare gateway-bench
HOST=shop.example.com

# The server: nginx answering 1 KB over plain HTTP.
start_nginx "$W/nginx" 127.0.0.40

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
declare -A LOAD_ARGS=( [direct]="" [weft]="--tls-roots $W/ca.crt" [weft-baseline]="--tls-roots $W/ca.crt" [haproxy]="--tls-roots $W/ca.crt" )
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

measure "$W/data"
python3 bench/report.py "$W/data" "$SECS" "$ROUNDS" "" "peak RSS"
