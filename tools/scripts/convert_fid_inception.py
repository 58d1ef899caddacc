#!/usr/bin/env python3
"""Converts pytorch-fid's published FID InceptionV3 weights to the safetensors file
`gan_eval --inception FILE` reads (models/inception.h). Needs PyTorch and safetensors (run it
where PyTorch is installed; gan_eval itself does not need them).

    python3 tools/scripts/convert_fid_inception.py --pth pt_inception-2015-12-05-6726825d.pth --out fid_inception.safetensors
    python3 tools/scripts/convert_fid_inception.py --download --out fid_inception.safetensors
    python3 tools/scripts/convert_fid_inception.py --formula --out formula.safetensors

--pth: the file pytorch-fid downloads (pytorch_fid.inception.FID_WEIGHTS_URL,
https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/pt_inception-2015-12-05-6726825d.pth).
--download: fetch it with torch.hub (cached in ~/.cache/torch). --formula: the deterministic test
weights of tools/scripts/fixtures/make_inception_fixture.py instead (for checking the pipeline without
the real weights; its numbers mean nothing).
The state dict keeps torchvision's names and PyTorch's layouts; BatchNorm num_batches_tracked
entries that the 2015 weights lack are added as 0; fc (1008 classes) is kept.
"""
import argparse
import os
import sys

FID_WEIGHTS_URL = ("https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/"
                   "pt_inception-2015-12-05-6726825d.pth")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--pth", help="pytorch-fid's pt_inception-2015-12-05-6726825d.pth")
    src.add_argument("--download", action="store_true", help="download it with torch.hub")
    src.add_argument("--formula", action="store_true", help="formula test weights instead")
    ap.add_argument("--out", required=True, help="output .safetensors")
    a = ap.parse_args()
    try:
        import torch
        from safetensors.torch import save_file
    except ImportError as e:
        sys.exit(f"convert_fid_inception: needs PyTorch and safetensors ({e})")

    if a.formula:
        sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures"))
        import make_inception_fixture as fx
        sd = fx.fid_inception_formula().state_dict()
        source = "formula (tools/scripts/fixtures/make_inception_fixture.py)"
    else:
        if a.pth:
            if not os.path.exists(a.pth):
                sys.exit(f"convert_fid_inception: {a.pth}: no such file")
            sd = torch.load(a.pth, map_location="cpu")
            source = os.path.basename(a.pth)
        else:
            sd = torch.hub.load_state_dict_from_url(FID_WEIGHTS_URL, map_location="cpu")
            source = FID_WEIGHTS_URL
        if not isinstance(sd, dict) or "Mixed_7c.branch_pool.conv.weight" not in sd:
            sys.exit(f"convert_fid_inception: {source}: not the FID InceptionV3 state dict")
    out = {}
    for name, t in sd.items():
        out[name] = t.detach().contiguous().clone()
        if name.endswith(".bn.running_var"):
            nbt = name[: -len("running_var")] + "num_batches_tracked"
            if nbt not in sd:
                out[nbt] = torch.zeros((), dtype=torch.int64)
    save_file(out, a.out, metadata={"source": source, "format": "pytorch-fid FID InceptionV3"})
    print(f"convert_fid_inception: {len(out)} tensors from {source} -> {a.out}")


if __name__ == "__main__":
    main()
