#!/usr/bin/env python3
"""torch_gan_bench: the PyTorch baseline of gan_bench (docs/gan_bench.md).

    python3 bench/torch_gan_bench.py                                   # 7 configs x 4 variants x 2 loops
    python3 bench/torch_gan_bench.py --configs sagan:64:64 --variants graph_tf32,graph_tf32_cl
    python3 bench/torch_gan_bench.py --device cpu --configs dcgan:32:4 --width 8 --iters 2
    python3 bench/torch_gan_bench.py --attn                            # the attention core alone
    python3 bench/torch_gan_bench.py --conv gan_bench.err              # each convolution alone

Times one training iteration of the engine's DCGAN and SAGAN written in PyTorch, for the configs,
loops and settings of build/bench/gan_bench, and prints one JSON line per measurement with
gan_bench's field names plus "backend", "torch_version" and "gpu"; bench/ratio_table.py compares
the two. The networks are tools/scripts/torch_check.py's (the modules a gan_train checkpoint
loads into with strict=True, docs/models.md), so both sides train the same architectures with the
same parameter counts: synthetic images in [-1, 1) already on the device, z ~ N(0, 1), each
model's loss and Adam settings as gan_train resolves them.

Loops (--loops):
  anchor  z; fake = G(z) once; D step on D(real) and D(fake.detach()), backward, Adam; G step on
          D(fake) through that same forward of G, backward, Adam. As gan_bench's AnchorStep, D's
          parameters are frozen (requires_grad False) during the G step.
  train   gan_train's iteration (train::Stepper): n_dis D steps, each drawing a fresh z and its
          fake under no_grad; --loss wgan clips D's weights after each step, --loss wgan-gp adds
          lambda (10) x mean((|grad D(x^)| - 1)^2) on interpolates x^ = real + eps (fake - real),
          the gradient taken with torch.autograd.grad(create_graph=True); then a G step on a
          fresh z.
Variants (--variants, or "all"): the math mode, then the execution:
  fp32 / tf32 / bf16   eager; strict float32 (TF32 off in cuBLAS and cuDNN), TF32 on in both, or
                       torch.autocast("cuda", dtype=torch.bfloat16) with strict float32 elsewhere
  graph / graph_tf32 / graph_bf16
                       the whole iteration (forward and backward passes, both Adam steps, fused
                       and capturable) captured once with torch.cuda.graph and replayed: static
                       inputs, three warm-up iterations on a side stream before the capture, as
                       PyTorch's CUDA-graph documentation does
  ..._cl               the same with models and images in torch.channels_last (NHWC, as the
                       engine stores images): fp32_cl, tf32_cl, bf16_cl, graph_cl, graph_tf32_cl,
                       graph_bf16_cl
On the CPU (--device cpu) the eager fp32/tf32 variants run (host clocks); graph and bf16 variants
print a "skipped" line, as gan_bench's graph variants do there.
Timing: --warmup iterations (graph replays for graph variants), then --reps repeats of --iters
iterations between two CUDA events; ms_per_iter is the median of the repeats' means, min_ms and
max_ms the extremes. peak_mem_mb: torch.cuda.max_memory_allocated() over the timed iterations
(reset after warm-up); reserved_mb: torch.cuda.memory_reserved(); on the CPU peak_rss_mb.
torch.backends.cudnn.benchmark is on. Exit status 1 when a measurement failed, 2 on bad options.

--conv FILE...: each convolution geometry named in the files (cuDNN plan-log lines "x (N, H, W, C)
w (K, R, S, C) stride AxB pad AxB dil AxB", gan_bench's stderr with GAN_LOG_KERNELS=1) timed alone
in PyTorch, the counterpart of build/bench/bench_conv: forward, data gradient and filter gradient
(aten.convolution_backward, as autograd calls it) in strict fp32 and TF32, NCHW and channels_last,
cudnn.benchmark on; one JSON line per (geometry, mode, layout, direction) with the median ms of 5
repeats of 10 calls. bench/conv_table.py joins both.
"""
import argparse
import contextlib
import ctypes
import gc
import json
import os
import re
import resource
import sys
import time
import warnings

HERE = os.path.dirname(os.path.abspath(__file__))
# torch_check.py: beside this file once packed for the GPU machine, tools/scripts/ in the tree.
sys.path[:0] = [HERE, os.path.join(HERE, "..", "tools", "scripts")]

import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402

import studiogan_sagan  # noqa: E402  (the ResNet SAGAN: StudioGAN's modules in PyTorch)
import torch_check  # noqa: E402  (the engine's architectures in PyTorch)

CONFIGS = "dcgan:32:64,sagan:32:64,dcgan:64:64,sagan:64:64,sagan:128:64,dcgan:64:256,sagan:64:256"
MATHS = ("fp32", "tf32", "bf16")
VARIANTS = [m for m in MATHS] + ["graph" if m == "fp32" else "graph_" + m for m in MATHS]
VARIANTS += [v + "_cl" for v in VARIANTS]
DEFAULT_VARIANTS = "fp32,tf32,graph,graph_tf32"  # gan_bench's four
ATTN_SHAPES = ((64, 64, 1024), (64, 128, 256), (64, 64, 4096), (16, 64, 4096), (256, 64, 1024))
GP_LAMBDA, WGAN_CLIP = 10.0, 0.01
GRAPH_SIDE_WARMUP = 3  # eager iterations on a side stream before the capture


def parse_variant(v):
    """'graph_tf32_cl' -> (graph, math, channels_last)."""
    graph = v.startswith("graph")
    math = "tf32" if "tf32" in v else "bf16" if "bf16" in v else "fp32"
    return graph, math, v.endswith("_cl")


def parse_config(s):
    try:
        model, img, batch = s.split(":")
        img, batch = int(img), int(batch)
    except ValueError:
        img = batch = None
        model = ""
    if (model not in ("dcgan", "sagan", "sagan-resnet") or img not in (32, 64, 128)
            or batch is None or batch < 1):
        raise ValueError(
            f"--configs: '{s}' is not model:img:batch (model dcgan, sagan or sagan-resnet, img 32, "
            f"64 or 128, batch >= 1)")
    return model, img, batch


def resolve(model, loop, loss, n_dis, img=32):
    """gan_train's defaults (tools/train/options.cpp resolve()): loss, Adam settings, n_dis."""
    if model == "sagan-resnet" and loss != "wgan-gp":  # StudioGAN's SAGAN configurations
        small = img == 32
        return (loss or "hinge", 2e-4 if small else 1e-4, 2e-4 if small else 4e-4,
                (0.5, 0.999) if small else (0.0, 0.999), n_dis or (5 if small else 1))
    sagan = model in ("sagan", "sagan-resnet")
    if loop == "anchor" or not loss:
        loss = "hinge" if sagan else "bce"
    gp = loss == "wgan-gp"
    lr_g = 1e-4 if gp or sagan else 2e-4
    lr_d = 1e-4 if gp else 4e-4 if sagan else 2e-4
    betas = (0.0, 0.9) if gp or sagan else (0.5, 0.999)
    if loop == "anchor" or not n_dis:
        n_dis = 5 if gp and loop == "train" else 1
    return loss, lr_g, lr_d, betas, n_dis


class Labelled(nn.Module):
    """A ResNet SAGAN network with fixed labels (every class in turn), called as the others are:
    G(z (B, nz, 1, 1)), D(x); the labels do not change the work."""

    def __init__(self, net, generator):
        super().__init__()
        self.net, self.generator = net, generator

    def forward(self, x):
        y = torch.arange(x.shape[0], device=x.device) % 10
        return self.net(x.flatten(1) if self.generator else x, y)


def build(model, img, width, channels):
    if model == "sagan-resnet":  # conditional, 10 classes, StudioGAN's attention placement
        g = studiogan_sagan.Generator(img, width, 128, 10, ({32: 2, 64: 3, 128: 4}[img],),
                                      channels)
        d = studiogan_sagan.Discriminator(img, width, 10, (1,), channels)
        return Labelled(g, True), Labelled(d, False), 128
    cfg = dict(model=model, preset="default", image_size=img, channels=channels,
               z_dim=128 if model == "sagan" else 100, ngf=width, ndf=width,
               official_attention=False)
    torch_check.SN = nn.utils.spectral_norm  # the engine's spectral norm: one power step per forward
    return torch_check.generator(cfg), torch_check.discriminator(cfg), cfg["z_dim"]


def d_loss(loss, dr, df):
    if loss == "bce":
        return (F.binary_cross_entropy_with_logits(dr, torch.ones_like(dr))
                + F.binary_cross_entropy_with_logits(df, torch.zeros_like(df)))
    if loss == "hinge":
        return F.relu(1 - dr).mean() + F.relu(1 + df).mean()
    return df.mean() - dr.mean()  # wgan, wgan-gp


def g_loss(loss, out):
    if loss == "bce":
        return F.binary_cross_entropy_with_logits(out, torch.ones_like(out))
    return -out.mean()  # hinge, wgan, wgan-gp


class Iteration:
    """One iteration of the chosen loop on models, optimisers and a real batch the caller owns;
    allocates only inside the call (so it can be captured as a CUDA graph)."""

    def __init__(self, G, D, nz, opt_g, opt_d, real, loop, loss, n_dis, amp, device):
        self.G, self.D, self.nz, self.opt_g, self.opt_d = G, D, nz, opt_g, opt_d
        self.real, self.loop, self.loss, self.n_dis, self.device = real, loop, loss, n_dis, device
        self.amp = amp

    def ctx(self):
        if self.amp:
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def z(self):
        return torch.randn(self.real.shape[0], self.nz, 1, 1, device=self.device)

    def __call__(self):
        (self.anchor if self.loop == "anchor" else self.train)()

    def anchor(self):
        G, D = self.G, self.D
        D.requires_grad_(True)
        G.requires_grad_(True)
        with self.ctx():
            fake = G(self.z())
            ld = d_loss(self.loss, D(self.real).float(), D(fake.detach()).float())
        self.opt_d.zero_grad(set_to_none=True)
        ld.backward()
        self.opt_d.step()
        D.requires_grad_(False)
        with self.ctx():
            lg = g_loss(self.loss, D(fake).float())
        self.opt_g.zero_grad(set_to_none=True)
        lg.backward()
        self.opt_g.step()

    def train(self):
        G, D, real = self.G, self.D, self.real
        D.requires_grad_(True)
        G.requires_grad_(False)
        for _ in range(self.n_dis):
            with torch.no_grad(), self.ctx():
                fake = G(self.z())
            with self.ctx():
                ld = d_loss(self.loss, D(real).float(), D(fake).float())
            if self.loss == "wgan-gp":
                eps = torch.rand(real.shape[0], 1, 1, 1, device=self.device)
                xh = (real + eps * (fake.to(real.dtype) - real)).requires_grad_(True)
                with self.ctx():
                    y = D(xh).float()
                (g,) = torch.autograd.grad(y, xh, torch.ones_like(y), create_graph=True)
                norms = g.float().pow(2).flatten(1).sum(1).sqrt()
                ld = ld + GP_LAMBDA * (norms - 1).pow(2).mean()
            self.opt_d.zero_grad(set_to_none=True)
            ld.backward()
            self.opt_d.step()
            if self.loss == "wgan":
                with torch.no_grad():
                    for p in D.parameters():
                        p.clamp_(-WGAN_CLIP, WGAN_CLIP)
        D.requires_grad_(False)
        G.requires_grad_(True)
        with self.ctx():
            lg = g_loss(self.loss, D(G(self.z())).float())
        self.opt_g.zero_grad(set_to_none=True)
        lg.backward()
        self.opt_g.step()


def set_math(math):
    """TF32 in cuBLAS and cuDNN for tf32 only; fp32 and bf16 keep float32 strict."""
    tf32 = math == "tf32"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # newer releases prefer fp32_precision; same effect
        torch.backends.cuda.matmul.allow_tf32 = tf32
        torch.backends.cudnn.allow_tf32 = tf32


def graph_nodes(graph):
    """Nodes of a captured graph (torch.cuda.CUDAGraph(keep_graph=True)), or None."""
    try:
        raw = graph.raw_cuda_graph()
        major = (torch.version.cuda or "").split(".")[0]
        # The runtime PyTorch loaded (dlopen finds it by its soname), else any.
        for name in (f"libcudart.so.{major}", "libcudart.so"):
            try:
                rt = ctypes.CDLL(name)
                break
            except OSError:
                continue
        else:
            return None
        n = ctypes.c_size_t(0)
        if rt.cudaGraphGetNodes(ctypes.c_void_p(raw), None, ctypes.byref(n)) != 0:
            return None
        return int(n.value)
    except Exception:  # an older release, or no runtime library to ask
        return None


def time_iterations(f, iters, reps, cuda):
    """Median over reps of the mean ms of iters calls of f, and the extremes (as gan_bench)."""
    ms = []
    for _ in range(reps):
        if cuda:
            a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            a.record()
            for _ in range(iters):
                f()
            b.record()
            b.synchronize()
            ms.append(a.elapsed_time(b) / iters)
        else:
            t0 = time.perf_counter()
            for _ in range(iters):
                f()
            ms.append((time.perf_counter() - t0) * 1e3 / iters)
    ms.sort()
    return ms[len(ms) // 2], ms[0], ms[-1]


def bench(model, img, batch, variant, loop, a, device, stamp):
    r = dict(model=model, img=img, batch=batch, variant=variant, loop=loop)
    graph, math, cl = parse_variant(variant)
    cuda = device.type == "cuda"
    if not cuda and (graph or math == "bf16"):
        r["skipped"] = ("CUDA graphs need the GPU" if graph
                        else "bf16 autocast is measured on the GPU only")
        return {**r, **stamp}
    set_math(math)
    if model == "sagan-resnet" and loop == "anchor":
        r["skipped"] = "the anchor loop has no labels: sagan-resnet runs --loops train"
        return {**r, **stamp}
    loss, lr_g, lr_d, betas, n_dis = resolve(model, loop, a.loss, a.n_dis, img)
    torch.manual_seed(a.seed)
    G, D, nz = build(model, img, a.width, a.channels)
    fmt = torch.channels_last if cl else torch.contiguous_format
    G, D = G.to(device, memory_format=fmt), D.to(device, memory_format=fmt)
    G.train(), D.train()
    opt = dict(betas=betas)
    if cuda:
        opt.update(fused=True, capturable=graph)
    opt_g = torch.optim.Adam(G.parameters(), lr_g, **opt)
    opt_d = torch.optim.Adam(D.parameters(), lr_d, **opt)
    real = (torch.rand(batch, a.channels, img, img, device=device) * 2 - 1).contiguous(
        memory_format=fmt)
    it = Iteration(G, D, nz, opt_g, opt_d, real, loop, loss, n_dis, math == "bf16", device)

    t0 = time.perf_counter()
    g = None
    if graph:
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(GRAPH_SIDE_WARMUP):
                it()
        torch.cuda.current_stream().wait_stream(side)
        try:  # keep the cudaGraph_t to count its nodes (releases of the last two years)
            g, keep = torch.cuda.CUDAGraph(keep_graph=True), True
        except TypeError:
            g, keep = torch.cuda.CUDAGraph(), False
        with torch.cuda.graph(g):
            it()
        nodes = graph_nodes(g) if keep else None
        if keep and hasattr(g, "instantiate"):
            g.instantiate()
        run = g.replay
    else:
        run = it
    for _ in range(a.warmup):
        run()
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    warm_s = time.perf_counter() - t0
    med, lo, hi = time_iterations(run, a.iters, a.reps, cuda)
    r.update(ms_per_iter=round(med, 4), img_per_s=round(batch / med * 1e3, 1),
             min_ms=round(lo, 4), max_ms=round(hi, 4), warmup_s=round(warm_s, 1))
    if cuda:
        r["peak_mem_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
        r["reserved_mb"] = round(torch.cuda.memory_reserved() / 2**20, 1)
    else:
        r["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    if a.count_flops:  # one more iteration under PyTorch's FLOP counter (convs, GEMMs, attention)
        from torch.utils.flop_counter import FlopCounterMode
        with FlopCounterMode(display=False) as counter:
            it()
        r["gflop_per_iter"] = round(counter.get_total_flops() / 1e9, 3)
    r["params_G"] = sum(p.numel() for p in G.parameters())
    r["params_D"] = sum(p.numel() for p in D.parameters())
    if graph and nodes:
        r["graph_nodes"] = nodes
    if loop == "train" and (a.loss or a.n_dis):
        r["loss"], r["n_dis"] = loss, n_dis
    if a.width != 64:
        r["width"] = a.width
    if a.channels != 3:
        r["channels"] = a.channels
    return {**r, **stamp}


def attn_bench(B, C, N, reps, stamp):
    """SAGAN's attention core alone, forward + backward of softmax(Q K^T) V (d = C / 8, scale 1):
    the bmm-softmax-bmm of the modules and scaled_dot_product_attention with each backend
    (flash, memory-efficient, math; a backend that refuses the dtype reports its error), in
    strict fp32, TF32 and bf16 (operands in bfloat16); one JSON line per math mode; the shapes of
    build/bench/bench_attention."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    d = C // 8
    for math in ("fp32", "tf32", "bf16"):
        set_math(math)
        dt = torch.bfloat16 if math == "bf16" else torch.float32
        q = torch.randn(B, N, d, device="cuda", dtype=dt, requires_grad=True)
        k = torch.randn(B, N, d, device="cuda", dtype=dt, requires_grad=True)
        v = torch.randn(B, N, C, device="cuda", dtype=dt, requires_grad=True)
        go = torch.randn(B, N, C, device="cuda", dtype=dt)

        def naive():
            torch.bmm(torch.softmax(torch.bmm(q, k.transpose(1, 2)).float(), -1).to(dt), v).backward(go)

        def sdpa(backend):
            def f():
                with sdpa_kernel(backend):
                    o = F.scaled_dot_product_attention(q[:, None], k[:, None], v[:, None], scale=1.0)
                o.backward(go[:, None])
            return f

        out = {}
        for name, f in (("naive", naive), ("sdpa_flash", sdpa(SDPBackend.FLASH_ATTENTION)),
                        ("sdpa_efficient", sdpa(SDPBackend.EFFICIENT_ATTENTION)),
                        ("sdpa_math", sdpa(SDPBackend.MATH))):
            try:
                for _ in range(3):
                    f()
                med, _, _ = time_iterations(f, 1, reps, True)
                out[name] = round(med, 4)
            except Exception as ex:  # e.g. out of memory at N = 4096, or a refused dtype
                out[name] = "error: " + str(ex)[:120]
            torch.cuda.empty_cache()
        print(json.dumps(dict(attn=True, B=B, C=C, N=N, math=math, fwd_bwd_ms=out, **stamp)),
              flush=True)


GEOMETRY_RE = re.compile(r"x \((\d+), (\d+), (\d+), (\d+)\) w \((\d+), (\d+), (\d+), (\d+)\) "
                         r"stride (\d+)x(\d+) pad (\d+)x(\d+) dil (\d+)x(\d+)")


def conv_geometries(files):
    """Unique geometries (as bench_conv names them) in the order first named."""
    seen = {}
    for f in files:
        with open(f) as fh:
            for line in fh:
                m = GEOMETRY_RE.search(line)
                if m:
                    v = [int(x) for x in m.groups()]
                    text = ("x ({}, {}, {}, {}) w ({}, {}, {}, {}) stride {}x{} pad {}x{} dil {}x{}"
                            .format(*v))
                    seen.setdefault(text, v)
    return list(seen.items())


def conv_bench(text, v, stamp):
    n, h, w_, c, k, r, s_, _, sh, sw, ph, pw, dh, dw = v
    out = []
    for math in ("fp32", "tf32"):
        set_math(math)
        for layout in ("nchw", "channels_last"):
            fmt = torch.channels_last if layout == "channels_last" else torch.contiguous_format
            x = torch.randn(n, c, h, w_, device="cuda").to(memory_format=fmt)
            wt = torch.randn(k, c, r, s_, device="cuda").to(memory_format=fmt)
            y = F.conv2d(x, wt, None, (sh, sw), (ph, pw), (dh, dw))
            gy = torch.randn_like(y).to(memory_format=fmt)

            def bwd(mask):
                return torch.ops.aten.convolution_backward(
                    gy, x, wt, None, (sh, sw), (ph, pw), (dh, dw), False, (0, 0), 1, mask)

            fns = (("forward", lambda: F.conv2d(x, wt, None, (sh, sw), (ph, pw), (dh, dw))),
                   ("backward-data", lambda: bwd((True, False, False))),
                   ("backward-filter", lambda: bwd((False, True, False))))
            for direction, f in fns:
                r_ = dict(conv=True, geometry=text, mode=math, layout=layout, direction=direction)
                try:
                    for _ in range(3):
                        f()
                    med, lo, hi = time_iterations(f, 10, 5, True)
                    r_.update(ms=round(med, 5), min_ms=round(lo, 5), max_ms=round(hi, 5))
                except Exception as ex:
                    r_.update(error=f"{type(ex).__name__}: {ex}"[:200])
                out.append({**r_, **stamp})
            del x, wt, y, gy
    return out


def main():
    ap = argparse.ArgumentParser(
        description="torch_gan_bench: the PyTorch baseline of gan_bench (docs/gan_bench.md)")
    ap.add_argument("--configs", default=CONFIGS, help="model:img:batch,... (default: %(default)s)")
    ap.add_argument("--variants", default=DEFAULT_VARIANTS,
                    help=f"comma-separated, or 'all': {', '.join(VARIANTS)} "
                         f"(default: %(default)s)")
    ap.add_argument("--loops", "--loop", default="anchor,train",
                    help="anchor (gan_bench's anchor iteration), train (gan_train's)")
    ap.add_argument("--iters", type=int, default=50, help="iterations per timed repeat")
    ap.add_argument("--reps", type=int, default=5, help="timed repeats (the median is reported)")
    ap.add_argument("--warmup", type=int, default=5, help="warm-up iterations")
    ap.add_argument("--width", type=int, default=64, help="ngf = ndf (SAGAN conv_dim)")
    ap.add_argument("--channels", type=int, default=3, choices=(1, 3), help="image channels")
    ap.add_argument("--seed", type=int, default=0, help="seed of weights, data and noise")
    ap.add_argument("--loss", choices=("bce", "hinge", "wgan", "wgan-gp"),
                    help="train loop: the loss (default: the model's)")
    ap.add_argument("--n-dis", type=int, default=0, help="train loop: D steps per iteration")
    ap.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    ap.add_argument("--count-flops", action="store_true",
                    help="add gflop_per_iter: one iteration's FLOPs by torch.utils.flop_counter "
                         "(after the timing)")
    ap.add_argument("--attn", action="store_true",
                    help="time the attention core alone at bench_attention's shapes instead")
    ap.add_argument("--conv", nargs="+", metavar="FILE",
                    help="time each convolution named in these plan logs alone instead")
    a = ap.parse_args()

    def bad(msg):
        print(f"torch_gan_bench: {msg}", file=sys.stderr)
        sys.exit(2)

    try:
        configs = [parse_config(c) for c in a.configs.split(",") if c]
    except ValueError as e:
        bad(e)
    variants = VARIANTS if a.variants == "all" else [v for v in a.variants.split(",") if v]
    loops = [l for l in a.loops.split(",") if l]
    for v in variants:
        if v not in VARIANTS:
            bad(f"--variants: unknown variant '{v}' ({', '.join(VARIANTS)})")
    for l in loops:
        if l not in ("anchor", "train"):
            bad(f"--loops: unknown loop '{l}' (anchor, train)")
    if not configs or not variants or not loops:
        bad("nothing to measure (empty --configs, --variants or --loops)")
    if a.iters < 1 or a.reps < 1 or a.warmup < 0 or a.width < 8 or a.n_dis < 0:
        bad("--iters and --reps must be >= 1, --warmup and --n-dis >= 0, --width >= 8")
    if a.device == "cuda" and not torch.cuda.is_available():
        bad("--device cuda but no CUDA device is available")
    cuda = a.device != "cpu" and torch.cuda.is_available()
    device = torch.device("cuda" if cuda else "cpu")
    torch.backends.cudnn.benchmark = True

    gpu = torch.cuda.get_device_name() if cuda else "none"
    stamp = dict(backend="torch", torch_version=torch.__version__, gpu=gpu)
    head = dict(engine="pytorch", **stamp, cuda=torch.version.cuda,
                cudnn=torch.backends.cudnn.version() if cuda else None,
                threads=torch.get_num_threads())
    print(json.dumps(head), flush=True)
    if a.attn:
        if not cuda:
            bad("--attn needs the GPU")
        for B, C, N in ATTN_SHAPES:
            attn_bench(B, C, N, 20, stamp)
        return 0
    if a.conv:
        if not cuda:
            bad("--conv needs the GPU")
        geoms = conv_geometries(a.conv)
        if not geoms:
            bad("--conv: no geometry in " + " ".join(a.conv))
        failed = 0
        for text, v in geoms:
            for r_ in conv_bench(text, v, stamp):
                failed += "error" in r_
                print(json.dumps(r_), flush=True)
        return 1 if failed else 0
    failures = 0
    for model, img, batch in configs:
        for v in variants:
            for loop in loops:
                try:
                    r = bench(model, img, batch, v, loop, a, device, stamp)
                except Exception as ex:
                    failures += 1
                    r = dict(model=model, img=img, batch=batch, variant=v, loop=loop,
                             error=f"{type(ex).__name__}: {ex}"[:300], **stamp)
                print(json.dumps(r), flush=True)
                gc.collect()
                if cuda:
                    torch.cuda.synchronize()
                    torch.cuda.empty_cache()
    if failures:
        print(f"torch_gan_bench: {failures} measurement(s) failed", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
