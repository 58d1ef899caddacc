#!/usr/bin/env python3
"""Regenerates the seed corpora of the fuzz targets (fuzz/corpus/<target>/), small valid and
near-valid inputs. Standard library only, except: the checkpoint and JPEG seeds need a built
gan_train and gan_sample (a 2-step run of each model at 32 px, width 8; only the discriminator's
tensors are kept, to stay small; one sample of each run as a JPEG).

    python3 fuzz/make_seeds.py [--gan-train build/gan_train]
"""
import argparse, gzip, json, os, shutil, struct, subprocess, tempfile, zlib

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus")


def put(target, name, data):
    d = os.path.join(ROOT, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def idx_images(n, rows, cols):
    pixels = bytes((i * 37) % 256 for i in range(n * rows * cols))
    return struct.pack(">IIII", 0x803, n, rows, cols) + pixels


def png(width, height, channels, bit_depth=8):
    color = {1: 0, 2: 4, 3: 2, 4: 6}[channels]
    raw = b""
    for y in range(height):
        raw += b"\x00" + bytes((x * 31 + y * 17 + c * 5) % 256 for x in range(width) for c in range(channels))
    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, color, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")


def safetensors(entries, metadata=None, checksums=True):
    """entries: [(name, dtype, shape, bytes)] -> the file, as gan::st::write_file writes it."""
    header, offset = {}, 0
    meta = dict(metadata or {})
    if checksums:
        meta["gan.crc32"] = json.dumps({n: "%08x" % zlib.crc32(b) for n, _, _, b in entries}, separators=(",", ":"))
    if meta:
        header["__metadata__"] = meta
    for n, dt, shape, b in entries:
        header[n] = {"dtype": dt, "shape": shape, "data_offsets": [offset, offset + len(b)]}
        offset += len(b)
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    return struct.pack("<Q", len(h)) + h + b"".join(b for _, _, _, b in entries)


def read_safetensors(path):
    with open(path, "rb") as f:
        data = f.read()
    n = struct.unpack("<Q", data[:8])[0]
    header = json.loads(data[8:8 + n])
    buf = data[8 + n:]
    meta = header.pop("__metadata__", {})
    return meta, [(k, v["dtype"], v["shape"], buf[v["data_offsets"][0]:v["data_offsets"][1]]) for k, v in
                  sorted(header.items(), key=lambda kv: kv[1]["data_offsets"][0])]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--gan-train", default=os.path.join(ROOT, "..", "..", "build", "gan_train"))
    a = ap.parse_args()
    shutil.rmtree(ROOT, ignore_errors=True)
    # IDX: images raw and gzip, a labels file, a truncated one.
    put("idx", "images_2x3x3", idx_images(2, 3, 3))
    put("idx", "images_2x3x3.gz", gzip.compress(idx_images(2, 3, 3), mtime=0))
    put("idx", "labels_1", struct.pack(">II", 0x801, 1) + b"\x04")
    put("idx", "truncated", idx_images(4, 5, 5)[:60])
    # CIFAR-10: two records (a real batch has 10000).
    put("cifar10", "two_records", bytes([3]) + bytes(range(256)) * 12 + bytes([9]) + bytes(3072))
    # Images: PNG gray, gray+alpha, RGB, RGBA; JPEG when ImageMagick is there.
    put("image_folder", "gray_4x4.png", png(4, 4, 1))
    put("image_folder", "ga_3x5.png", png(3, 5, 2))
    put("image_folder", "rgb_7x3.png", png(7, 3, 3))
    put("image_folder", "rgba_2x2.png", png(2, 2, 4))
    # safetensors: with checksums and metadata, without (as PyTorch writes), scalar and empty.
    f32 = struct.pack("<6f", 1, 2, 3, 4, 5, 6)
    put("safetensors", "two_tensors", safetensors([("w", "F32", [2, 3], f32), ("step", "I64", [1], struct.pack("<q", 7))], {"format": "x"}))
    put("safetensors", "no_checksums", safetensors([("a", "U8", [2], b"\x01\x02")], checksums=False))
    put("safetensors", "scalar_and_empty", safetensors([("s", "F64", [], struct.pack("<d", 0.5)), ("e", "F32", [0, 3], b"")]))
    # Checkpoints: the discriminators of real 2-step runs (names, shapes and layouts as gan_train
    # writes them), and a small one with a wrong shape.
    put("checkpoint", "wrong_shape", safetensors([("D.0.weight", "F32", [2, 3], f32)]))
    if os.path.exists(a.gan_train):
        gan_sample = os.path.join(os.path.dirname(a.gan_train), "gan_sample")
        with tempfile.TemporaryDirectory() as t:
            for model, channels in (("dcgan", "1"), ("sagan", "3")):
                out = os.path.join(t, model)
                subprocess.run([a.gan_train, "--device", "cpu", "--model", model, "--image-size", "32", "--channels", channels,
                                "--ngf", "8", "--ndf", "8", "--batch-size", "2", "--steps", "2", "--progress", "0",
                                "--out", out], check=True, stdout=subprocess.DEVNULL)
                _, entries = read_safetensors(os.path.join(out, "checkpoint.safetensors"))
                put("checkpoint", model + "_D", safetensors([e for e in entries if e[0].startswith("D.")]))
                # JPEG seeds (stb's baseline encoder): a 1-sample grid of each run, gray and RGB.
                jpg = os.path.join(t, model + ".jpg")
                subprocess.run([gan_sample, out, "-n", "1", "--device", "cpu", "--out", jpg], check=True, stdout=subprocess.DEVNULL)
                with open(jpg, "rb") as f:
                    put("image_folder", "sample_%sch.jpg" % channels, f.read())
    else:
        print("make_seeds: no gan_train at %s: checkpoint seeds from real runs skipped" % a.gan_train)
    for t in sorted(os.listdir(ROOT)):
        files = os.listdir(os.path.join(ROOT, t))
        print("%s: %d seeds, %d bytes" % (t, len(files), sum(os.path.getsize(os.path.join(ROOT, t, x)) for x in files)))


if __name__ == "__main__":
    main()
