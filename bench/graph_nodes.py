#!/usr/bin/env python3
"""graph_nodes: per-config CUDA-graph node counts of gan_bench's graph variants, with the step's
tensors in a capture arena (the default) against graph allocation nodes (--no-arena).

    python3 bench/graph_nodes.py ARENA.jsonl NO_ARENA.jsonl [--min-ratio 2]

Prints one Markdown row per (config, loop): nodes with and without the arena, their ratio, and
the arena's size; exits 1 when a ratio is below --min-ratio, when an allocation fell back to a
graph node (graph_arena_fallbacks), or when a (config, loop) of one file is missing from the other.
"""
import argparse
import json
import sys


def load(path):
    out = {}
    with open(path) as f:
        for line in f:
            if not line.startswith("{"):
                continue
            r = json.loads(line)
            if "graph_nodes" in r:
                out[(r["model"], r["img"], r["batch"], r["loop"])] = r
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("arena")
    ap.add_argument("no_arena")
    ap.add_argument("--min-ratio", type=float, default=2.0)
    a = ap.parse_args()
    with_arena, without = load(a.arena), load(a.no_arena)
    bad = []
    if not with_arena or set(with_arena) != set(without):
        bad.append("the two files measure different (config, loop) sets")
    print("| config | loop | nodes, arena | nodes, allocation nodes | ratio | arena MB |")
    print("|---|---|---|---|---|---|")
    for k in sorted(with_arena):
        r, r0 = with_arena[k], without.get(k)
        if r0 is None:
            continue
        ratio = r0["graph_nodes"] / r["graph_nodes"]
        print(f"| {k[0]}-{k[1]} B{k[2]} | {k[3]} | {r['graph_nodes']} | {r0['graph_nodes']} | "
              f"{ratio:.2f} | {r.get('graph_arena_mb', 0):.2f} |")
        if ratio < a.min_ratio:
            bad.append(f"{k}: {ratio:.2f}x fewer nodes, below {a.min_ratio}")
        if r.get("graph_arena_fallbacks"):
            bad.append(f"{k}: {r['graph_arena_fallbacks']} allocation(s) did not fit the arena")
    for b in bad:
        print(f"graph_nodes: {b}", file=sys.stderr)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
