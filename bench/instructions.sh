#!/usr/bin/env bash
# Instructions per request, counted by valgrind's callgrind: the weft
# sidecar pair against the HAProxy pair doing the same mTLS hop (the path
# of bench/run.sh), at a low fixed rate. Unlike CPU time, the count does not
# move with what else the machine is doing, so it shows a change of a few
# percent in one run. It counts user-space instructions only: not the
# kernel's work (about half of either pair's CPU), nor cache misses.
#
# Needs Debian's valgrind, haproxy and nginx-light (installed when missing,
# as root). Everything listens on 127.0.0.x.
# Usage: [WEFT_BASELINE=/path/to/an/older/weft] bench/instructions.sh [REQUESTS, 2000]
set -euo pipefail
cd "$(dirname "$0")/.."
REQUESTS=${1:-2000}
RATE=200

source bench/lib.sh
need valgrind:valgrind haproxy:haproxy nginx:nginx-light
prepare instructions
HOST=echo.default.svc.cluster.local:8080

start_nginx "$W/nginx" 127.0.0.45 127.0.0.46
$WEFT ca init --dir "$W/ca" >/dev/null
# counted NAME COMMAND...: COMMAND under callgrind; its pid in COUNTED[NAME].
declare -A COUNTED
counted() {
  local name=$1
  shift
  valgrind --tool=callgrind --callgrind-out-file="$W/$name.cg" \
    "$@" >/dev/null 2>"$W/$name.log" &
  PIDS+=($!)
  COUNTED[$name]=$!
}
declare -A CONNECT=( [weft]=127.0.0.25:15001 [weft-baseline]=127.0.0.26:15001 [haproxy]=127.0.0.52:8081 )
declare -A SIDES=( [weft]="weft-client weft-echo" [weft-baseline]="base-client base-echo" [haproxy]="haproxy-a haproxy-b" )
PATHS=(weft haproxy)
sidecar_mesh "$W/mesh" 127.0.0.25 127.0.0.45
for w in client echo; do
  counted "weft-$w" $WEFT proxy --mesh-dir "$W/mesh" --workload "default/$w" --ca-dir "$W/ca" --access-log off
done
if [ -n "${WEFT_BASELINE:-}" ]; then
  sidecar_mesh "$W/mesh-base" 127.0.0.26 127.0.0.46
  for w in client echo; do
    counted "base-$w" "$WEFT_BASELINE" proxy --mesh-dir "$W/mesh-base" --workload "default/$w" --ca-dir "$W/ca" --access-log off
  done
  PATHS=(weft weft-baseline haproxy)
fi
haproxy_pair "$W" "$W/ca" 127.0.0.52 127.0.0.62 127.0.0.45
for side in a b; do counted "haproxy-$side" haproxy -f "$W/haproxy-$side.cfg" -db; done

# Each path: warmed up, then REQUESTS requests counted.
declare -A OK
for path in "${PATHS[@]}"; do
  answering "${CONNECT[$path]}"
  $LOAD --connect "${CONNECT[$path]}" --host "$HOST" --rate "$RATE" --duration 2 >/dev/null
  # Counted from zero, dumped after: the dump holds these requests only.
  for side in ${SIDES[$path]}; do callgrind_control -z "${COUNTED[$side]}" >/dev/null 2>&1; done
  json=$($LOAD --connect "${CONNECT[$path]}" --host "$HOST" --rate "$RATE" --duration $((REQUESTS / RATE)))
  for side in ${SIDES[$path]}; do callgrind_control -d "${COUNTED[$side]}" >/dev/null 2>&1; done
  OK[$path]=$(python3 -c "import json,sys; print(json.loads(sys.argv[1])['ok'])" "$json")
done

# The dump callgrind wrote for each side: its one file with a number.
echo
echo "$(date -u +%Y-%m-%d), callgrind, $REQUESTS requests at $RATE rps, user-space instructions per request"
echo
echo "| path | client side | server side | pair | pair against haproxy |"
echo "| --- | --- | --- | --- | --- |"
python3 - "$W" "${PATHS[@]}" <<PY
import glob, sys
w, paths = sys.argv[1], sys.argv[2:]
sides = {$(for p in "${PATHS[@]}"; do printf '"%s": ("%s", "%s", %s), ' "$p" ${SIDES[$p]} "${OK[$p]}"; done)}
def count(side):
    total = 0
    for f in glob.glob(f"{w}/{side}.cg.*"):
        for line in open(f):
            if line.startswith(("summary:", "totals:")):
                total += int(line.split()[1])
                break
    return total
per = {p: [count(s) / sides[p][2] for s in sides[p][:2]] for p in paths}
for p in paths:
    a, b = per[p]
    ratio = (a + b) / sum(per["haproxy"])
    print(f"| {p} | {a:,.0f} | {b:,.0f} | {a + b:,.0f} | {ratio:.2f}x |")
PY
