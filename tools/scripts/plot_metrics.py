#!/usr/bin/python3
"""Curves of one or more gan_train runs, from their metrics.jsonl, as small PNGs.

    /usr/bin/python3 tools/scripts/plot_metrics.py --out DIR [--label NAME ...] [--smooth K]
                                           [--x step|wall] RUN [RUN ...]

RUN is a run directory (holding metrics.jsonl) or a metrics.jsonl file. Several runs overlay on
the same axes, one colour per run; the legend names each run by its --label (give one --label
per run, in order) or else by its directory (by the file's stem when it is not metrics.jsonl).

Writes into DIR, printing the path of each PNG written (one per line):

    losses.png          loss_d (solid) and loss_g (dashed); below them, when logged, the
                        penalty (gradient_penalty or r1_penalty) and grad_norm
    d_outputs.png       D_x (solid) and D_G_z (dashed): mean sigmoid of D for bce, logits else
    throughput.png      images/s over each logging interval (solid) and since the start (dashed)
    memory.png          rss_mb (solid) and pool_mb (dashed, CUDA runs)
    spectral_norms.png  G.sigma.<layer> and D.sigma.<layer>, when logged (one panel each)
    attention.png       G.gamma.<i> and D.gamma.<i> (self-attention), when logged
    fd.png              eval.fd, when evaluation lines exist
    eval.png            eval.kid_mean (+- kid_std), eval.is_mean (+- is_std), precision and
                        recall, density and coverage: the panels that have data
    conditional.png     a conditional model's eval.conditional.class_accuracy (solid; the real
                        images' accuracy dotted, its ceiling) and intra_fd_mean

A plot whose data no run has is not written. Evaluation lines are lines with an "eval" object
({"step": N, "eval": {"fd": ..., "kid_mean": ..., ...}}; "step" may also sit inside "eval").

--smooth K: trailing moving average over K logged points of the training curves (losses, D
outputs, penalties, sigmas, gammas), drawn over the raw curve in a lighter shade; default 1 (off).
--x wall: wall-clock time on the x axis of every plot instead of the step. It comes from time_s
(seconds since the process started; a resumed run's segments are laid end to end); evaluation
lines take the time of the training step they evaluate. A run without time_s is an error.

metrics.jsonl lines (tools/train/trainer.cpp): step, loss_d, loss_g, D_x, D_G_z, with wgan-gp
or --r1 also gradient_penalty / r1_penalty and grad_norm, G.gamma.<i> / D.gamma.<i>,
G.sigma.<layer> / D.sigma.<layer>, images_per_s (mean since the process started), time_s,
rss_mb, and on CUDA pool_mb. A null value (a non-finite float) is drawn as a gap. When a resumed
run logs a step again, the later lines replace the earlier ones from that step on.

Bad input (a missing file, a file without metrics lines, a line that is not a JSON object with
a numeric "step") ends with one line on stderr naming the file and line, and exit status 1.
Blank lines are skipped. Python 3.11, standard library and matplotlib only (Debian's
python3-matplotlib, hence /usr/bin/python3); the Agg backend, 6 x 4 inch figures at 80 dpi.
"""
import argparse
import bisect
import json
import math
import os
import sys
from dataclasses import dataclass, field

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402 (after the backend is chosen)

PROG = "plot_metrics"
FIGSIZE = (6, 4)
DPI = 80
PENALTY_KEYS = ("gradient_penalty", "r1_penalty")
FD_KEYS = ("fd", "fid")


class InputError(Exception):
    """One line for stderr, naming the file (and line) at fault."""


@dataclass
class Run:
    label: str
    path: str
    train: list = field(default_factory=list)  # dicts of numeric fields, "step" and "wall" set
    evals: list = field(default_factory=list)  # dicts of numeric eval fields, "step" set

    def keys(self):
        return {k for r in self.train for k in r}


def number(v):
    """A metric value: int/float as float, null (a non-finite float) as NaN, else None."""
    if v is None:
        return math.nan
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    return float(v)


def numeric_fields(obj):
    out = {}
    for k, v in obj.items():
        x = number(v)
        if x is not None:
            out[k] = x
    return out


def metrics_path(arg):
    if os.path.isdir(arg):
        p = os.path.join(arg, "metrics.jsonl")
        if not os.path.isfile(p):
            raise InputError(f"{PROG}: {arg}: no metrics.jsonl in this directory")
        return p
    if not os.path.exists(arg):
        raise InputError(f"{PROG}: {arg}: no such file or directory")
    return arg


def default_label(path):
    path = os.path.abspath(path)
    base = os.path.basename(path)
    if base == "metrics.jsonl":
        return os.path.basename(os.path.dirname(path)) or base
    return os.path.splitext(base)[0]


def read_run(path, label):
    """Parses one metrics.jsonl into a Run; raises InputError on bad input."""
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(f"{PROG}: {path}: cannot read ({getattr(e, 'strerror', None) or e})")
    run = Run(label, path)
    offset = 0.0  # wall time of the segments before the current one (resume)
    last_time = None
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        where = f"{PROG}: {path}:{n}"
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise InputError(f"{where}: invalid JSON ({e.msg} at column {e.colno})")
        if not isinstance(obj, dict):
            raise InputError(f"{where}: not a JSON object")
        ev = obj.pop("eval", None)
        if ev is not None and not isinstance(ev, dict):
            raise InputError(f"{where}: \"eval\" is not a JSON object")
        step = obj.get("step", ev.get("step") if ev else None)
        step = number(step) if step is not None else None
        if step is None or math.isnan(step):
            raise InputError(f"{where}: no numeric \"step\"")
        if ev:
            e = numeric_fields(ev)
            cond = ev.get("conditional")  # a conditional model's class accuracy, intra-class FD
            if isinstance(cond, dict):
                e.update({k: v for k, v in numeric_fields(cond).items()
                          if k in ("class_accuracy", "real_class_accuracy", "intra_fd_mean")})
            e["step"] = step
            while run.evals and run.evals[-1]["step"] >= step:  # resumed: the later line wins
                run.evals.pop()
            run.evals.append(e)
        rec = numeric_fields(obj)
        rec["step"] = step
        if not set(rec) - {"step", "time_s"}:
            continue  # an evaluation line (or an empty one): no training scalars
        t = rec.get("time_s")
        if t is not None and not math.isnan(t):
            if last_time is not None and t < last_time:  # a new process: resumed
                offset += last_time
            last_time = t
            rec["wall"] = offset + t
        # A resumed run may log steps again: the later lines win from that step on.
        while run.train and run.train[-1]["step"] >= step:
            run.train.pop()
        run.train.append(rec)
    if not run.train and not run.evals:
        raise InputError(f"{PROG}: {path}: no metrics lines (none with a value besides step)")
    return run


def set_eval_wall(run):
    """Evaluation lines take the wall time of the step they evaluate (interpolated)."""
    pts = [(r["step"], r["wall"]) for r in run.train if "wall" in r]
    if not pts:
        return False
    if pts[0][0] > 0:
        pts.insert(0, (0.0, 0.0))
    steps = [s for s, _ in pts]
    for e in run.evals:
        i = bisect.bisect_left(steps, e["step"])
        if i == 0:
            e["wall"] = pts[0][1]
        elif i == len(pts):
            e["wall"] = pts[-1][1]
        else:
            (s0, w0), (s1, w1) = pts[i - 1], pts[i]
            e["wall"] = w0 + (w1 - w0) * (e["step"] - s0) / (s1 - s0)
    return True


def moving_average(ys, k):
    """Trailing mean over the last k values, ignoring NaN (a window of only NaN stays NaN)."""
    if k <= 1:
        return ys
    out = []
    for i in range(len(ys)):
        w = [y for y in ys[max(0, i - k + 1) : i + 1] if not math.isnan(y)]
        out.append(sum(w) / len(w) if w else math.nan)
    return out


class Plotter:
    def __init__(self, runs, out, xkey, smooth):
        self.runs = runs
        self.out = out
        self.xkey = xkey  # "step" or "wall"
        self.smooth = smooth
        colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
        self.color = {id(r): colors[i % len(colors)] for i, r in enumerate(runs)}
        self.xscale, self.xlabel = 1.0, "step"
        if xkey == "wall":
            tmax = max([r["wall"] for run in runs for r in run.train + run.evals if "wall" in r],
                       default=0.0)
            unit = "s" if tmax <= 600 else "min" if tmax <= 3 * 3600 else "h"
            self.xscale = {"s": 1.0, "min": 60.0, "h": 3600.0}[unit]
            self.xlabel = f"wall-clock time ({unit})"
        self.written = []

    # -- data
    def series(self, records, key):
        xs, ys = [], []
        for r in records:
            if key in r and self.xkey in r:
                xs.append(r[self.xkey] / self.xscale)
                ys.append(r[key])
        return xs, ys

    # -- drawing
    def line(self, ax, xs, ys, color, style="-", label=None, smooth=False, width=1.2, marker=None):
        if all(math.isnan(y) for y in ys):  # nothing (or only nulls) to draw
            return
        if smooth and self.smooth > 1:
            ax.plot(xs, ys, style, color=color, alpha=0.25, linewidth=0.8)
            ys = moving_average(ys, self.smooth)
        ax.plot(xs, ys, style, color=color, label=label, linewidth=width, marker=marker,
                markersize=3)

    def keyed(self, ax, records_of, keys, smooth=True, marker=None):
        """keys: (key, linestyle, name). One colour per run; the legend names run and key."""
        multi = len(self.runs) > 1
        for run in self.runs:
            for key, style, name in keys:
                xs, ys = self.series(records_of(run), key)
                if multi and len(keys) > 1:
                    label = f"{run.label} {name}"
                else:
                    label = run.label if multi else name
                self.line(ax, xs, ys, self.color[id(run)], style, label, smooth, marker=marker)

    def finish(self, fig, axes, name, title):
        for ax in axes:
            ax.grid(True, alpha=0.3)
            if ax.has_data() and ax.get_legend_handles_labels()[0]:
                ax.legend(fontsize=6, loc="best")
            if ax.get_subplotspec().is_last_row():
                ax.set_xlabel(self.xlabel)
        if len(self.runs) == 1:  # the legend names the curves: the title names the run
            title = f"{self.runs[0].label}: {title}"
        fig.suptitle(title, fontsize=9)
        fig.tight_layout()
        path = os.path.join(self.out, name)
        try:
            fig.savefig(path, dpi=DPI, metadata={"Software": None})
        except OSError as e:
            raise InputError(f"{PROG}: {path}: cannot write ({e.strerror or e})")
        finally:
            plt.close(fig)
        self.written.append(path)
        print(path)

    def has(self, key, evals=False):
        return any(key in r for run in self.runs for r in (run.evals if evals else run.train))

    # -- the plots
    def losses(self):
        if not (self.has("loss_d") or self.has("loss_g")):
            return
        pen = [k for k in PENALTY_KEYS if self.has(k)]
        if pen or self.has("grad_norm"):
            fig = plt.figure(figsize=(FIGSIZE[0], FIGSIZE[1] * 1.25))
            gs = fig.add_gridspec(2, 2, height_ratios=[3, 2])
            top = fig.add_subplot(gs[0, :])
            left, right = fig.add_subplot(gs[1, 0]), fig.add_subplot(gs[1, 1])
            axes = [top, left, right]
        else:
            fig, top = plt.subplots(figsize=FIGSIZE)
            axes = [top]
        self.keyed(top, lambda r: r.train, [("loss_d", "-", "loss_d"), ("loss_g", "--", "loss_g")])
        top.set_ylabel("loss")
        if len(axes) == 3:
            self.keyed(left, lambda r: r.train, [(k, "-", k) for k in pen])
            left.set_title(" / ".join(pen) or "penalty", fontsize=8)
            self.keyed(right, lambda r: r.train, [("grad_norm", "-", "grad_norm")])
            right.set_title("grad_norm (|dD/dx| under the penalty)", fontsize=8)
        self.finish(fig, axes, "losses.png", "losses" + self.smooth_note())

    def d_outputs(self):
        if not (self.has("D_x") or self.has("D_G_z")):
            return
        fig, ax = plt.subplots(figsize=FIGSIZE)
        self.keyed(ax, lambda r: r.train, [("D_x", "-", "D(x)"), ("D_G_z", "--", "D(G(z))")])
        ax.set_ylabel("mean D output (sigmoid for bce, logits else)")
        self.finish(fig, [ax], "d_outputs.png", "discriminator outputs" + self.smooth_note())

    def throughput(self):
        if not self.has("images_per_s"):
            return
        fig, ax = plt.subplots(figsize=FIGSIZE)
        multi = len(self.runs) > 1
        for run in self.runs:
            c = self.color[id(run)]
            xs, ys = self.series(run.train, "images_per_s")
            # images_per_s is the mean since the process started; with time_s it gives the rate
            # over each logging interval (a resume starts a new process: time_s falls).
            ix, iy, prev = [], [], None
            for r in run.train:
                if "images_per_s" not in r or "time_s" not in r or self.xkey not in r:
                    continue
                t, imgs = r["time_s"], r["images_per_s"] * r["time_s"]
                if prev is None or t <= prev[0]:
                    rate = r["images_per_s"]
                else:
                    rate = (imgs - prev[1]) / (t - prev[0])
                prev = (t, imgs)
                ix.append(r[self.xkey] / self.xscale)
                iy.append(rate)
            self.line(ax, ix, iy, c, "-", f"{run.label} interval" if multi else "over the interval")
            self.line(ax, xs, ys, c, "--", f"{run.label} since start" if multi else "since start",
                      width=0.9)
        ax.set_ylabel("images/s")
        ax.set_ylim(bottom=0)
        self.finish(fig, [ax], "throughput.png", "throughput")

    def memory(self):
        if not (self.has("rss_mb") or self.has("pool_mb")):
            return
        fig, ax = plt.subplots(figsize=FIGSIZE)
        self.keyed(ax, lambda r: r.train, [("rss_mb", "-", "rss_mb"), ("pool_mb", "--", "pool_mb")],
                   smooth=False)
        ax.set_ylabel("MiB")
        self.finish(fig, [ax], "memory.png", "memory (resident set, CUDA pool)")

    def per_layer(self, prefixes, name, title, ylabel):
        """G./D. per-layer scalars: one panel per prefix with any data; with one run a colour
        per layer, with several a colour per run."""
        found = {p: sorted({k for run in self.runs for k in run.keys() if k.startswith(p)},
                           key=natural_key) for p in prefixes}
        found = {p: ks for p, ks in found.items() if ks}
        if not found:
            return
        fig, axes = plt.subplots(1, len(found), figsize=FIGSIZE, squeeze=False)
        axes = list(axes[0])
        colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
        styles = ["-", "--", ":", "-."]
        for ax, (p, keys) in zip(axes, found.items()):
            for run in self.runs:
                for i, k in enumerate(keys):
                    xs, ys = self.series(run.train, k)
                    if len(self.runs) == 1:
                        c, label = colors[i % len(colors)], k[len(p):]
                        style = styles[i // len(colors) % len(styles)]
                    else:
                        c, style = self.color[id(run)], "-"
                        label = run.label if i == 0 else None
                    self.line(ax, xs, ys, c, style, label, smooth=True, width=0.9)
            ax.set_title(p + "*", fontsize=8)
        axes[0].set_ylabel(ylabel)
        self.finish(fig, axes, name, title + self.smooth_note())

    def fd(self):
        key = next((k for k in FD_KEYS if self.has(k, evals=True)), None)
        if key is None:
            return
        fig, ax = plt.subplots(figsize=FIGSIZE)
        self.keyed(ax, lambda r: r.evals, [(key, "-", key)], smooth=False, marker="o")
        ax.set_ylabel(f"{key} (lower is better)")
        self.finish(fig, [ax], "fd.png", "Fréchet distance")

    def eval_panels(self):
        panels = []  # (title, keys, band keys)
        if self.has("kid_mean", evals=True):
            panels.append(("KID (lower is better)", [("kid_mean", "-", "kid")], "kid_std"))
        if self.has("is_mean", evals=True):
            panels.append(("IS (higher is better)", [("is_mean", "-", "is")], "is_std"))
        for a, b in (("precision", "recall"), ("density", "coverage")):
            keys = [(k, s, k) for k, s in ((a, "-"), (b, "--")) if self.has(k, evals=True)]
            if keys:
                panels.append((" / ".join(k for k, _, _ in keys), keys, None))
        if not panels:
            return
        rows, cols = (1, len(panels)) if len(panels) <= 2 else (2, 2)
        size = (FIGSIZE[0], FIGSIZE[1] * (1.25 if rows > 1 else 1))
        fig, grid = plt.subplots(rows, cols, figsize=size, squeeze=False)
        axes = [ax for row in grid for ax in row]
        for ax in axes[len(panels):]:
            ax.remove()
        axes = axes[: len(panels)]
        for ax, (title, keys, band) in zip(axes, panels):
            self.keyed(ax, lambda r: r.evals, keys, smooth=False, marker="o")
            if band:
                for run in self.runs:
                    pts = [(r[self.xkey] / self.xscale, r[keys[0][0]], r[band]) for r in run.evals
                           if keys[0][0] in r and band in r and self.xkey in r]
                    if pts:
                        ax.fill_between([p[0] for p in pts], [p[1] - p[2] for p in pts],
                                        [p[1] + p[2] for p in pts], color=self.color[id(run)],
                                        alpha=0.2, linewidth=0)
            ax.set_title(title, fontsize=8)
        if len(panels) == 3:  # nothing under the top right panel
            axes[1].set_xlabel(self.xlabel)
        self.finish(fig, axes, "eval.png", "evaluation")

    def conditional(self):
        panels = [(t, k) for t, k in (("class accuracy (higher is better)", "class_accuracy"),
                                      ("intra-class FD, mean (lower is better)", "intra_fd_mean"))
                  if self.has(k, evals=True)]
        if not panels:
            return
        fig, axes = plt.subplots(1, len(panels), figsize=FIGSIZE, squeeze=False)
        axes = list(axes[0])
        for ax, (title, key) in zip(axes, panels):
            keys = [(key, "-", key)]
            if key == "class_accuracy" and self.has("real_class_accuracy", evals=True):
                keys.append(("real_class_accuracy", ":", "real images"))
            self.keyed(ax, lambda r: r.evals, keys, smooth=False, marker="o")
            ax.set_title(title, fontsize=8)
        self.finish(fig, axes, "conditional.png", "class-conditional evaluation")

    def smooth_note(self):
        return f" (moving average over {self.smooth} points)" if self.smooth > 1 else ""


class OneLineErrors(argparse.ArgumentParser):
    """Usage errors as one line on stderr and exit status 1, like bad input."""

    def error(self, message):
        print(f"{PROG}: {message} (see --help)", file=sys.stderr)
        sys.exit(1)


def natural_key(s):
    """Sorts "D.sigma.10" after "D.sigma.9"."""
    return [(0, int(t), "") if t.isdigit() else (1, 0, t) for t in s.split(".")]


def main(argv=None):
    ap = OneLineErrors(prog=PROG, description=__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="+", metavar="RUN", help="run directory or metrics.jsonl")
    ap.add_argument("--out", required=True, metavar="DIR", help="folder for the PNGs (created)")
    ap.add_argument("--label", action="append", default=[], metavar="NAME",
                    help="legend name of a run, once per run in order (default: its directory)")
    ap.add_argument("--smooth", type=int, default=1, metavar="K",
                    help="moving average window over logged points (default 1: none)")
    ap.add_argument("--x", choices=("step", "wall"), default="step",
                    help="x axis: the step (default) or wall-clock time from time_s")
    a = ap.parse_args(argv)
    if a.smooth < 1:
        ap.error(f"--smooth {a.smooth}: must be at least 1")
    if a.label and len(a.label) != len(a.runs):
        ap.error(f"{len(a.label)} --label for {len(a.runs)} runs: give one per run, or none")
    plt.rcParams.update({"font.size": 7, "axes.titlesize": 8, "legend.fontsize": 6})
    try:
        runs = []
        for i, arg in enumerate(a.runs):
            path = metrics_path(arg)
            runs.append(read_run(path, a.label[i] if a.label else default_label(path)))
        if a.x == "wall":
            for run in runs:
                if not set_eval_wall(run):
                    raise InputError(f"{PROG}: {run.path}: --x wall: no line has time_s")
        try:
            os.makedirs(a.out, exist_ok=True)
        except OSError as e:
            raise InputError(f"{PROG}: {a.out}: cannot create ({e.strerror or e})")
        p = Plotter(runs, a.out, a.x, a.smooth)
        p.losses()
        p.d_outputs()
        p.throughput()
        p.memory()
        p.per_layer(("G.sigma.", "D.sigma."), "spectral_norms.png",
                    "spectral norms (sigma per layer)", "sigma")
        p.per_layer(("G.gamma.", "D.gamma."), "attention.png",
                    "self-attention gamma", "gamma")
        p.fd()
        p.eval_panels()
        p.conditional()
        if not p.written:
            raise InputError(f"{PROG}: {', '.join(r.path for r in runs)}: nothing to plot")
    except InputError as e:
        print(e, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
