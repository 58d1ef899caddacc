#!/usr/bin/env python3
"""The scaling model of docs/distributed.md: what data-parallel gan_train should reach on W GPUs,
from the measured single-GPU step time and the bytes all-reduced per iteration. A model, not a
measurement: it prints a Markdown table.

usage: scaling_model.py [--busbw-nvlink GBPS] [--busbw-ib GBPS] [--lat-nvlink US] [--lat-ib US]

Per iteration (n_dis = 1, the configs of docs/gan_bench.md) every rank all-reduces D's gradients
once and G's once: 4 (P_G + P_D) bytes in float32, plus 24 bytes of logged scalars. An all-reduce
of b bytes over W ranks takes 2 (W - 1) / W * b / busbw (NCCL's bus bandwidth convention: the
ring's bandwidth term) + 2 log2(W) * latency (the tree's latency term NCCL uses at scale). Weak scaling: every rank keeps its batch, so the step's compute stays
the single-GPU time T and the efficiency is T / (T + exposed communication). "no overlap": all of
it exposed; "overlap": the all-reduce of each network hidden behind up to half of T (its backward
pass), which bucketed all-reduce launched during backward would give.
"""
import argparse
import math

# (config, P_G, P_D, single-GPU ms per iteration in TF32, CUDA graph, the run it comes from)
CONFIGS = [
    ("dcgan-32 B64", 1068928, 663296, 1.04, "2026-12-04 H200"),
    ("dcgan-64 B64", 3576704, 2765568, 2.40, "2026-12-04 H200"),
    ("dcgan-64 B256", 3576704, 2765568, 6.47, "2026-12-04 H200"),
    ("sagan-32 B64", 1209909, 765859, 2.31, "2026-11-26 H200"),
    ("sagan-64 B64", 3832885, 3175299, 5.13, "2026-12-04 H200"),
    ("sagan-64 B256", 3832885, 3175299, 26.31, "2026-11-26 H200"),
    ("sagan-128 B64", 13273141, 12802883, 74.26, "2026-11-26 H200"),
]


def allreduce_ms(nbytes, w, busbw_gbps, lat_us):
    return (2 * (w - 1) / w * nbytes / (busbw_gbps * 1e9) + 2 * math.log2(w) * lat_us * 1e-6) * 1e3


def main():
    ap = argparse.ArgumentParser()
    # NCCL all-reduce bus bandwidth for messages of 2-100 MB: NVLink 4 inside an 8-GPU H100/H200
    # node, and 400 Gb/s InfiniBand per GPU between nodes (8 nodes x 8 GPUs).
    ap.add_argument("--busbw-nvlink", type=float, default=350.0)
    ap.add_argument("--busbw-ib", type=float, default=40.0)
    ap.add_argument("--lat-nvlink", type=float, default=5.0, help="per tree level, microseconds")
    ap.add_argument("--lat-ib", type=float, default=10.0)
    a = ap.parse_args()
    print("| config | MB all-reduced per iteration | T 1 GPU ms | 8 GPUs NVLink: comm ms | "
          "efficiency no overlap / overlap | 64 GPUs IB: comm ms | efficiency no overlap / "
          "overlap |")
    print("|---|---|---|---|---|---|---|")
    for name, pg, pd, t, _ in CONFIGS:
        b = 4 * (pg + pd) + 24
        row = [name, f"{b / 1e6:.1f}", f"{t:.2f}"]
        for w, bw, lat in ((8, a.busbw_nvlink, a.lat_nvlink), (64, a.busbw_ib, a.lat_ib)):
            # two all-reduces (D's, G's), each with its own latency
            c = allreduce_ms(4 * pd, w, bw, lat) + allreduce_ms(4 * pg + 24, w, bw, lat)
            exposed = max(0.0, c - 0.5 * t)
            row += [f"{c:.2f}", f"{t / (t + c):.0%} / {t / (t + exposed):.0%}"]
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
