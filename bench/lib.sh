# Shared by bench/run.sh and bench/gateway.sh (sourced, not run): the
# packages they need, the figures read from /proc, and the interleaved rounds.

# need CMD:PACKAGE...: installs each Debian package whose command is missing.
need() {
  for pkg in "$@"; do
    if ! command -v "${pkg%%:*}" >/dev/null 2>&1; then
      apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${pkg#*:}" >/dev/null
    fi
  done
}

# CPU time (user + system, in clock ticks) of the processes given.
ticks() { local t=0; for p in "$@"; do t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat"))); done; echo "$t"; }

# The largest peak RSS (VmHWM) of the processes given, in MB.
rss_mb() { local m=0; for p in "$@"; do v=$(awk '/VmHWM/ {print $2}' "/proc/$p/status"); [ "$v" -gt "$m" ] && m=$v; done; echo $((m / 1024)); }

# measure OUT: ROUNDS rounds over PATHS. A round runs wrk on every path, then
# each of RATES on every path, so the paths compared at one rate are measured
# back to back; the paths' order rotates from round to round, so none is
# always first. Reads the caller's SECS, RATES, HOST, LOAD and the arrays
# URL (for wrk), CONNECT (for the load generator), LOAD_ARGS (its extra
# arguments) and PROCS (the proxies' pids, empty for the direct path).
# Appends to OUT, for report.py:
#   wrk ROUND PATH REQ_PER_S
#   load ROUND PATH RATE P50_MS P90_MS P99_MS CPU_S_PER_1000 (- without proxies)
#   rss PATH MB (after the last round)
# and every request's latency to OUT.lat/PATH-RATE-ROUND (the load
# generator's --latencies), for the percentiles pooled over the rounds.
measure() {
  local out=$1 n=${#PATHS[@]} round i path rate before after json
  mkdir -p "$out.lat"
  for round in $(seq "$ROUNDS"); do
    local order=()
    for i in $(seq 0 $((n - 1))); do order+=("${PATHS[$(((i + round) % n))]}"); done
    for path in "${order[@]}"; do
      echo "wrk $round $path $(wrk -t2 -c32 -d"${SECS}s" -H "Host: $HOST" "${URL[$path]}" | awk '/Requests\/sec/ {print $2}')" >> "$out"
    done
    for rate in "${RATES[@]}"; do
      for path in "${order[@]}"; do
        before=$(ticks ${PROCS[$path]})
        # shellcheck disable=SC2086 # LOAD_ARGS holds several words
        json=$($LOAD --connect "${CONNECT[$path]}" --host "$HOST" --rate "$rate" --duration "$SECS" --latencies "$out.lat/$path-$rate-$round" ${LOAD_ARGS[$path]:-})
        after=$(ticks ${PROCS[$path]})
        python3 - "$round" "$path" "$rate" "$json" "$((after - before))" "$(getconf CLK_TCK)" "${PROCS[$path]}" >> "$out" <<'PY'
import json, sys
rnd, path, rate, raw, ticks, hz, procs = sys.argv[1:]
j = json.loads(raw)
cpu = f"{int(ticks) / int(hz) / max(j['ok'], 1) * 1000:.4f}" if procs else "-"
print("load", rnd, path, rate, j["p50_ms"], j["p90_ms"], j["p99_ms"], cpu)
PY
      done
    done
  done
  for path in "${PATHS[@]}"; do
    [ -n "${PROCS[$path]}" ] && echo "rss $path $(rss_mb ${PROCS[$path]})" >> "$out"
  done
  return 0
}

# prepare NAME: builds weft and the load generator (release), and sets
# WEFT, LOAD, a work directory W (/tmp/weft-NAME.*) and PIDS, all stopped
# and removed when the script exits.
prepare() {
  cargo build --release -q -p weft -p weft-loadgen
  WEFT=target/release/weft
  LOAD=target/release/weft-loadgen
  W=$(mktemp -d "/tmp/weft-$1.XXXXXX")
  PIDS=()
  trap cleanup EXIT
}

# BENCH_DATA=DIR keeps the measurements (data and every request's latency).
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  if [ -n "${BENCH_DATA:-}" ] && [ -e "$W/data" ]; then mkdir -p "$BENCH_DATA" && cp -r "$W"/data* "$BENCH_DATA"/; fi
  rm -rf "$W"
}

# The pieces the benchmarks set up. Each appends the pids it starts to the
# caller's PIDS, for its cleanup.

# start_nginx DIR ADDRESS...: nginx answering 1 KB on port 8080 of each
# address, keep-alive without limit.
start_nginx() {
  local dir=$1 body listens="" a
  shift
  body=$(head -c 1024 /dev/zero | tr '\0' 'x')
  for a in "$@"; do listens+="listen $a:8080; "; done
  mkdir -p "$dir"
  cat > "$dir/nginx.conf" <<CONF
worker_processes 1;
pid $dir/pid;
error_log $dir/error.log;
events { worker_connections 4096; }
http {
  access_log off;
  server { $listens keepalive_requests 1000000; location / { return 200 "$body"; } }
}
CONF
  nginx -c "$dir/nginx.conf" -g 'daemon off;' & PIDS+=($!)
}

# sidecar_mesh DIR CLIENT ECHO: the mesh of a client workload at address
# CLIENT and an echo workload at ECHO (where nginx listens), behind
# echo.default.svc.cluster.local:8080.
sidecar_mesh() {
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

# haproxy_pair DIR CA FRONT BACK APP: configurations for two HAProxy
# instances doing the sidecar pair's job, DIR/haproxy-a.cfg (HTTP on FRONT,
# port 8081) and DIR/haproxy-b.cfg (TLS 1.3 with client certificates on
# BACK, port 8443, to nginx at APP), with certificates from weft's CA in CA.
# HAProxy starts a thread per core unless HAPROXY_THREADS says how many.
haproxy_pair() {
  local dir=$1 ca=$2 front=$3 back=$4 app=$5 side
  for side in a b; do
    $WEFT ca issue --dir "$ca" --spiffe-id "spiffe://cluster.local/ns/default/sa/haproxy-$side" --out-dir "$dir/$side" >/dev/null
    cat "$dir/$side/cert-chain.pem" "$dir/$side/key.pem" > "$dir/$side/crt.pem"
  done
  local common="global
  maxconn 8192${HAPROXY_THREADS:+
  nbthread $HAPROXY_THREADS}
defaults
  mode http
  timeout connect 5s
  timeout client 30s
  timeout server 30s
  http-reuse always"
  cat > "$dir/haproxy-a.cfg" <<CONF
$common
frontend out
  bind $front:8081
  default_backend mesh
backend mesh
  server b $back:8443 ssl crt $dir/a/crt.pem ca-file $dir/a/root-cert.pem verify required ssl-min-ver TLSv1.3 alpn http/1.1
CONF
  cat > "$dir/haproxy-b.cfg" <<CONF
$common
frontend in
  bind $back:8443 ssl crt $dir/b/crt.pem ca-file $dir/b/root-cert.pem verify required ssl-min-ver TLSv1.3 alpn http/1.1
  default_backend app
backend app
  server app $app:8080
CONF
}

# answering ADDRESS [HOST]: waits until a GET through ADDRESS succeeds.
answering() {
  local i
  for i in $(seq 100); do
    if curl -sf -o /dev/null -H "Host: ${2:-$HOST}" "http://$1/" 2>/dev/null; then return 0; fi
    sleep 0.2
  done
  echo "$1 is not answering" >&2
  return 1
}
