#!/usr/bin/env python3
"""The PyTorch reference trainer: the engine's SAGAN, DCGAN and wide DCGAN (the module definitions
of tools/scripts/torch_check.py, docs/models.md) trained the way gan_train trains them, so that
the same FID scores a model trained by PyTorch and one trained by the engine (docs/metrics.md).

    python3 bench/torch_gan_train.py --model sagan --data /usr/share/datasets/fashion-mnist \
        --epochs 5 --out runs/torch_sagan
    build/gan_eval --images runs/torch_sagan/samples --fid ...

As gan_train (tools/train/options.cpp resolve(), tools/train/stepper.cpp):
  - losses: SAGAN hinge, DCGAN BCE with logits; wgan-gp (gradient penalty lambda 10 on
    interpolates, n_dis 5, Adam 1e-4 (0, 0.9)) and wgan (clip 0.01) on request;
  - Adam: SAGAN TTUR 1e-4 / 4e-4 (0, 0.9), DCGAN 2e-4 (0.5, 0.999);
  - an iteration: n_dis D steps, each on the next real batch and G(z) drawn without gradient;
    then one G step on a fresh z through G again;
  - data: the training images in the engine's order: Fisher-Yates per epoch driven by the
    engine's SplitMix64 stream (tools/io/data.cpp, docs/io.md), batches of B, the last partial
    batch dropped; fitted to the image size by PIL's bicubic resize (the engine's "resize" fit
    equals it, tests/fixtures/pil_bicubic.json) and scaled to [-1, 1];
  - weights: PyTorch's default initialisation from --seed, or the engine's initial weights with
    --init CHECKPOINT (a gan_train checkpoint, e.g. of a 0-step run, or a gan_sample
    --export-torch file), so both sides start from the same point.
Noise comes from torch's generator (the engine draws Philox on the device): the two sides see
different z, the same images in the same order.

Writes to --out: train.jsonl (losses every --log-every steps, images/s), G.pt and D.pt (state
dicts), grid.png (64 samples) and samples/NNNNN.png (--num-samples images of G at the end, in
[0, 255], for gan_eval --images). Runs on the GPU when there is one (TF32 off unless --tf32).
"""
import argparse
import gzip
import json
import math
import os
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

here = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(here, "..", "tools", "scripts"))
sys.path.insert(0, here)  # packed for the GPU machine: torch_check.py beside this file
import torch_check  # noqa: E402

M64 = (1 << 64) - 1
GAMMA = 0x9E3779B97F4A7C15
SHUFFLE_SALT = 0x53485546464C4531  # "SHUFFLE1"


def mix64(z):
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M64
    return z ^ (z >> 31)


class SplitMix64:
    def __init__(self, state):
        self.state = state & M64

    def next(self):
        self.state = (self.state + GAMMA) & M64
        return mix64(self.state)

    def below(self, n):
        """Uniform in [0, n): Lemire's multiply-shift with rejection, as the engine draws it."""
        m = self.next() * n
        low = m & M64
        if low < n:
            threshold = ((1 << 64) - n) % n
            while low < threshold:
                m = self.next() * n
                low = m & M64
        return m >> 64


def permutation(count, seed, epoch):
    """The engine's data order for an epoch (data::Loader::permutation)."""
    order = list(range(count))
    rng = SplitMix64(mix64(mix64((seed ^ SHUFFLE_SALT) & M64) ^ epoch))
    for i in range(count - 1, 0, -1):
        j = rng.below(i + 1)
        order[i], order[j] = order[j], order[i]
    return order


def read_idx_images(path):
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
        raw = f.read()
    magic, n, h, w = (int.from_bytes(raw[i:i + 4], "big") for i in range(0, 16, 4))
    if magic != 2051:
        sys.exit(f"torch_gan_train: {path}: not an IDX image file (magic {magic})")
    return torch.frombuffer(bytearray(raw[16:16 + n * h * w]), dtype=torch.uint8).view(n, h, w)


def load_images(data_dir, size):
    """The training images fitted to size x size, as float32 (N, 1, S, S) in [-1, 1]."""
    for name in ("train-images-idx3-ubyte.gz", "train-images-idx3-ubyte"):
        path = os.path.join(data_dir, name)
        if os.path.exists(path):
            break
    else:
        sys.exit(f"torch_gan_train: no train-images-idx3-ubyte[.gz] in {data_dir}")
    im = read_idx_images(path)
    if im.shape[1] != size:
        try:
            from PIL import Image
            out = torch.empty(im.shape[0], size, size, dtype=torch.uint8)
            for i in range(im.shape[0]):
                r = Image.fromarray(im[i].numpy()).resize((size, size), Image.BICUBIC)
                out[i] = torch.frombuffer(bytearray(r.tobytes()), dtype=torch.uint8).view(size, size)
            im = out
        except ImportError:  # without Pillow: torch's antialiased bicubic (close, not equal)
            x = F.interpolate(im[:, None].float(), size=(size, size), mode="bicubic",
                              antialias=True, align_corners=False)
            im = x.round().clamp(0, 255).to(torch.uint8)[:, 0]
    return im[:, None].float() / 127.5 - 1.0


def load_init(path, cfg, g, d):
    from safetensors.torch import load_file
    sd = load_file(path)
    if any(".parametrizations." in k for k in sd):
        sys.exit("torch_gan_train: --init: export with --sn-naming legacy (nn.utils.spectral_norm)")
    g.load_state_dict({k[2:]: v for k, v in sd.items() if k.startswith("G.")}, strict=True)
    d.load_state_dict({k[2:]: v for k, v in sd.items() if k.startswith("D.")}, strict=True)


def write_png(path, img):
    """img (H, W) or (H, W, 3) uint8 tensor -> PNG (zlib; no Pillow needed)."""
    import struct
    import zlib
    h, w = img.shape[:2]
    c = 1 if img.dim() == 2 else img.shape[2]
    rows = img.reshape(h, w * c).numpy()
    raw = b"".join(b"\x00" + rows[y].tobytes() for y in range(h))

    def chunk(tag, data):
        body = tag + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body) & 0xFFFFFFFF)

    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 0 if c == 1 else 2, 0, 0, 0))
    png += chunk(b"IDAT", zlib.compress(raw, 6)) + chunk(b"IEND", b"")
    with open(path, "wb") as f:
        f.write(png)


def to_uint8(x):
    """(N, C, H, W) in [-1, 1] -> (N, H, W[, C]) uint8 as the engine writes images."""
    y = ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).cpu()
    return y[:, 0] if y.shape[1] == 1 else y.permute(0, 2, 3, 1)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", choices=["sagan", "dcgan"], default="sagan")
    ap.add_argument("--preset", choices=["default", "wide"], default="default")
    ap.add_argument("--official-attention", action="store_true")
    ap.add_argument("--image-size", type=int, choices=[32, 64, 128], default=64)
    ap.add_argument("--ngf", type=int, default=64)
    ap.add_argument("--ndf", type=int, default=64)
    ap.add_argument("--z-dim", type=int, default=0, help="0: SAGAN 128, DCGAN 100")
    ap.add_argument("--data", default="/usr/share/datasets/fashion-mnist")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--steps", type=int, default=0, help="> 0: this many G steps instead")
    ap.add_argument("--loss", choices=["default", "bce", "hinge", "wgan", "wgan-gp"], default="default")
    ap.add_argument("--n-dis", type=int, default=0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--init", help="start from this checkpoint's G and D (PyTorch names)")
    ap.add_argument("--num-samples", type=int, default=10000)
    ap.add_argument("--log-every", type=int, default=50)
    ap.add_argument("--tf32", action="store_true")
    ap.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    ap.add_argument("--out", required=True)
    a = ap.parse_args()

    dev = torch.device("cuda" if a.device == "cuda" or (a.device == "auto" and torch.cuda.is_available()) else "cpu")
    torch.backends.cuda.matmul.allow_tf32 = a.tf32
    torch.backends.cudnn.allow_tf32 = a.tf32
    torch.backends.cudnn.benchmark = True
    sagan = a.model == "sagan"
    loss = a.loss if a.loss != "default" else ("hinge" if sagan else "bce")
    gp = loss == "wgan-gp"
    lr_g = 1e-4 if gp or sagan else 2e-4
    lr_d = 1e-4 if gp else 4e-4 if sagan else 2e-4
    betas = (0.0, 0.9) if gp or sagan else (0.5, 0.999)
    n_dis = a.n_dis or (5 if gp else 1)
    cfg = dict(model=a.model, preset=a.preset, image_size=a.image_size, channels=1,
               z_dim=a.z_dim or (128 if sagan else 100), ngf=a.ngf, ndf=a.ndf,
               official_attention=a.official_attention)
    torch.manual_seed(a.seed)
    g, d = torch_check.generator(cfg), torch_check.discriminator(cfg)
    if a.init:
        load_init(a.init, cfg, g, d)
    g, d = g.to(dev).train(), d.to(dev).train()
    opt_g = torch.optim.Adam(g.parameters(), lr=lr_g, betas=betas)
    opt_d = torch.optim.Adam(d.parameters(), lr=lr_d, betas=betas)
    wide = a.model == "dcgan" and a.preset == "wide"

    def noise(n):
        z = torch.randn(n, cfg["z_dim"], device=dev)
        return z if wide else z.view(n, -1, 1, 1)

    images = load_images(a.data, a.image_size)
    count, B = images.shape[0], a.batch_size
    per_epoch = count // B
    if per_epoch == 0:
        sys.exit(f"torch_gan_train: {count} images are fewer than a batch of {B}")
    steps = a.steps or a.epochs * per_epoch // n_dis
    os.makedirs(os.path.join(a.out, "samples"), exist_ok=True)
    log = open(os.path.join(a.out, "train.jsonl"), "w")
    print(json.dumps(dict(config=cfg, loss=loss, n_dis=n_dis, lr_g=lr_g, lr_d=lr_d, betas=betas,
                          batch=B, steps=steps, device=str(dev), torch=torch.__version__)), file=log, flush=True)

    batch_index, epoch, order = 0, 0, permutation(count, a.seed, 0)

    def next_real():
        nonlocal batch_index, epoch, order
        if batch_index == per_epoch:
            batch_index, epoch = 0, epoch + 1
            order = permutation(count, a.seed, epoch)
        idx = torch.tensor(order[batch_index * B:(batch_index + 1) * B])
        batch_index += 1
        return images[idx].to(dev, non_blocking=True)

    t0, seen = time.time(), 0
    for step in range(1, steps + 1):
        for _ in range(n_dis):
            real = next_real()
            with torch.no_grad():
                fake = g(noise(B))
            dr, df = d(real).view(-1), d(fake).view(-1)
            if loss == "hinge":
                loss_d = F.relu(1 - dr).mean() + F.relu(1 + df).mean()
            elif loss == "bce":
                loss_d = (F.binary_cross_entropy_with_logits(dr, torch.ones_like(dr))
                          + F.binary_cross_entropy_with_logits(df, torch.zeros_like(df)))
            else:
                loss_d = df.mean() - dr.mean()
                if gp:
                    eps = torch.rand(B, 1, 1, 1, device=dev)
                    xh = (real + eps * (fake - real)).requires_grad_(True)
                    dh = d(xh)
                    grad = torch.autograd.grad(dh, xh, torch.ones_like(dh), create_graph=True)[0]
                    loss_d = loss_d + 10 * ((grad.flatten(1).norm(dim=1) - 1) ** 2).mean()
            opt_d.zero_grad(set_to_none=True)
            loss_d.backward()
            opt_d.step()
            if loss == "wgan":
                with torch.no_grad():
                    for p in d.parameters():
                        p.clamp_(-0.01, 0.01)
            seen += B
        for p in d.parameters():
            p.requires_grad_(False)
        out = d(g(noise(B))).view(-1)
        loss_g = F.binary_cross_entropy_with_logits(out, torch.ones_like(out)) if loss == "bce" else -out.mean()
        opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
        opt_g.step()
        for p in d.parameters():
            p.requires_grad_(True)
        if step % a.log_every == 0 or step == steps:
            if dev.type == "cuda":
                torch.cuda.synchronize()
            el = time.time() - t0
            print(json.dumps(dict(step=step, epoch=epoch, loss_d=loss_d.item(), loss_g=loss_g.item(),
                                  images_per_s=seen / max(el, 1e-9), seconds=el)), file=log, flush=True)

    g.eval()
    torch.save(g.state_dict(), os.path.join(a.out, "G.pt"))
    torch.save(d.state_dict(), os.path.join(a.out, "D.pt"))
    with torch.no_grad():
        grid = to_uint8(g(noise(64)))
        s = a.image_size
        tiles = grid.view(8, 8, s, s).permute(0, 2, 1, 3).reshape(8 * s, 8 * s)
        write_png(os.path.join(a.out, "grid.png"), tiles)
        n = 0
        while n < a.num_samples:
            k = min(256, a.num_samples - n)
            for im in to_uint8(g(noise(k))):
                write_png(os.path.join(a.out, "samples", f"{n:05d}.png"), im)
                n += 1
    print(json.dumps(dict(done=True, steps=steps, seconds=time.time() - t0,
                          samples=a.num_samples)), file=log, flush=True)
    print(f"torch_gan_train: {steps} steps in {time.time() - t0:.1f} s -> {a.out}")


if __name__ == "__main__":
    main()
