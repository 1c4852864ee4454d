#!/usr/bin/env python3
"""fuzz/make_seeds.py IVAE: writes the seed corpora fuzz/corpus/<target>/.

    /usr/bin/python3 fuzz/make_seeds.py ./ivae

The seeds are committed; this script is how they were made (run it again
after a format change). Each seed is small (a few KB at most): a fuzzer
mutates small files fastest. Uses ./ivae (the tiny model), Pillow (JPEG,
progressive JPEG, BMP) and, for the Wan seed, test/wan_ref.py (PyTorch).
"""
import io
import json
import os
import struct
import subprocess
import sys
import zlib

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
CORPUS = os.path.join(HERE, "corpus")
SEP = b"\n--FRAME--\n"  # fuzz_frames.c splits its input here


def put(target, name, data):
    d = os.path.join(CORPUS, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def st_parse(raw):
    (n,) = struct.unpack("<Q", raw[:8])
    return json.loads(raw[8:8 + n]), raw[8 + n:]


def st_make(header, data):
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    return struct.pack("<Q", len(h)) + h + data


def png(w, h, seed, gray=False):
    ch = 1 if gray else 3
    raw = b"".join(b"\x00" + bytes((x * 7 + y * 13 + seed * 31 + c * 50) % 256 for x in range(w) for c in range(ch))
                   for y in range(h))

    def chunk(t, d):
        return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 0 if gray else 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def y4m(w, h, frames, tags):
    cw, chh = ((w, h) if "C444" in tags else ((w + 1) // 2, (h + 1) // 2))
    out = ("YUV4MPEG2 W%d H%d F25:1 Ip A1:1 %s\n" % (w, h, tags)).encode()
    for t in range(frames):
        out += b"FRAME\n" + bytes((16 + 9 * k + t) % 256 for k in range(w * h)) + bytes([128 + t] * (2 * cw * chh))
    return out


def main():
    ivae = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, "ivae"))
    tmp = os.path.join(HERE, "out", "seeds")
    os.makedirs(tmp, exist_ok=True)

    # --- safetensors: the smallest ivae model, with and without its checksum
    model = os.path.join(tmp, "m.safetensors")
    subprocess.check_call([ivae, "init", "--base-ch", "2", "--ch-mult", "1", "--n-res", "1", "--z-ch", "1",
                           "--seed", "1", model], stdout=subprocess.DEVNULL)
    raw = open(model, "rb").read()
    put("safetensors", "model_crc", raw)
    header, data = st_parse(raw)
    header["__metadata__"].pop("data_crc32")
    put("safetensors", "model", st_make(header, data))
    put("safetensors", "batch", st_make({"x.0": {"dtype": "F16", "shape": [3, 1, 2, 2], "data_offsets": [0, 24]},
                                         "eps.0": {"dtype": "BF16", "shape": [1, 1, 1, 1], "data_offsets": [24, 26]}},
                                        bytes(range(26))))

    # --- checkpoint: that model with optimizer state and training metadata
    meta = dict(header["__metadata__"])
    meta.update({"step": "3", "total_steps": "10", "rng": "12345678901234567", "lr_scale": "0.5", "n_hist": "3",
                 "opt.lr": "0.0005", "opt.warmup": "2", "opt.min-lr-frac": "0.1", "opt.weight-decay": "0",
                 "opt.agc": "0.05", "opt.clip-factor": "2", "opt.spike-factor": "3", "opt.guard-every": "1",
                 "opt.crop": "8", "opt.clips": "0", "opt.clip-frames": "17", "opt.images": "1", "opt.w-image": "1",
                 "opt.w-video": "1", "opt.beta": "0.001", "opt.w-opl": "0", "opt.ref-shape": "17x64x64",
                 "opt.seed": "1"})
    tensors = [(k, v) for k, v in header.items() if k != "__metadata__"]
    hdr, blob = {"__metadata__": meta}, bytearray()
    for prefix in ("", "optim.m.", "optim.v."):
        for name, t in tensors:
            b, e = t["data_offsets"]
            part = data[b:e] if not prefix else bytes(e - b)
            hdr[prefix + name] = {"dtype": "F32", "shape": t["shape"], "data_offsets": [len(blob), len(blob) + len(part)]}
            blob += part
    for name in ("optim.hist.loss", "optim.hist.gnorm", "optim.hist.act"):
        part = struct.pack("<64f", *([0.5, 0.25, 0.125] + [0.0] * 61))
        hdr[name] = {"dtype": "F32", "shape": [64], "data_offsets": [len(blob), len(blob) + len(part)]}
        blob += part
    put("checkpoint", "ckpt", st_make(hdr, bytes(blob)))
    hdr["__metadata__"]["data_crc32"] = "%08x" % zlib.crc32(bytes(blob))
    put("checkpoint", "ckpt_crc", st_make(hdr, bytes(blob)))

    # --- Y4M: 4:2:0 and 4:4:4, odd sizes, full range
    put("y4m", "420", y4m(6, 4, 2, "C420jpeg"))
    put("y4m", "444", y4m(3, 3, 1, "C444 XCOLORRANGE=FULL"))
    put("y4m", "mpeg2", y4m(5, 3, 2, "C420mpeg2"))

    # --- images: PNG (RGB, gray), JPEG (baseline, progressive, gray), BMP
    put("image", "rgb.png", png(8, 6, 1))
    put("image", "gray.png", png(5, 4, 2, gray=True))
    try:
        from PIL import Image
        im = Image.frombytes("RGB", (16, 8), bytes((k * 37) % 256 for k in range(16 * 8 * 3)))
        for name, kw in (("base.jpg", {}), ("prog.jpg", {"progressive": True}), ("sub.jpg", {"subsampling": 2})):
            b = io.BytesIO()
            im.save(b, "JPEG", quality=80, **kw)
            put("image", name, b.getvalue())
        b = io.BytesIO()
        im.convert("L").save(b, "JPEG", quality=50)
        put("image", "gray.jpg", b.getvalue())
        b = io.BytesIO()
        im.save(b, "BMP")
        put("image", "rgb.bmp", b.getvalue())
        jpg = open(os.path.join(CORPUS, "image", "base.jpg"), "rb").read()
    except ImportError:
        print("no Pillow: PNG seeds only")
        jpg = png(8, 6, 3)

    # a baseline JPEG with a restart interval of one block and no RST marker:
    # stb ends the scan after the first block (the rest was uninitialised
    # memory before media.c zeroed stb's allocations; MSan's regression seed)
    def seg(m, body):
        return b"\xff" + bytes([m]) + struct.pack(">H", len(body) + 2) + body
    bits = "010" * 4 + "1111"
    put("image", "restart_cut.jpg", b"\xff\xd8" + seg(0xDB, b"\x00" + bytes([16] * 64))
        + seg(0xC0, bytes([8]) + struct.pack(">HH", 16, 16) + bytes([1, 1, 0x11, 0]))
        + seg(0xC4, b"\x00" + bytes([1] + [0] * 15) + bytes([1])) + seg(0xC4, b"\x10" + bytes([1] + [0] * 15) + b"\x00")
        + seg(0xDD, struct.pack(">H", 1)) + seg(0xDA, bytes([1, 1, 0x00, 0, 63, 0]))
        + bytes(int(bits[i:i + 8], 2) for i in range(0, len(bits), 8)) + b"\xff\xd9")

    # restart markers that do reset the DC sums, and a progressive DC scan
    # with a point transform: the paths of media.c's entropy pre-pass
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "test"))
    from bad_input import jpeg_bytes
    put("image", "restart_rst.jpg", jpeg_bytes(32, 16, cat=6, q=4, dri=2, ncomp=3))
    put("image", "prog_dc.jpg", jpeg_bytes(16, 16, sof=0xC2, scans=[([1], 0, 0, 0, 2)]))

    # --- frames: 2 and 3 frames of one size, one of another
    put("frames", "two", png(8, 6, 1) + SEP + png(8, 6, 2))
    put("frames", "three", png(4, 4, 1) + SEP + jpg + SEP + png(4, 4, 3))

    # --- options: NUL-separated arguments of ivae train
    for i, args in enumerate([
            ["--steps", "10", "--crop", "16", "--clips", "1", "--images", "2", "--lr", "1e-3"],
            ["--minutes", "0.5", "--ref-shape", "17x64x64", "--guard-every", "5", "--ckpt-every", "10"],
            ["--seed", "18446744073709551615", "--w-image", "0.7", "--device", "cl", "--cl-mode", "fast"],
            ["--eval-size", "32", "--log-every", "1", "--spike-factor", "3", "--min-lr-frac", "0.5"]]):
        put("options", "args%d" % i, b"\0".join(a.encode() for a in args))

    # --- wan: a Wan 2.1 VAE of width 2 and 1 latent channel, both layouts
    try:
        sys.path.insert(0, os.path.join(ROOT, "test"))
        import wan_ref
        p = os.path.join(tmp, "wan.safetensors")
        wan_ref.save_model(p, wan_ref.init_params(2, 1, 1), 2, 1, "official")
        # as F16, half the bytes (the loader converts F16 too)
        header, data = st_parse(open(p, "rb").read())
        out, blob = {"__metadata__": header.pop("__metadata__")}, bytearray()
        for name, t in header.items():
            b, e = t["data_offsets"]
            vals = struct.unpack("<%df" % ((e - b) // 4), data[b:e])
            part = struct.pack("<%de" % len(vals), *vals)
            out[name] = {"dtype": "F16", "shape": t["shape"], "data_offsets": [len(blob), len(blob) + len(part)]}
            blob += part
        put("wan", "official_f16", st_make(out, bytes(blob)))
    except ImportError as ex:
        print("no PyTorch (%s): no Wan seed" % ex)


if __name__ == "__main__":
    main()
