#!/usr/bin/env python3
"""Loads a gan_train checkpoint into PyTorch's equivalent modules and checks that they generate
the same images as the engine (for the GPU machine, which has PyTorch and safetensors).

    build/gan_sample RUN --dump /tmp/dump.safetensors -n 16
    python3 tools/scripts/torch_check.py RUN/checkpoint.safetensors /tmp/dump.safetensors

G and D both load with load_state_dict(strict=True). The file may also be a `gan_sample
--export-torch` export: spectral norm in either of PyTorch's naming schemes (weight_orig/_u/_v of
torch.nn.utils.spectral_norm, or parametrizations.weight.original/.0._u/.0._v of
torch.nn.utils.parametrizations.spectral_norm), chosen from the names in the file.

The module definitions are the engine's SAGAN and DCGAN (the pytorch/examples DCGAN and the
DCGAN-style SAGAN of the popular PyTorch port), the wide DCGAN preset and the official attention
variant (docs/models.md); bench/torch_gan_bench.py imports them for the PyTorch baseline of
gan_bench (safetensors is needed only by main()). Prints one JSON line; exits 1 when the largest
difference exceeds the tolerance."""
import json
import sys

import torch
import torch.nn as nn

SN = nn.utils.spectral_norm  # or nn.utils.parametrizations.spectral_norm (main() picks)


class SelfAttn(nn.Module):
    def __init__(self, c, sn=True):
        super().__init__()
        w = SN if sn else (lambda m: m)
        self.q = w(nn.Conv2d(c, c // 8, 1)); self.k = w(nn.Conv2d(c, c // 8, 1)); self.v = w(nn.Conv2d(c, c, 1))
        self.gamma = nn.Parameter(torch.zeros(1))

    def forward(self, x):
        b, c, h, w_ = x.shape; n = h * w_
        q = self.q(x).view(b, -1, n).permute(0, 2, 1)
        k = self.k(x).view(b, -1, n)
        a = torch.softmax(torch.bmm(q, k), dim=-1)
        v = self.v(x).view(b, -1, n)
        return self.gamma * torch.bmm(v, a.permute(0, 2, 1)).view(b, c, h, w_) + x


class OfficialAttn(nn.Module):
    """Pooled keys/values (N/4), C/2 values, output projection, no biases."""
    def __init__(self, c, sn=True):
        super().__init__()
        w = SN if sn else (lambda m: m)
        self.q = w(nn.Conv2d(c, c // 8, 1, bias=False)); self.k = w(nn.Conv2d(c, c // 8, 1, bias=False))
        self.v = w(nn.Conv2d(c, c // 2, 1, bias=False)); self.o = w(nn.Conv2d(c // 2, c, 1, bias=False))
        self.gamma = nn.Parameter(torch.zeros(1))

    def forward(self, x):
        b, c, h, w_ = x.shape; n = h * w_
        q = self.q(x).view(b, -1, n).permute(0, 2, 1)
        k = nn.functional.max_pool2d(self.k(x), 2).view(b, -1, n // 4)
        v = nn.functional.max_pool2d(self.v(x), 2).view(b, -1, n // 4)
        a = torch.softmax(torch.bmm(q, k), dim=-1)
        o = torch.bmm(v, a.permute(0, 2, 1)).view(b, c // 2, h, w_)
        return self.gamma * self.o(o) + x


def generator(cfg):
    img, nc, nz = cfg["image_size"], cfg["channels"], cfg["z_dim"]
    nup = {32: 3, 64: 4, 128: 5}[img]
    if cfg["model"] == "dcgan" and cfg["preset"] == "wide":
        g = [nn.Linear(nz, 1024 * 16), nn.Unflatten(1, (1024, 4, 4)), nn.ReLU()]
        c = 1024
        for _ in range(3):
            g += [nn.ConvTranspose2d(c, c // 2, 4, 2, 1, bias=False), nn.BatchNorm2d(c // 2), nn.ReLU()]
            c //= 2
        return nn.Sequential(*g, nn.ConvTranspose2d(c, nc, 4, 2, 1, bias=False), nn.Tanh())
    if cfg["model"] == "dcgan":
        ngf = cfg["ngf"]
        g = [nn.ConvTranspose2d(nz, ngf * 2 ** (nup - 1), 4, 1, 0, bias=False), nn.BatchNorm2d(ngf * 2 ** (nup - 1)), nn.ReLU()]
        for i in range(nup - 1, 0, -1):
            g += [nn.ConvTranspose2d(ngf * 2 ** i, ngf * 2 ** (i - 1), 4, 2, 1, bias=False), nn.BatchNorm2d(ngf * 2 ** (i - 1)), nn.ReLU()]
        return nn.Sequential(*g, nn.ConvTranspose2d(ngf, nc, 4, 2, 1, bias=False), nn.Tanh())
    attn = OfficialAttn if cfg["official_attention"] else SelfAttn
    c = cfg["ngf"] * 2 ** (nup - 1)
    g = [SN(nn.ConvTranspose2d(nz, c, 4)), nn.BatchNorm2d(c), nn.ReLU()]
    for i in range(nup - 1):
        g += [SN(nn.ConvTranspose2d(c, c // 2, 4, 2, 1)), nn.BatchNorm2d(c // 2), nn.ReLU()]
        c //= 2
        if i >= nup - 3:
            g += [attn(c)]
    return nn.Sequential(*g, nn.ConvTranspose2d(c, nc, 4, 2, 1), nn.Tanh())


def discriminator(cfg):
    """models/gan.cpp's discriminators."""
    img, nc = cfg["image_size"], cfg["channels"]
    nup = {32: 3, 64: 4, 128: 5}[img]
    if cfg["model"] == "dcgan" and cfg["preset"] == "wide":
        d, ch = [], nc
        for i in range(4):
            out = 128 << i
            d += [nn.Conv2d(ch, out, 4, 2, 1, bias=False)] + ([nn.BatchNorm2d(out)] if i else [])
            d += [nn.LeakyReLU(0.2)]
            ch = out
        return nn.Sequential(*d, nn.Flatten(), nn.Linear(1024 * 16, 1))
    if cfg["model"] == "dcgan":
        ch = cfg["ndf"]
        d = [nn.Conv2d(nc, ch, 4, 2, 1, bias=False), nn.LeakyReLU(0.2)]
        for _ in range(nup - 1):
            d += [nn.Conv2d(ch, ch * 2, 4, 2, 1, bias=False), nn.BatchNorm2d(ch * 2), nn.LeakyReLU(0.2)]
            ch *= 2
        return nn.Sequential(*d, nn.Conv2d(ch, 1, 4, 1, 0, bias=False))
    attn = OfficialAttn if cfg["official_attention"] else SelfAttn
    ch = cfg["ndf"]
    d = [SN(nn.Conv2d(nc, ch, 4, 2, 1)), nn.LeakyReLU(0.1)]
    for i in range(nup - 1):
        d += [SN(nn.Conv2d(ch, ch * 2, 4, 2, 1)), nn.LeakyReLU(0.1)]
        ch *= 2
        if i >= nup - 3:
            d += [attn(ch)]
    return nn.Sequential(*d, nn.Conv2d(ch, 1, 4, 1, 0))


def main():
    from safetensors import safe_open
    from safetensors.torch import load_file

    ckpt, dump = sys.argv[1], sys.argv[2]
    tol = float(sys.argv[3]) if len(sys.argv) > 3 else 1e-4
    with safe_open(ckpt, "pt") as f:
        cfg = json.loads(f.metadata()["config"])
    sd = load_file(ckpt)
    global SN
    naming = "parametrize" if any(".parametrizations." in k for k in sd) else "legacy"
    if naming == "parametrize":
        SN = nn.utils.parametrizations.spectral_norm
    g = generator(cfg)
    g.load_state_dict({k[2:]: v for k, v in sd.items() if k.startswith("G.")}, strict=True)
    g.eval()
    if any(k.startswith("D.") for k in sd):
        discriminator(cfg).load_state_dict({k[2:]: v for k, v in sd.items() if k.startswith("D.")},
                                           strict=True)
    d = load_file(dump)
    z, ours = d["z"].double(), d["images"].double()  # ours (N, H, W, C)
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    g = g.double()
    with torch.no_grad():
        inp = z if (cfg["model"] == "dcgan" and cfg["preset"] == "wide") else z.view(z.shape[0], -1, 1, 1)
        theirs = g(inp).permute(0, 2, 3, 1)
    err = (theirs - ours).abs().max().item()
    print(json.dumps({"checkpoint": ckpt, "model": cfg["model"], "preset": cfg["preset"],
                      "sn_naming": naming,
                      "images": list(ours.shape), "max_abs_diff": err, "tolerance": tol}))
    sys.exit(0 if err <= tol else 1)


if __name__ == "__main__":
    main()
