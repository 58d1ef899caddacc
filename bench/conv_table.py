#!/usr/bin/env python3
"""conv_table: the per-geometry convolution table (docs/gan_bench.md) from bench_conv's JSON lines
and, optionally, torch_gan_bench.py --conv's.

    python3 bench/conv_table.py bench_conv.jsonl [--torch torch_conv.jsonl]

One row per (math mode, geometry, direction), in milliseconds: the engine's NHWC candidates as
cuDNN's heuristics order them (the first one: what the engine ran before it timed; the first
deterministic one: what --deterministic runs), the fastest deterministic and the fastest of any
(what the default runs; "nd" marks a non-deterministic algorithm), the fastest in NCHW, PyTorch's
time in NCHW and channels_last (cudnn.benchmark), and PyTorch's best over the engine's NHWC best
(> 1: the engine is faster). A last row per mode sums each column over the geometries.
"""
import argparse
import json
import sys


def load(path, want):
    rows = []
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line.startswith("{"):
                continue
            r = json.loads(line)
            if want(r):
                rows.append(r)
    return rows


def ms(p):
    return p["ms"] if p and p.get("ms", -1) >= 0 else None


def cell(v, algo=None, nd=False):
    if v is None:
        return "-"
    s = f"{v:.3f}"
    if algo is not None:
        s += f" ({algo}{' nd' if nd else ''})"
    return s


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("engine", help="bench_conv's JSON lines")
    ap.add_argument("--torch", help="torch_gan_bench.py --conv's JSON lines")
    a = ap.parse_args()
    eng = load(a.engine, lambda r: "geometry" in r and "layout" in r)
    if not eng:
        print(f"conv_table: no bench_conv lines in {a.engine}", file=sys.stderr)
        return 1
    torch = {}
    if a.torch:
        for r in load(a.torch, lambda r: r.get("conv") and "ms" in r):
            torch[(r["mode"], r["geometry"], r["direction"], r["layout"])] = r["ms"]
    by = {}
    for r in eng:
        by[(r["mode"], r["geometry"], r["direction"], r["layout"])] = r
    keys = []
    for r in eng:
        k = (r["mode"], r["geometry"], r["direction"])
        if k not in keys:
            keys.append(k)
    print("| mode | geometry (x NHWC, w KRSC) | direction | heuristic first (algo) | heuristic "
          "deterministic | best deterministic | best any (algo) | best NCHW | PyTorch NCHW | "
          "PyTorch channels_last | PyTorch best / engine best |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for mode in ("fp32", "tf32"):
        cols = [0.0] * 7
        have = [True] * 7
        n = 0
        for k in [k for k in keys if k[0] == mode]:
            nhwc = by.get(k + ("nhwc",))
            nchw = by.get(k + ("nchw",))
            h = nhwc and nhwc.get("heuristic")
            b = nhwc and nhwc.get("best")
            vals = [ms(h), ms(nhwc and nhwc.get("heuristic_deterministic")),
                    ms(nhwc and nhwc.get("best_deterministic")), ms(b),
                    ms(nchw and nchw.get("best")), torch.get(k + ("nchw",)),
                    torch.get(k + ("channels_last",))]
            pt = [v for v in vals[5:] if v is not None]
            ratio = f"{min(pt) / vals[3]:.2f}" if pt and vals[3] else "-"
            cells = [cell(vals[0], h and h["algo"]), cell(vals[1]), cell(vals[2]),
                     cell(vals[3], b and b["algo"], b and not b["deterministic"]),
                     cell(vals[4]), cell(vals[5]), cell(vals[6])]
            print(f"| {mode} | {k[1]} | {k[2]} | " + " | ".join(cells) + f" | {ratio} |")
            n += 1
            for i, v in enumerate(vals):
                if v is None:
                    have[i] = False
                else:
                    cols[i] += v
        if n:
            tot = [cell(c) if ok else "-" for c, ok in zip(cols, have)]
            pt = [c for c, ok in zip(cols[5:], have[5:]) if ok]
            ratio = f"{min(pt) / cols[3]:.2f}" if pt and have[3] and cols[3] else "-"
            print(f"| {mode} | **sum over {n} rows** | | " + " | ".join(tot) + f" | {ratio} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
