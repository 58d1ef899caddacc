#!/usr/bin/env python3
"""Writes the study's Markdown report (tools/scripts/study.sh) from its run directories.

    python3 tools/scripts/study_report.py --out DIR [--command TEXT] RUN_DIR [RUN_DIR ...]

Each RUN_DIR is a gan_train --out directory holding metrics.jsonl (with --eval-every lines),
samples/step_*.png, checkpoint.safetensors, eval.json (gan_eval at the end) and
weights.safetensors (gan_sample --export-torch: G and D only, PyTorch's state dicts). The report
(DIR/report.md) copies the sample grids into DIR/grids/ so that DIR stands alone; curves are
the PNGs tools/scripts/plot_metrics.py wrote into DIR (linked when present). Python standard library only.
"""
import argparse
import datetime
import json
import os
import shutil
import struct
import sys


def fail(msg):
    print(f"study_report: {msg}", file=sys.stderr)
    sys.exit(1)


def safetensors_counts(path):
    """Parameter counts by prefix ('G.', 'D.') from a safetensors header."""
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
    counts = {}
    for name, e in header.items():
        if name == "__metadata__":
            continue
        numel = 1
        for d in e["shape"]:
            numel *= d
        counts[name.split(".")[0]] = counts.get(name.split(".")[0], 0) + numel
    return counts, header.get("__metadata__", {})


def read_metrics(path):
    train, evals = [], []
    with open(path) as f:
        for i, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                j = json.loads(line)
            except json.JSONDecodeError as e:
                fail(f"{path}:{i}: {e}")
            (evals if "eval" in j else train).append(j)
    return train, evals


def load_run(d):
    name = os.path.basename(os.path.normpath(d))
    for f in ("metrics.jsonl", "eval.json", "weights.safetensors", "checkpoint.safetensors"):
        if not os.path.exists(os.path.join(d, f)):
            fail(f"{d}: no {f} (run tools/scripts/study.sh)")
    train, evals = read_metrics(os.path.join(d, "metrics.jsonl"))
    with open(os.path.join(d, "eval.json")) as f:
        final = json.load(f)
    counts, meta = safetensors_counts(os.path.join(d, "weights.safetensors"))
    config = json.loads(meta.get("config", "{}"))
    grids = sorted(g for g in os.listdir(os.path.join(d, "samples")) if g.startswith("step_"))
    return {
        "name": name, "dir": d, "train": train, "evals": evals, "final": final, "config": config,
        "params_g": counts.get("G", 0), "params_d": counts.get("D", 0),
        "weights_mb": os.path.getsize(os.path.join(d, "weights.safetensors")) / 1e6,
        "checkpoint_mb": os.path.getsize(os.path.join(d, "checkpoint.safetensors")) / 1e6,
        "grids": grids,
    }


def train_seconds(line):
    """Training time of a metrics line: wall time since the loop started minus evaluations."""
    return line.get("time_s", 0.0) - line.get("eval_s", 0.0)


def fmt(v, digits=3):
    return "-" if v is None else f"{v:.{digits}f}"


def conditional_section(runs):
    """The class-conditional models: the classifier's accuracy on their samples against the labels
    they were drawn for (the same on real images: the ceiling), FD within each class, per epoch
    and at the end. Their sample grids are class grids (one row per class)."""
    L = ["## Class-conditional models", ""]
    L.append("Class accuracy: the feature classifier's accuracy on generated images against the "
             "class each was drawn for (chance 0.1 with 10 classes); the real images' accuracy "
             "is its ceiling. Intra-class FD: FD between the real and the generated images of "
             "one class, averaged over the classes. Their per-epoch sample grids (below) are class "
             "grids (row k: class k, the same noise down each column).")
    L.append("")
    L.append("| model | class accuracy | ceiling (real) | intra-class FD (mean) | FD |")
    L.append("|---|---|---|---|---|")
    for r in runs:
        c = r["final"]["conditional"]
        L.append(f"| {r['name']} | {fmt(c.get('class_accuracy'))} | "
                 f"{fmt(c.get('real_class_accuracy'))} | {fmt(c.get('intra_fd_mean'), 1)} | "
                 f"{fmt(r['final'].get('fd'), 1)} |")
    L.append("")
    for r in runs:
        c = r["final"]["conditional"]
        names = c.get("class_names") or r["config"].get("class_names") or []
        per = c.get("intra_fd", [])
        L.append(f"{r['name']}, intra-class FD per class at the end:")
        L.append("")
        L.append("| " + " | ".join(str(k) + (f" {names[k]}" if k < len(names) else "")
                                   for k in range(len(per))) + " |")
        L.append("|" + "---|" * len(per))
        L.append("| " + " | ".join(fmt(v, 1) for v in per) + " |")
        L.append("")
        steps = [x for x in r["evals"] if "conditional" in x["eval"]]
        if steps:
            L.append(f"{r['name']}, per evaluation:")
            L.append("")
            L.append("| step | class accuracy | intra-class FD (mean) | FD |")
            L.append("|---|---|---|---|")
            for x in steps:
                c = x["eval"]["conditional"]
                L.append(f"| {x['step']} | {fmt(c.get('class_accuracy'))} | "
                         f"{fmt(c.get('intra_fd_mean'), 1)} | {fmt(x['eval'].get('fd'), 1)} |")
            L.append("")
    return L


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--command", default="tools/scripts/study.sh")
    ap.add_argument("runs", nargs="+")
    a = ap.parse_args()
    runs = [load_run(d) for d in a.runs]
    os.makedirs(os.path.join(a.out, "grids"), exist_ok=True)
    L = []
    c0 = runs[0]["config"]
    L.append("# SAGAN vs DCGAN study")
    L.append("")
    L.append(f"`{a.command}` on {datetime.date.today().isoformat()}: data `{c0.get('data')}`, "
             f"seed {c0.get('seed')}, batch {c0.get('batch_size')}, device "
             f"{runs[0]['final'].get('device')}. Metrics in the feature space of "
             f"`{os.path.basename(runs[0]['final']['feature_net']['file'])}` "
             f"({runs[0]['final']['feature_net']['net']}): FD is a Frechet distance there, not FID "
             "(docs/metrics.md).")
    L.append("")
    L.append("## At the end")
    L.append("")
    L.append("| model | params G | params D | weights (G+D) MB | checkpoint MB | images/s | "
             "train s | FD | KID | precision | recall | density | coverage | IS |")
    L.append("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in runs:
        f, last = r["final"], (r["train"][-1] if r["train"] else {})
        # images/s of training alone: the logged rate counts evaluation time too.
        ts = train_seconds(last)
        ips = last.get("images_per_s", 0.0) * last.get("time_s", 0.0) / ts if ts > 0 else None
        L.append(f"| {r['name']} ({r['config'].get('image_size')} px) | {r['params_g']:,} | "
                 f"{r['params_d']:,} | {r['weights_mb']:.2f} | {r['checkpoint_mb']:.2f} | "
                 f"{fmt(ips, 1)} | {fmt(ts, 1)} | "
                 f"{fmt(f['fd'])} | {fmt(f['kid_mean'], 4)} | {fmt(f['precision'])} | "
                 f"{fmt(f['recall'])} | {fmt(f['density'])} | {fmt(f['coverage'])} | "
                 f"{fmt(f['is_mean'])} |")
    L.append("")
    L.append(f"Final numbers: gan_eval on {runs[0]['final']['fake_count']} samples against "
             f"{runs[0]['final']['real_count']} real images (KID over "
             f"{runs[0]['final']['kid_subsets']} subsets of {runs[0]['final']['kid_subset_size']}; "
             f"precision/recall k = {runs[0]['final']['pr_k']}, density/coverage k = "
             f"{runs[0]['final']['dc_k']}). Weights: G and D as PyTorch state dicts "
             "(`gan_sample --export-torch`), float32 - the study's 28 MB vs 95 MB compares these; "
             "the checkpoint adds Adam's two moments and the training state.")
    L.append("")
    cond = [r for r in runs if "conditional" in r["final"]]
    if cond:
        L.extend(conditional_section(cond))
    # Equal training time: the shortest run's training time; each model's last evaluation by then.
    budget = min(train_seconds(r["train"][-1]) for r in runs if r["train"])
    L.append(f"## At equal training time ({budget:.1f} s, the shortest run)")
    L.append("")
    L.append("| model | step | FD | KID | precision | recall |")
    L.append("|---|---|---|---|---|---|")
    for r in runs:
        e = [x for x in r["evals"] if train_seconds(x) <= budget + 1e-9]
        if not e:
            L.append(f"| {r['name']} | no evaluation by then | | | | |")
            continue
        x = e[-1]
        v = x["eval"]
        L.append(f"| {r['name']} | {x['step']} | {fmt(v['fd'])} | {fmt(v['kid_mean'], 4)} | "
                 f"{fmt(v['precision'])} | {fmt(v['recall'])} |")
    L.append("")
    L.append("## Per epoch (samples from fixed noise; FD of that epoch's evaluation)")
    L.append("")
    L.append("| epoch | " + " | ".join(r["name"] for r in runs) + " |")
    L.append("|---|" + "---|" * len(runs))
    epochs = max(len(r["grids"]) for r in runs)
    for i in range(epochs):
        cells = []
        for r in runs:
            if i >= len(r["grids"]):
                cells.append("")
                continue
            g = r["grids"][i]
            dst = f"{r['name']}_{g}"
            shutil.copyfile(os.path.join(r["dir"], "samples", g), os.path.join(a.out, "grids", dst))
            step = int(g[len("step_"):-len(".png")])
            fd = next((x["eval"]["fd"] for x in r["evals"] if x["step"] == step), None)
            cells.append(f"![{r['name']} step {step}](grids/{dst})<br>step {step}, FD {fmt(fd)}")
        L.append(f"| {i + 1} | " + " | ".join(cells) + " |")
    L.append("")
    L.append("## Predicted classes of the final samples (mode collapse shows here)")
    L.append("")
    L.append("| model | " + " | ".join(str(i) for i in range(len(runs[0]["final"]["class_histogram"])))
             + " |")
    L.append("|---|" + "---|" * len(runs[0]["final"]["class_histogram"]))
    L.append("| real | " + " | ".join(str(v) for v in runs[0]["final"]["real_class_histogram"]) + " |")
    for r in runs:
        L.append(f"| {r['name']} | " + " | ".join(str(v) for v in r["final"]["class_histogram"]) + " |")
    L.append("")
    curves = [p for p in ("losses.png", "d_outputs.png", "fd.png", "eval.png", "conditional.png",
                          "throughput.png",
                          "spectral_norms.png") if os.path.exists(os.path.join(a.out, p))]
    if curves:
        L.append("## Curves")
        L.append("")
        for p in curves:
            L.append(f"![{p[:-4]}]({p})")
        L.append("")
    with open(os.path.join(a.out, "report.md"), "w") as f:
        f.write("\n".join(L))
    print(os.path.join(a.out, "report.md"))


if __name__ == "__main__":
    main()
