#!/usr/bin/env python3
"""Long-run stability of a gan_train run, from its metrics.jsonl (docs/reliability.md).

    python3 tools/scripts/stability.py RUN/metrics.jsonl [--max-rss-growth-mb 16] [--max-pool-growth-mb 0]
                               [--max-time-ratio 0] [--warmup 0.25]

Prints one line per tenth of the run (step, resident set, pool, milliseconds per step over the
interval) and a summary: growth of the resident set and of the pool from the end of the warm-up
(the first quarter by default: allocator caches, thread pools, cuDNN plans) to the end, and the
ratio of the mean step time of the last tenth to that of the tenth after the warm-up. Exits 1 when a growth or the ratio exceeds its limit
(a limit of 0 on the time ratio disables that check: timing is noisy on shared machines).
Standard library only.
"""
import argparse
import json
import sys


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("metrics")
    ap.add_argument("--max-rss-growth-mb", type=float, default=16.0)
    ap.add_argument("--max-pool-growth-mb", type=float, default=0.0)
    ap.add_argument("--max-time-ratio", type=float, default=0.0)
    ap.add_argument("--warmup", type=float, default=0.25, help="fraction of the records")
    a = ap.parse_args()
    try:
        with open(a.metrics) as f:
            rows = [json.loads(line) for line in f if line.strip()]
    except (OSError, json.JSONDecodeError) as e:
        sys.exit(f"stability: {a.metrics}: {e}")
    rows = [r for r in rows if "rss_mb" in r and "time_s" in r]
    if len(rows) < 20:
        sys.exit(f"stability: {a.metrics}: {len(rows)} records with rss_mb and time_s; need at least 20")
    tenth = len(rows) // 10

    def ms_per_step(lo, hi):
        r0, r1 = rows[lo], rows[hi]
        return (r1["time_s"] - r0["time_s"]) / max(1, r1["step"] - r0["step"]) * 1e3

    print("step      rss_mb   pool_mb   ms/step (over the interval)")
    for k in range(1, 11):
        hi = min(len(rows) - 1, k * tenth)
        lo = (k - 1) * tenth
        r = rows[hi]
        pool = r.get("pool_mb")
        print(f"{r['step']:<9} {r['rss_mb']:8.1f} {('%9.1f' % pool) if pool is not None else '        -'} "
              f"{ms_per_step(lo, hi):9.2f}")
    w = max(1, min(len(rows) - 1 - tenth, int(len(rows) * a.warmup)))
    base, last = rows[w], rows[-1]
    rss_growth = last["rss_mb"] - base["rss_mb"]
    pool_growth = (last.get("pool_mb", 0) or 0) - (base.get("pool_mb", 0) or 0)
    ratio = ms_per_step(len(rows) - 1 - tenth, len(rows) - 1) / ms_per_step(w, w + tenth)
    print(f"steps {rows[0]['step']}..{last['step']}: resident set {base['rss_mb']:.1f} -> "
          f"{last['rss_mb']:.1f} MiB ({rss_growth:+.1f}) from step {base['step']}, pool "
          f"{pool_growth:+.1f} MiB, step time last tenth / after warm-up {ratio:.2f}")
    bad = []
    if rss_growth > a.max_rss_growth_mb:
        bad.append(f"resident set grew {rss_growth:.1f} MiB > {a.max_rss_growth_mb}")
    if pool_growth > a.max_pool_growth_mb:
        bad.append(f"pool grew {pool_growth:.1f} MiB > {a.max_pool_growth_mb}")
    if a.max_time_ratio > 0 and ratio > a.max_time_ratio:
        bad.append(f"step time ratio {ratio:.2f} > {a.max_time_ratio}")
    if bad:
        sys.exit("stability: " + "; ".join(bad))


if __name__ == "__main__":
    main()
