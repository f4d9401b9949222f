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
measure() {
  local out=$1 n=${#PATHS[@]} round i path rate before after json
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
        json=$($LOAD --connect "${CONNECT[$path]}" --host "$HOST" --rate "$rate" --duration "$SECS" ${LOAD_ARGS[$path]:-})
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
