#!/usr/bin/env python3
"""Data-loading baselines for docs/io.md, and the generated JPEG folder they read.

  torch_data_bench.py make DIR --count N [--classes K] [--side 256] [--quality 90]
      writes DIR/class_k/NNNNNN.jpg: N smooth random RGB images (gradients, blobs and noise, so
      that JPEG sizes are like photos'), K class folders (torchvision's ImageFolder layout).
  torch_data_bench.py load DIR --size S --workers W [--batch 64]
      one pass of torch.utils.data.DataLoader(ImageFolder(DIR, Resize(S) + CenterCrop(S) +
      ToTensor()), batch_size, num_workers=W) after a warm-up of 2 batches; prints one JSON line
      {"size", "workers", "images", "seconds", "images_per_s", "first_batch_s"}.
"""
import argparse
import json
import os
import sys
import time


def make(args):
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(args.seed)
    s = args.side
    yy, xx = np.mgrid[0:s, 0:s].astype(np.float32) / s
    for i in range(args.count):
        k = i % args.classes
        d = os.path.join(args.dir, f"class_{k:03d}")
        os.makedirs(d, exist_ok=True)
        c = rng.uniform(0, 255, size=(3, 3)).astype(np.float32)
        img = c[0][None, None, :] * (1 - xx[..., None]) + c[1][None, None, :] * yy[..., None]
        for _ in range(3):  # soft blobs
            cy, cx, r = rng.uniform(0, 1), rng.uniform(0, 1), rng.uniform(0.05, 0.3)
            m = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * r * r))
            img += m[..., None] * rng.uniform(-120, 120, size=3)
        img += rng.normal(0, 12, size=img.shape)
        Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(
            os.path.join(d, f"{i:06d}.jpg"), quality=args.quality)


def load(args):
    import torch
    from torchvision import datasets, transforms

    torch.set_num_threads(1)
    t = transforms.Compose([transforms.Resize(args.size), transforms.CenterCrop(args.size),
                            transforms.ToTensor()])
    ds = datasets.ImageFolder(args.dir, transform=t)
    t0 = time.perf_counter()
    dl = torch.utils.data.DataLoader(ds, batch_size=args.batch, shuffle=True,
                                     num_workers=args.workers, drop_last=False)
    it = iter(dl)
    next(it)
    first = time.perf_counter() - t0
    next(it)
    n, t1 = 0, time.perf_counter()
    for x, _ in it:
        n += x.shape[0]
    dt = time.perf_counter() - t1
    print(json.dumps({"size": args.size, "workers": args.workers, "images": n, "seconds": dt,
                      "images_per_s": n / dt, "first_batch_s": first,
                      "torch": torch.__version__}))


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("make")
    m.add_argument("dir")
    m.add_argument("--count", type=int, required=True)
    m.add_argument("--classes", type=int, default=10)
    m.add_argument("--side", type=int, default=256)
    m.add_argument("--quality", type=int, default=90)
    m.add_argument("--seed", type=int, default=0)
    l = sub.add_parser("load")
    l.add_argument("dir")
    l.add_argument("--size", type=int, required=True)
    l.add_argument("--workers", type=int, default=1)
    l.add_argument("--batch", type=int, default=64)
    args = p.parse_args()
    make(args) if args.cmd == "make" else load(args)


if __name__ == "__main__":
    sys.exit(main())
