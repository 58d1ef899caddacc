#!/usr/bin/env python3
"""The CPU table: gan_bench --device cpu against torch_gan_bench.py --device cpu (docs/cpu-backend.md).

    bench/cpu_table.py ENGINE.jsonl --torch TORCH.jsonl [--peak CPU_PEAK.json]

ENGINE holds gan_bench's JSON lines (fp32, CPU), TORCH those of bench/torch_gan_bench.py with
--count-flops (which adds gflop_per_iter, one iteration's FLOPs), PEAK the line of
build/bench/cpu_peak (the measured FMA throughput). One Markdown row per config and loop: both
times (ms per iteration), the engine's speed-up over PyTorch (goal: at least 1.0x in every row,
1.5x in at least half), both peak resident sets (goal: the engine's below PyTorch's), the
FLOPs of an iteration and the fraction of the FMA peak the engine reaches. A summary line counts
the goals met. Standard library only.
"""
import argparse
import json
import sys


def load(path):
    rows = []
    with open(path) as f:
        for line in f:
            line = line.strip()
            if line.startswith("{"):
                rows.append(json.loads(line))
    return rows


def measured(rows):
    out = {}
    for r in rows:
        if "ms_per_iter" not in r or r.get("variant", "fp32") != "fp32":
            continue
        if r.get("width", 64) != 64 or r.get("channels", 3) != 3:
            continue
        out[(r["model"], r["img"], r["batch"], r.get("loop", "anchor"))] = r
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("engine")
    ap.add_argument("--torch", required=True)
    ap.add_argument("--peak", help="cpu_peak's JSON line")
    a = ap.parse_args()
    eng, tor = measured(load(a.engine)), measured(load(a.torch))
    peak = None
    if a.peak:
        p = load(a.peak)
        peak = p[0]["fma_gflops"] if p else None
    print("| config | loop | engine ms | PyTorch ms | speed-up | engine peak RSS MB | "
          "PyTorch peak RSS MB | GFLOP per iteration | engine % of FMA peak | goals |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    rows, at1, at15, mem_ok = 0, 0, 0, 0
    for k in sorted(set(eng) | set(tor), key=lambda k: (k[3], k[0], k[1], k[2])):
        e, t = eng.get(k), tor.get(k)
        model, img, batch, loop = k
        ems = e["ms_per_iter"] if e else None
        tms = t["ms_per_iter"] if t else None
        sp = tms / ems if ems and tms else None
        erss = e.get("peak_rss_mb") if e else None
        trss = t.get("peak_rss_mb") if t else None
        gflop = t.get("gflop_per_iter") if t else None
        frac = (gflop / (ems / 1e3) / peak * 100) if gflop and ems and peak else None
        goals = []
        rows += 1
        if sp is not None:
            at1 += sp >= 1.0
            at15 += sp >= 1.5
            goals.append("1.0x" + (" met" if sp >= 1.0 else " missed"))
        if erss is not None and trss is not None:
            mem_ok += erss < trss
            goals.append("memory" + (" met" if erss < trss else " missed"))

        def f(v, spec):
            return "-" if v is None else format(v, spec)

        print(f"| {model}-{img} B{batch} | {loop} | {f(ems, '.1f')} | {f(tms, '.1f')} | "
              f"{f(sp, '.2f')}x | {f(erss, '.0f')} | {f(trss, '.0f')} | {f(gflop, '.2f')} | "
              f"{f(frac, '.0f')}% | {', '.join(goals) or '-'} |")
    print()
    print(f"{at1} of {rows} rows at least 1.0x PyTorch, {at15} at least 1.5x "
          f"(goal: all, and at least {(rows + 1) // 2}); engine peak memory below PyTorch's in "
          f"{mem_ok} of {rows}" + (f"; FMA peak {peak:.0f} GFLOP/s" if peak else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
