#!/usr/bin/env python3
"""The ratio table of gan_bench against the PyTorch baseline (docs/gan_bench.md).

    bench/ratio_table.py ENGINE.jsonl [ENGINE2.jsonl ...] --torch TORCH.jsonl [--loop anchor]

ENGINE files hold gan_bench's JSON lines, TORCH those of bench/torch_gan_bench.py (the same
fields; its variants fp32, tf32, bf16, graph, graph_tf32, graph_bf16 and their channels-last forms
*_cl are used). The engine's fp32-tc rows (fp32-accurate on tensor cores) are compared with
PyTorch's strict fp32, its bf16 rows (bf16 precision) with PyTorch's torch.autocast bf16. One row per config and math mode: the engine's
eager and CUDA-graph times (of the chosen loop; the train loop's eager time beside), PyTorch's
eager and CUDA-graph times in the same loop and math mode (the faster of the NCHW and
channels-last layouts where both were measured), the speed-ups of the engine's best time over
each, and peak memory. Lines of a non-default model (width, channels) or loss (loss, n_dis) are
left out. PyTorch lines without a "loop" field (files written before the baseline had the train
loop) stand for either loop. The goals: >= 5x PyTorch eager and >= 2x PyTorch's CUDA-graph time
in the same math mode, and sagan-128 B64 peak memory <= 2.2 GB; bf16 rows: >= 2x PyTorch's bf16
CUDA graph and, at 64 px and above, >= 1.5x the engine's own TF32 time (best of eager and graph;
the factor is printed in the goals column). Missing measurements print as
'-', failed ones as 'error'; a row misses a goal unless it has numbers.
Standard library only (runs on the GPU machine and in CI).
"""
import argparse
import json
import sys

GOAL_GRAPH, GOAL_EAGER, GOAL_MEM_MB = 2.0, 5.0, 2.2 * 1000

# (math, engine eager variant, engine graph variant, PyTorch eager variant, PyTorch graph variant):
# the engine's fp32-accurate tensor-core mode (3xTF32 attention) against PyTorch's strict fp32.
MODES = (
    ("fp32", "fp32", "graph", "fp32", "graph"),
    ("fp32-tc", "fp32tc", "graph_fp32tc", "fp32", "graph"),
    ("tf32", "tf32", "graph_tf32", "tf32", "graph_tf32"),
    ("bf16", "bf16", "graph_bf16", "bf16", "graph_bf16"),
)
GOAL_BF16_VS_TF32 = 1.5


def load(paths):
    rows = []
    for p in paths:
        with open(p) as f:
            for n, line in enumerate(f, 1):
                line = line.strip()
                if not line.startswith("{"):
                    continue  # logs interleaved with the JSON lines
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as e:
                    sys.exit(f"ratio_table: {p}:{n}: not JSON ({e})")
    return rows


def key(r):
    return (r.get("model"), r.get("img"), r.get("batch"))


def fmt(v, spec):
    return "-" if v is None else format(v, spec)


def default_setup(r):
    """The benchmark's own models and losses: width 64, 3 channels, the model's loss."""
    return r.get("width", 64) == 64 and r.get("channels", 3) == 3 and "loss" not in r


def table(engine, torch, loop):
    eng, tor, failed = {}, {}, set()
    for r in engine:
        if not default_setup(r):
            continue
        k = key(r) + (r.get("variant"), r.get("loop", "anchor"))
        if "ms_per_iter" in r:
            eng[k] = r
        elif "error" in r:
            failed.add(k)
    for r in torch:
        if "ms_per_iter" in r and default_setup(r) and r.get("loop", loop) == loop:
            tor[key(r) + (r["variant"],)] = r
    fastest = lambda rows: min((r for r in rows if r), key=lambda r: r["ms_per_iter"], default=None)
    used_cl = False
    configs = []
    for r in engine + torch:
        k = key(r)
        if None not in k and k not in configs and ("ms_per_iter" in r or "error" in r):
            configs.append(k)
    out = [
        f"| config | math | engine eager ms | engine graph ms | engine train-loop ms | "
        f"PyTorch eager ms | PyTorch graph ms | x vs PyTorch eager | x vs PyTorch graph | "
        f"engine peak MB | PyTorch peak MB | goals |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    met = total = 0
    for k in configs:
        for mode, eager_v, graph_v, t_eager_v, t_graph_v in MODES:
            e_eager = eng.get(k + (eager_v, loop))
            e_graph = eng.get(k + (graph_v, loop))
            e_train = eng.get(k + (eager_v, "train"))
            t_eager = fastest(tor.get(k + (v,)) for v in (t_eager_v, t_eager_v + "_cl"))
            t_graph = fastest(tor.get(k + (v,)) for v in (t_graph_v, t_graph_v + "_cl"))
            used_cl |= any(r and r["variant"].endswith("_cl") for r in (t_eager, t_graph))
            if not any((e_eager, e_graph)) and (mode == "fp32-tc" or not any((t_eager, t_graph))) and not any(
                k + (v, loop) in failed for v in (eager_v, graph_v)
            ):
                continue
            ms = lambda r: r["ms_per_iter"] if r else None
            cell = lambda r, v, l: fmt(ms(r), ".2f") if r or k + (v, l) not in failed else "error"
            best = min((m for m in (ms(e_eager), ms(e_graph)) if m is not None), default=None)
            x_eager = ms(t_eager) / best if best and t_eager else None
            x_graph = ms(t_graph) / best if best and t_graph else None
            peaks = [r["peak_mem_mb"] for r in (e_eager, e_graph) if r and "peak_mem_mb" in r]
            peak = max(peaks, default=None)
            t_peak = t_eager.get("peak_mem_mb") if t_eager else None
            goals = x_eager is not None and x_graph is not None
            goals = goals and x_eager >= GOAL_EAGER and x_graph >= GOAL_GRAPH
            note = ""
            if mode == "bf16":
                tf32 = [ms(eng.get(k + (v, loop))) for v in ("tf32", "graph_tf32")]
                tf32_best = min((m for m in tf32 if m is not None), default=None)
                vs_tf32 = tf32_best / best if tf32_best and best else None
                goals = x_graph is not None and x_graph >= GOAL_GRAPH
                if k[1] >= 64:
                    goals = goals and vs_tf32 is not None and vs_tf32 >= GOAL_BF16_VS_TF32
                note = f" ({fmt(vs_tf32, '.2f')}x tf32)"
            if k == ("sagan", 128, 64):
                goals = goals and peak is not None and peak <= GOAL_MEM_MB
            total += 1
            met += goals
            out.append(
                f"| {k[0]}-{k[1]} B{k[2]} | {mode} | {cell(e_eager, eager_v, loop)} | "
                f"{cell(e_graph, graph_v, loop)} | {cell(e_train, eager_v, 'train')} | "
                f"{fmt(ms(t_eager), '.2f')} | "
                f"{fmt(ms(t_graph), '.2f')} | {fmt(x_eager, '.2f')} | {fmt(x_graph, '.2f')} | "
                f"{fmt(peak, '.0f')} | {fmt(t_peak, '.0f')} | {'met' if goals else 'missed'}{note} |"
            )
    out.append("")
    out.append(
        f"Goals met in {met} of {total} rows (>= {GOAL_EAGER:g}x PyTorch eager and >= "
        f"{GOAL_GRAPH:g}x PyTorch's CUDA graph in the same math mode; sagan-128 B64 peak <= "
        f"{GOAL_MEM_MB / 1000:g} GB). Engine times: the {loop} loop; speed-ups use its best of eager "
        f"and graph."
    )
    if any(line.split(" | ")[1] == "bf16" for line in out[2:] if line.startswith("| ")):
        out.append(
            f"bf16 rows (the engine's bf16 precision against PyTorch's torch.autocast bf16): >= "
            f"{GOAL_GRAPH:g}x PyTorch's CUDA graph and, at 64 px and above, >= "
            f"{GOAL_BF16_VS_TF32:g}x the engine's own TF32 time (in parentheses)."
        )
    if used_cl:
        out.append(
            "PyTorch times: the faster of the NCHW and channels-last layouts (peak: of the eager "
            "one chosen)."
        )
    return "\n".join(out)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("engine", nargs="+", help="gan_bench JSON lines")
    ap.add_argument("--torch", required=True, action="append",
                    help="bench/torch_gan_bench.py JSON lines (may be repeated)")
    ap.add_argument("--loop", default="anchor", choices=("anchor", "train"))
    a = ap.parse_args()
    try:
        engine, torch = load(a.engine), load(a.torch)
    except OSError as e:
        sys.exit(f"ratio_table: {e.filename}: {e.strerror}")
    print(table(engine, torch, a.loop))


if __name__ == "__main__":
    main()
