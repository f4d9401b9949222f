"""The benchmarks' report: reads the lines bench/lib.sh's `measure` wrote and
prints the README table (each figure the median over the rounds) and, for
each weft row, the issue's targets as ratios to HAProxy: the medians of the
rounds, and the p99 of all the rounds' requests pooled (DATA.lat, one file
of latencies per path, rate and round) with a 95% bootstrap interval drawn
over whole rounds.

Usage: report.py DATA SECS ROUNDS CPU_HEADING RSS_HEADING
"""

import datetime
import os
import random
import statistics
import sys

data, secs, rounds, cpu_heading, rss_heading = sys.argv[1:]
wrk, load, rss = {}, {}, {}
paths = []
for line in open(data):
    kind, *f = line.split()
    if kind == "rss":
        rss[f[0]] = int(f[1])
        continue
    path = f[1]
    if path not in paths:
        paths.append(path)
    if kind == "wrk":
        wrk.setdefault(path, []).append(float(f[2]))
    elif kind == "load":
        rnd, rate = int(f[0]), int(f[2])
        p50, p90, p99 = map(float, f[3:6])
        cpu = None if f[6] == "-" else float(f[6])
        load[(path, rate, rnd)] = (p50, p90, p99, cpu)
order = ["direct", "weft", "weft-baseline", "haproxy"]
paths.sort(key=lambda p: order.index(p) if p in order else len(order))
rates = sorted({k[1] for k in load})
rnds = sorted({k[2] for k in load})
med = statistics.median


def figure(path, rate, i):
    """The median over the rounds of one figure (0 p50, 1 p90, 2 p99, 3 CPU)."""
    vals = [load[(path, rate, r)][i] for r in rnds if (path, rate, r) in load]
    vals = [v for v in vals if v is not None]
    return med(vals) if vals else None


def rps(rate):
    return f"{rate:,} rps"


model = "unknown CPU"
for line in open("/proc/cpuinfo"):
    if line.startswith("model name"):
        model = line.split(":", 1)[1].strip()
        break
print()
print(f"{datetime.date.today()}, {os.cpu_count()} cores, {model}, {secs}s per measurement, "
      f"median of {rounds} interleaved rounds")
print()
lat_cols = " | ".join(f"p50/p90/p99 ms at {rps(r)}" for r in rates)
print(f"| path | wrk req/s (32 conns) | {lat_cols} | CPU s per 1,000 req ({cpu_heading}"
      f"at {' / '.join(f'{r:,}' for r in rates)} rps) | {rss_heading} |")
print("| --- " * (4 + len(rates)) + "|")
for path in paths:
    lat = " | ".join(" / ".join(f"{figure(path, r, i):.2f}" for i in range(3)) for r in rates)
    if path in rss:
        cpu = " / ".join(f"{figure(path, r, 3):.3f}" for r in rates)
        mem = f"{rss[path]} MB"
    else:
        cpu = mem = "-"
    print(f"| {path} | {med(wrk[path]):.0f} | {lat} | {cpu} | {mem} |")

# The targets: the p99 a path adds to the direct one at or below
# HAProxy's, and CPU per request at or below HAProxy's. Each round pairs the
# figures measured back to back; "k/n" counts the rounds that met the target.
if "haproxy" not in paths:
    sys.exit(0)


def against_haproxy(label, part, tail=lambda path: ""):
    """Prints a line per weft path: `part(path, rate)` for each rate that has one."""
    print()
    for path in paths:
        if path in ("direct", "haproxy"):
            continue
        parts = [p for rate in rates if (p := part(path, rate))]
        print(f"{path} against haproxy, {label}: " + "; ".join(parts) + tail(path))


def medians(path, rate):
    both = [r for r in rnds if all((p, rate, r) in load for p in (path, "haproxy", "direct"))]
    added = [load[(path, rate, r)][2] - load[("direct", rate, r)][2] for r in both]
    added_h = [load[("haproxy", rate, r)][2] - load[("direct", rate, r)][2] for r in both]
    met = sum(a <= h for a, h in zip(added, added_h))
    a, h = med(added), med(added_h)
    ratio = f"{a / h:.2f}x" if h > 0 else "n/a"
    cpu = [load[(path, rate, r)][3] / load[("haproxy", rate, r)][3] for r in both]
    return (f"at {rps(rate)}: added p99 {a:.2f} vs {h:.2f} ms ({ratio}, met in {met}/{len(both)} rounds), "
            f"CPU per request {med(cpu):.2f}x (rounds {min(cpu):.2f}-{max(cpu):.2f}x, "
            f"met in {sum(c <= 1 for c in cpu)}/{len(cpu)})")


against_haproxy("medians over the rounds", medians,
                lambda path: f"; peak RSS {rss.get(path, 0)} MB (target 20 MB)")

# The rounds pooled: one p99 over every request a path served at a rate,
# which a few stalled requests in one round move less than they move that
# round's own p99.
lat_dir = data + ".lat"
if not os.path.isdir(lat_dir):
    sys.exit(0)
pooled, by_round = {}, {}
for name in os.listdir(lat_dir):
    path, rate, rnd = name.rsplit("-", 2)
    with open(os.path.join(lat_dir, name)) as f:
        v = [int(line.split()[1]) for line in f]
    by_round.setdefault((path, int(rate)), {})[int(rnd)] = v
    pooled.setdefault((path, int(rate)), []).extend(v)
for v in pooled.values():
    v.sort()


def added_ratio(path, rate, picked):
    """The pooled p99 `path` adds to the direct path over the rounds
    `picked` (a round may be picked more than once), as a ratio to
    HAProxy's."""
    def p99(p):
        v = sorted(x for r in picked for x in by_round[(p, rate)][r])
        return v[min(int(len(v) * 0.99), len(v) - 1)]
    d, h = p99("direct"), p99("haproxy")
    return (p99(path) - d) / (h - d) if h > d else None


def interval(path, rate, draws=200):
    """A 95% bootstrap interval of `added_ratio`, drawing whole rounds (each
    with its three paths, measured back to back) with replacement: how far
    the pooled ratio could move with other rounds of the same machine."""
    common = sorted(set.intersection(*(set(by_round.get((p, rate), {})) for p in ("direct", path, "haproxy"))))
    if len(common) < 2:
        return None
    rng = random.Random(1)
    ratios = sorted(r for _ in range(draws)
                    if (r := added_ratio(path, rate, [rng.choice(common) for _ in common])) is not None)
    return ratios[len(ratios) * 25 // 1000], ratios[len(ratios) * 975 // 1000 - 1]


def pct(path, rate, q):
    """The q-quantile in ms of every request `path` served at `rate`."""
    v = pooled.get((path, rate), [])
    return v[min(int(len(v) * q), len(v) - 1)] / 1000 if v else None


def pooled_part(path, rate):
    d, w, h = (pct(p, rate, 0.99) for p in ("direct", path, "haproxy"))
    if None in (d, w, h):
        return None
    n = len(pooled[(path, rate)])
    ratio = f"{(w - d) / (h - d):.2f}x" if h > d else "n/a"
    if (ci := interval(path, rate)) is not None:
        ratio += f", 95% over rounds {ci[0]:.2f}-{ci[1]:.2f}x"
    return (f"at {rps(rate)} ({n:,} requests): p99 {w:.2f} vs {h:.2f} ms (direct {d:.2f}), "
            f"added {w - d:.2f} vs {h - d:.2f} ms ({ratio}); "
            f"p50 {pct(path, rate, 0.5):.2f} vs {pct('haproxy', rate, 0.5):.2f}, "
            f"p99.9 {pct(path, rate, 0.999):.2f} vs {pct('haproxy', rate, 0.999):.2f} ms")


against_haproxy("all rounds' requests pooled", pooled_part)
