#!/usr/bin/env python3
"""Moves ResNet SAGAN weights between StudioGAN's checkpoint files and the engine's checkpoints.
Python's standard library only: no PyTorch, no NumPy.

    # StudioGAN -> engine: a checkpoint gan_sample, gan_eval and load_gan read
    tools/scripts/studiogan_convert.py import --G "model=G-best-weights-step=8000.pth" \
        --D "model=D-best-weights-step=8000.pth" [--G-ema "model=G_ema-best-...pth"] \
        --out runs/imported/checkpoint.safetensors [--class-names "airplane,automobile,..."]
    # engine -> StudioGAN: model=G-current-weights-step=N.pth, model=D-..., model=G_ema-...
    tools/scripts/studiogan_convert.py export runs/cond --out-dir studiogan_ckpt/

import reads StudioGAN's saved files (torch.save of {"state_dict": ..., "optimizer": ..., ...}) in
both of PyTorch's formats, the zip archive (PyTorch >= 1.6) and the older sequential one, without
running their pickles (only the few globals a state dict needs are resolved; anything else becomes
an inert placeholder). It takes the current conditional batch-norm naming (bn.gain / bn.bias,
spectral-normalised linear layers, weight (C, K)) and the older one (bn.embed0 / bn.embed1,
spectral-normalised embeddings, weight (K, C)): an older weight is transposed and its
spectral-norm vectors u and v swap (sigma(W) = sigma(W^T), u^T W v unchanged). A DataParallel
"module." prefix is dropped. The model's configuration (image size, widths, z, classes, attention
placement, channels) is read off the tensors' names and shapes; the engine then loads every tensor
strictly (every name present with its shape). The output holds the models only (format "gan-engine
model v1"): sampling, evaluation and export, not --resume (StudioGAN's Adam state is not carried).

export writes StudioGAN's three files from a gan_train run (G_ema when the run kept one), in
PyTorch's zip format, each {"state_dict": OrderedDict}; D's also carries StudioGAN's bookkeeping
keys (seed, run_name, step, epoch, best_step, best_fid, ...) and G's and D's torch.optim.Adam
state_dict with the run's hyper-parameters and moments (none from an imported model file), so
StudioGAN's loader accepts them for evaluation and for training on. Strict load_state_dict into
StudioGAN's modules is what the names and shapes guarantee (tests/test_resnet.cpp,
docs/models.md). PyTorch 1.13's safe loader (torch.load(weights_only=True)) has no float opcode, so
there the files with an optimizer state load with weights_only=False (checked with 1.13: strict
load_state_dict into the mirror's modules, Adam's load_state_dict).
"""
import argparse
import collections
import io
import json
import os
import pickle
import struct
import sys
import zipfile

ENGINE_MODEL_FORMAT = "gan-engine model v1"
ENGINE_RUN_FORMAT = "gan-engine checkpoint v1"

# PyTorch storage classes -> (safetensors dtype, bytes per element)
STORAGES = {
    "FloatStorage": ("F32", 4), "DoubleStorage": ("F64", 8), "HalfStorage": ("F16", 2),
    "BFloat16Storage": ("BF16", 2), "LongStorage": ("I64", 8), "IntStorage": ("I32", 4),
    "ShortStorage": ("I16", 2), "CharStorage": ("I8", 1), "ByteStorage": ("U8", 1),
    "BoolStorage": ("BOOL", 1),
}
DTYPE_SIZE = {v[0]: v[1] for v in STORAGES.values()}
DTYPE_STORAGE = {v[0]: k for k, v in STORAGES.items()}


class ConvertError(Exception):
    pass


# ---------------------------------------------------------------------------------------------
# Tensors: dtype, shape and C-contiguous little-endian bytes.

class Tensor:
    def __init__(self, dtype, shape, data):
        self.dtype, self.shape, self.data = dtype, list(shape), bytes(data)

    def numel(self):
        n = 1
        for s in self.shape:
            n *= s
        return n

    def transposed(self):
        """The 2-D transpose."""
        if len(self.shape) != 2:
            raise ConvertError("transpose of a %d-D tensor" % len(self.shape))
        r, c = self.shape
        e = DTYPE_SIZE[self.dtype]
        src = memoryview(self.data)
        out = bytearray(len(self.data))
        for i in range(r):
            for j in range(c):
                out[(j * r + i) * e:(j * r + i + 1) * e] = src[(i * c + j) * e:(i * c + j + 1) * e]
        return Tensor(self.dtype, [c, r], out)


class _Storage:
    def __init__(self, dtype, elem, fetch, numel):
        self.dtype, self.elem, self._fetch, self.numel = dtype, elem, fetch, numel
        self._bytes = None

    def bytes(self):
        if self._bytes is None:
            self._bytes = self._fetch()
        return self._bytes


class _StorageType:
    def __init__(self, name):
        if name not in STORAGES:
            raise ConvertError("unsupported storage type torch.%s" % name)
        self.dtype, self.elem = STORAGES[name]


class _Opaque:
    """Stands for any global a state dict does not need (numpy scalars, config objects): takes
    every argument and state, runs nothing."""

    def __new__(cls, *args, **kwargs):
        return object.__new__(cls)

    def __init__(self, *args, **kwargs):
        pass

    def __setstate__(self, state):
        pass

    def __call__(self, *args, **kwargs):
        return _Opaque()


class _Lazy:
    """A tensor whose storage may not be read yet (the older format stores data after the pickle)."""

    def __init__(self, storage, offset, size, stride):
        self.storage, self.offset, self.size, self.stride = storage, offset, list(size), list(stride)

    def tensor(self):
        size, stride, offset, e = self.size, self.stride, self.offset, self.storage.elem
        n = 1
        for s in size:
            n *= s
        raw = self.storage.bytes()
        contiguous, expect = True, 1
        for s, st in zip(reversed(size), reversed(stride)):
            if s != 1 and st != expect:
                contiguous = False
            expect *= s
        if contiguous:
            data = raw[offset * e:(offset + n) * e]
        else:  # gather element by element (rare in state dicts)
            out = bytearray(n * e)
            idx = [0] * len(size)
            for k in range(n):
                src = offset + sum(i * st for i, st in zip(idx, stride))
                out[k * e:(k + 1) * e] = raw[src * e:(src + 1) * e]
                for d in reversed(range(len(size))):
                    idx[d] += 1
                    if idx[d] < size[d]:
                        break
                    idx[d] = 0
            data = bytes(out)
        if len(data) != n * e:
            raise ConvertError("a tensor extends past its storage (truncated file?)")
        return Tensor(self.storage.dtype, size, data)


def _rebuild_tensor(storage, offset, size, stride, *rest):
    if not isinstance(storage, _Storage):
        raise ConvertError("a tensor without storage")
    return _Lazy(storage, offset, size, stride)


def _rebuild_parameter(data, *rest):
    return data


class _Unpickler(pickle.Unpickler):
    def __init__(self, f, storage_reader):
        super().__init__(f)
        self._read_storage = storage_reader
        self._storages = {}

    def find_class(self, module, name):
        if (module, name) == ("collections", "OrderedDict"):
            return collections.OrderedDict
        if module == "torch._utils" and name == "_rebuild_tensor_v2":
            return _rebuild_tensor
        if module == "torch._utils" and name == "_rebuild_parameter":
            return _rebuild_parameter
        if module == "torch" and name.endswith("Storage"):
            return _StorageType(name)
        return _Opaque

    def persistent_load(self, pid):
        if not isinstance(pid, tuple) or not pid or pid[0] not in ("storage", b"storage"):
            raise ConvertError("unknown persistent id in the pickle")
        stype, key, numel = pid[1], str(pid[2]), pid[4]
        if not isinstance(stype, _StorageType):
            raise ConvertError("unsupported storage in the pickle")
        if key not in self._storages:
            self._storages[key] = _Storage(stype.dtype, stype.elem,
                                           lambda k=key, n=numel, e=stype.elem:
                                           self._read_storage(k, n * e), numel)
        return self._storages[key]


LEGACY_MAGIC = 0x1950A86A20F9469CFC6C


def read_torch_file(path):
    """torch.load of a state-dict file without PyTorch: the zip format or the older one."""
    try:
        if zipfile.is_zipfile(path):
            z = zipfile.ZipFile(path)
            names = z.namelist()
            pkl = [n for n in names if n.endswith("/data.pkl") or n == "data.pkl"]
            if not pkl:
                raise ConvertError("%s: a zip file without data.pkl (not a PyTorch file)" % path)
            root = pkl[0][:-len("data.pkl")]

            def read_zip(key, nbytes):
                data = z.read(root + "data/" + key)
                if len(data) < nbytes:
                    raise ConvertError("%s: storage %s is truncated" % (path, key))
                return data

            with z.open(pkl[0]) as f:
                obj = _Unpickler(io.BytesIO(f.read()), read_zip).load()
            return _force(obj)  # while the zip is open
        with open(path, "rb") as f:
            blob = f.read()
    except (OSError, zipfile.BadZipFile) as e:
        raise ConvertError("%s: %s" % (path, e))
    f = io.BytesIO(blob)

    def plain(fh):
        return _Unpickler(fh, lambda k, n: b"").load()

    try:
        magic = plain(f)
    except Exception:
        raise ConvertError("%s: not a PyTorch file (neither a zip archive nor a pickle)" % path)
    if magic != LEGACY_MAGIC:
        raise ConvertError("%s: not a PyTorch file (wrong magic number)" % path)
    plain(f)  # protocol version
    plain(f)  # sys info
    storages = {}
    up = _Unpickler(f, lambda key, nbytes: storages[key])
    try:
        obj = up.load()
        keys = plain(f)
    except ConvertError:
        raise
    except Exception as e:
        raise ConvertError("%s: corrupt pickle (%s)" % (path, e))
    for key in keys:
        head = f.read(8)
        if len(head) != 8:
            raise ConvertError("%s: truncated storage data" % path)
        (numel,) = struct.unpack("<q", head)
        st = up._storages.get(str(key))
        elem = st.elem if st else 1
        data = f.read(numel * elem)
        if len(data) != numel * elem:
            raise ConvertError("%s: truncated storage data" % path)
        storages[str(key)] = data
    return _force(obj)


def _force(obj):
    """Replaces the lazily rebuilt tensors by their data, once every storage can be read."""
    if isinstance(obj, _Lazy):
        return obj.tensor()
    if isinstance(obj, dict):
        for k in list(obj.keys()):
            obj[k] = _force(obj[k])
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            obj[i] = _force(v)
    elif isinstance(obj, tuple):
        return tuple(_force(v) for v in obj)
    return obj


# ---------------------------------------------------------------------------------------------
# safetensors

def read_safetensors(path):
    try:
        with open(path, "rb") as f:
            blob = f.read()
    except OSError as e:
        raise ConvertError("%s: %s" % (path, e))
    if len(blob) < 8:
        raise ConvertError("%s: not a safetensors file (too short)" % path)
    (n,) = struct.unpack("<Q", blob[:8])
    if 8 + n > len(blob):
        raise ConvertError("%s: not a safetensors file (header past the end)" % path)
    try:
        header = json.loads(blob[8:8 + n].decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        raise ConvertError("%s: corrupt safetensors header (%s)" % (path, e))
    meta = header.pop("__metadata__", {}) or {}
    base = 8 + n
    tensors = collections.OrderedDict()
    for name, h in header.items():
        b, e = h["data_offsets"]
        t = Tensor(h["dtype"], h["shape"], blob[base + b:base + e])
        if len(t.data) != t.numel() * DTYPE_SIZE[t.dtype]:
            raise ConvertError("%s: tensor %s is truncated" % (path, name))
        tensors[name] = t
    return tensors, meta


def write_safetensors(path, tensors, meta):
    header, off = {}, 0
    for name, t in tensors.items():
        header[name] = {"dtype": t.dtype, "shape": t.shape, "data_offsets": [off, off + len(t.data)]}
        off += len(t.data)
    header["__metadata__"] = meta
    h = json.dumps(header, separators=(",", ":")).encode("utf-8")
    h += b" " * ((8 - len(h) % 8) % 8)
    _atomic_write(path, lambda f: (f.write(struct.pack("<Q", len(h))), f.write(h),
                                   [f.write(t.data) for t in tensors.values()]))


def _atomic_write(path, fill):
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        fill(f)
    os.replace(tmp, path)


# ---------------------------------------------------------------------------------------------
# StudioGAN -> engine

def state_dict_of(path):
    obj = read_torch_file(path)
    sd = obj.get("state_dict", obj) if isinstance(obj, dict) else None
    if not isinstance(sd, dict) or not sd:
        raise ConvertError("%s: holds no state_dict" % path)
    out = collections.OrderedDict()
    for k, v in sd.items():
        if not isinstance(v, Tensor):
            continue
        if k.startswith("module."):
            k = k[len("module."):]
        out[k] = v
    return out, obj


def upgrade_cbn(sd):
    """The older cBN naming (bn.embed0 / bn.embed1: embeddings (K, C)) -> the current one (bn.gain /
    bn.bias: linear layers (C, K)); the returned count says how many layers were renamed."""
    out, renamed = collections.OrderedDict(), 0
    for k, v in sd.items():
        for old, new in ((".embed0.", ".gain."), (".embed1.", ".bias.")):
            if old in k:
                k = k.replace(old, new)
                if k.endswith(".weight_orig") or k.endswith(".weight"):
                    v = v.transposed()
                    renamed += 1
                elif k.endswith(".weight_u"):
                    k = k[:-len("_u")] + "_v"
                elif k.endswith(".weight_v"):
                    k = k[:-len("_v")] + "_u"
        out[k] = v
    return out, renamed


def _blocks(sd, leaf):
    found = set()
    for k in sd:
        parts = k.split(".")
        if len(parts) > 3 and parts[0] == "blocks" and parts[2] == "0" and parts[3] == leaf:
            found.add(int(parts[1]))
    return sorted(found)


def _attn_after(sd):
    """StudioGAN's blocks list holds each attention as its own entry (blocks.N.0.conv1x1_theta):
    the attention after the k-th residual block (1-based), as the engine's --g-attn counts."""
    res = _blocks(sd, "conv2d1")
    at = [sum(1 for b in res if b < a) for a in _blocks(sd, "conv1x1_theta")]
    return at or [0]


def _need(sd, key, what):
    if key not in sd:
        raise ConvertError("%s: no tensor %s (not StudioGAN's spectral-normalised ResNet SAGAN)"
                           % (what, key))
    return sd[key]


def infer_config(g, d):
    lin = _need(g, "linear0.weight_orig", "G")
    out = _need(g, "conv2d5.weight_orig", "G")
    gb = _blocks(g, "conv2d1")
    size = {3: 32, 4: 64, 5: 128}.get(len(gb))
    if size is None:
        raise ConvertError("G has %d blocks; the ResNet SAGAN has 3, 4 or 5 (32, 64, 128 px)"
                           % len(gb))
    db = _blocks(d, "conv2d1")
    if len(db) != {32: 4, 64: 5, 128: 6}[size]:
        raise ConvertError("D has %d blocks; a %d px ResNet SAGAN's has %d"
                           % (len(db), size, {32: 4, 64: 5, 128: 6}[size]))
    ngf = out.shape[1] // 4 if size == 32 else out.shape[1]
    d0 = _need(d, "blocks.0.0.conv2d1.weight_orig", "D").shape[0]
    ndf = d0 // 2 if size == 32 else d0
    classes = 0
    gain = g.get("blocks.0.0.bn1.gain.weight_orig")
    emb = d.get("embedding.weight_orig")
    if gain is not None:
        classes = gain.shape[1]
        if emb is None or emb.shape[0] != classes:
            raise ConvertError("G is conditional (%d classes) but D has no matching projection "
                               "embedding" % classes)
    elif emb is not None:
        raise ConvertError("D has a projection embedding but G no conditional batch norm")
    return {
        "model": "sagan-resnet", "preset": "default", "image_size": size,
        "channels": out.shape[0], "ngf": ngf, "ndf": ndf, "z_dim": lin.shape[1],
        "official_attention": False, "num_classes": classes,
        "g_attn": _attn_after(g), "d_attn": _attn_after(d), "g_init": "ortho", "d_init": "ortho",
    }


def cmd_import(a):
    g, _ = state_dict_of(a.G)
    d, dobj = state_dict_of(a.D)
    g, renamed = upgrade_cbn(g)
    tensors = collections.OrderedDict()
    ema = None
    if a.G_ema:
        ema, _ = state_dict_of(a.G_ema)
        ema, _ = upgrade_cbn(ema)
        if sorted(ema) != sorted(g):
            raise ConvertError("%s: G_ema's tensors differ from G's" % a.G_ema)
    config = infer_config(g, d)
    for prefix, sd in (("G.", g), ("D.", d), ("G_ema.", ema)):
        if sd is None:
            continue
        for k, v in sd.items():
            tensors[prefix + k] = v
    if a.class_names:
        names = [s.strip() for s in a.class_names.split(",")]
        if len(names) != config["num_classes"]:
            raise ConvertError("--class-names lists %d names for %d classes"
                               % (len(names), config["num_classes"]))
        config["class_names"] = names
    step = dobj.get("step") if isinstance(dobj, dict) else None
    meta = {"format": ENGINE_MODEL_FORMAT, "config": json.dumps(config),
            "source": "StudioGAN: " + ", ".join(os.path.basename(p) for p in
                                                 (a.G, a.D, a.G_ema) if p)}
    if isinstance(step, int):
        meta["step"] = str(step)
    write_safetensors(a.out, tensors, meta)
    print("studiogan_convert: %s: %d px %s ResNet SAGAN (ngf %d, ndf %d, z %d, attention G %s D %s)"
          "%s%s, %d tensors" % (
              a.out, config["image_size"],
              "conditional (%d classes)" % config["num_classes"] if config["num_classes"]
              else "unconditional", config["ngf"], config["ndf"], config["z_dim"],
              config["g_attn"], config["d_attn"],
              ", older cBN naming converted (%d layers)" % renamed if renamed else "",
              ", with G_ema" if ema is not None else "", len(tensors)))


# ---------------------------------------------------------------------------------------------
# engine -> StudioGAN: a minimal pickler for what torch.load(weights_only=True) accepts

class _Pickle:
    def __init__(self):
        self.b = bytearray(b"\x80\x02")  # PROTO 2
        self.storages = []

    def glob(self, module, name):
        self.b += b"c" + module.encode() + b"\n" + name.encode() + b"\n"

    def obj(self, v):
        b = self.b
        if v is None:
            b += b"N"
        elif v is True:
            b += b"\x88"
        elif v is False:
            b += b"\x89"
        elif isinstance(v, int):
            if 0 <= v < 256:
                b += b"K" + bytes([v])
            elif -2 ** 31 <= v < 2 ** 31:
                b += b"J" + struct.pack("<i", v)
            else:
                raw = v.to_bytes((v.bit_length() + 8) // 8, "little", signed=True)
                b += b"\x8a" + bytes([len(raw)]) + raw
        elif isinstance(v, float):
            b += b"G" + struct.pack(">d", v)
        elif isinstance(v, str):
            s = v.encode("utf-8")
            b += b"X" + struct.pack("<I", len(s)) + s
        elif isinstance(v, tuple):
            b += b"("
            for x in v:
                self.obj(x)
            b += b"t"
        elif isinstance(v, list):
            b += b"]("
            for x in v:
                self.obj(x)
            b += b"e"
        elif isinstance(v, dict):
            if isinstance(v, collections.OrderedDict):  # OrderedDict(), then its items
                self.glob("collections", "OrderedDict")
                b += b")R("
            else:
                b += b"}("
            for k, x in v.items():
                self.obj(k)
                self.obj(x)
            b += b"u"
        elif isinstance(v, Tensor):
            key = str(len(self.storages))
            self.storages.append(v.data)
            stride, s = [], 1
            for dim in reversed(v.shape):
                stride.insert(0, s)
                s *= dim
            self.glob("torch._utils", "_rebuild_tensor_v2")
            b += b"("
            b += b"("
            self.obj("storage")
            self.glob("torch", DTYPE_STORAGE[v.dtype])
            self.obj(key)
            self.obj("cpu")
            self.obj(v.numel())
            b += b"tQ"  # TUPLE, BINPERSID
            self.obj(0)
            self.obj(tuple(v.shape))
            self.obj(tuple(stride))
            self.obj(False)
            self.obj(collections.OrderedDict())
            b += b"tR"
        else:
            raise ConvertError("cannot pickle %r" % type(v))

    def finish(self):
        self.b += b"."
        return bytes(self.b)


def write_torch_file(path, obj):
    p = _Pickle()
    p.obj(obj)
    data = p.finish()
    root = os.path.splitext(os.path.basename(path))[0].replace("=", "_") or "archive"

    def fill(f):
        with zipfile.ZipFile(f, "w", zipfile.ZIP_STORED) as z:
            z.writestr(root + "/data.pkl", data)
            z.writestr(root + "/byteorder", "little")
            for i, s in enumerate(p.storages):
                z.writestr(root + "/data/%d" % i, s)
            z.writestr(root + "/version", "3\n")
    _atomic_write(path, fill)


def _adam_state(names, tensors, prefix, lr, betas):
    """torch.optim.Adam's state_dict over the parameters `names` (model.parameters() order: the
    state_dict's order without buffers), with the run's moments where the checkpoint has them."""
    state = {}
    steps = tensors.get(prefix + "step")
    if steps is not None:
        (step,) = struct.unpack("<q", steps.data[:8])
        for i, n in enumerate(names):
            m, v = tensors.get(prefix + "exp_avg." + n), tensors.get(prefix + "exp_avg_sq." + n)
            if m is None or v is None:
                raise ConvertError("no Adam moments for %s (%s)" % (n, prefix))
            state[i] = {"step": Tensor("F32", [], struct.pack("<f", float(step))),
                        "exp_avg": m, "exp_avg_sq": v}
    return {"state": state, "param_groups": [{
        "lr": lr, "betas": tuple(betas), "eps": 1e-8, "weight_decay": 0.0, "amsgrad": False,
        "maximize": False, "foreach": None, "capturable": False, "differentiable": False,
        "fused": None, "params": list(range(len(names)))}]}


BUFFER_SUFFIXES = ("running_mean", "running_var", "num_batches_tracked", "weight_u", "weight_v")


def torch_parameter_order(sd):
    """The parameters of a state_dict in model.parameters() order, the indices of a torch.optim
    state_dict: modules in order, a module's own parameters before its children's; within a
    module, spectral norm re-registers the weight last (bias, then weight_orig)."""
    groups = collections.OrderedDict()
    for k in sd:
        if k.endswith(BUFFER_SUFFIXES):
            continue
        mod, _, leaf = k.rpartition(".")
        groups.setdefault(mod, []).append(leaf)
    out = []
    for mod, leaves in groups.items():
        leaves = [x for x in leaves if x != "weight_orig"] + [x for x in leaves if x == "weight_orig"]
        out.extend((mod + "." if mod else "") + x for x in leaves)
    return out


def cmd_export(a):
    path = a.run
    if os.path.isdir(path):
        path = os.path.join(path, "checkpoint.safetensors")
    tensors, meta = read_safetensors(path)
    if meta.get("format") not in (ENGINE_RUN_FORMAT, ENGINE_MODEL_FORMAT):
        raise ConvertError("%s: not an engine checkpoint (format '%s')" % (path,
                                                                          meta.get("format", "")))
    try:
        config = json.loads(meta.get("config", ""))
    except ValueError as e:
        raise ConvertError("%s: corrupt configuration (%s)" % (path, e))
    if config.get("model") != "sagan-resnet":
        raise ConvertError("%s: a %s model; StudioGAN's layout is the ResNet SAGAN's "
                           "(--model sagan-resnet)" % (path, config.get("model")))
    step = int(meta.get("step", "0"))
    parts = {}
    for prefix in ("G.", "D.", "G_ema."):
        parts[prefix] = collections.OrderedDict(
            (k[len(prefix):], v) for k, v in tensors.items() if k.startswith(prefix))
    os.makedirs(a.out_dir, exist_ok=True)
    lr = {"G": config.get("lr_g", 2e-4), "D": config.get("lr_d", 2e-4)}
    betas = [config.get("beta1", 0.5), config.get("beta2", 0.999)]

    written = []
    for model, prefix in (("G", "G."), ("D", "D."), ("G_ema", "G_ema.")):
        sd = parts[prefix]
        if not sd:
            if model == "G_ema":
                continue
            raise ConvertError("%s: no %s tensors" % (path, model))
        states = {"state_dict": sd}
        if model != "G_ema":
            names = torch_parameter_order(sd)
            states["optimizer"] = _adam_state(names, tensors, "opt_%s." % model.lower(),
                                              lr[model], betas)
        if model == "D":
            states.update({"seed": int(config.get("seed", 0)), "run_name": os.path.basename(
                os.path.dirname(os.path.abspath(path))), "step": step, "epoch": 0,
                "topk": "initialize", "aa_p": 0.0, "best_step": step, "best_fid": None,
                "best_fid_ckpt": os.path.abspath(a.out_dir), "lecam_emas": {}})
        out = os.path.join(a.out_dir, "model=%s-current-weights-step=%d.pth" % (model, step))
        write_torch_file(out, states)
        written.append(out)
    print("studiogan_convert: wrote " + ", ".join(written))


def main(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    im = sub.add_parser("import", help="StudioGAN .pth files -> an engine checkpoint")
    im.add_argument("--G", required=True, help="model=G-...pth")
    im.add_argument("--D", required=True, help="model=D-...pth")
    im.add_argument("--G-ema", dest="G_ema", help="model=G_ema-...pth")
    im.add_argument("--out", required=True, help="the engine checkpoint (.safetensors) to write")
    im.add_argument("--class-names", help="comma-separated class names, in label order")
    ex = sub.add_parser("export", help="an engine run -> StudioGAN .pth files")
    ex.add_argument("run", help="a run directory or its checkpoint.safetensors")
    ex.add_argument("--out-dir", required=True, help="where StudioGAN's files go")
    a = ap.parse_args(argv)
    try:
        if a.cmd == "import":
            if os.path.exists(a.out) and not a.out.endswith(".safetensors"):
                raise ConvertError("--out %s exists and is not a .safetensors file" % a.out)
            cmd_import(a)
        else:
            cmd_export(a)
    except ConvertError as e:
        print("studiogan_convert: %s" % e, file=sys.stderr)
        return 1
    except Exception as e:  # a malformed file: one line, not a traceback
        print("studiogan_convert: malformed input (%s: %s)" % (type(e).__name__, e),
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
