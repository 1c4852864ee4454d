#!/usr/bin/env python3
"""Bad-input tests for the ivae command-line tool.

    python3 test/bad_input.py ./ivae
    python3 test/bad_input.py ./ivae_asan

Builds a tiny valid model and a valid batch, checks that `ivae grad` works on
them, then breaks one thing at a time (the checkpoint, the batch file, the
command line) and requires a clean refusal: exit status exactly 1, exactly one
line on stderr starting with "ivae: error:", no sanitizer report, and a
keyword in that line that names the problem. Also checks that F16 and BF16
checkpoints and an F16 batch (good inputs) are accepted.

Standard library only. Prints `ok   <case>` or `FAIL <case>: <why>` per case
and a summary; exits non-zero when any case fails.
"""
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import zlib

TIMEOUT = 60  # seconds per command; each should take well under one

# the tiny config: S = 2 stages, one temporal downsample -> time factor 2,
# space factor 2, z = 2 latent channels
INIT_ARGS = ["--base-ch", "4", "--ch-mult", "1,2", "--n-res", "1", "--z-ch", "2",
             "--temporal", "1", "--attn", "frame"]
Z_CH = 2

# --------------------------------------------------------------------------
# safetensors reading and writing (raw bytes, so that we can break anything)


def st_load(path):
    """-> (header dict including __metadata__, data bytes)"""
    with open(path, "rb") as f:
        raw = f.read()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n].decode("utf-8"))
    return header, raw[8 + n:]


def st_tensors(path):
    """-> (metadata dict, [(name, dtype, shape, bytes)] in file order)"""
    header, data = st_load(path)
    meta = header.pop("__metadata__", {})
    # the checksum of the data (SPEC 5): the cases below change the data, so
    # they start from the metadata without it (and test it on their own)
    meta.pop("data_crc32", None)
    out = []
    for name, t in header.items():
        b, e = t["data_offsets"]
        out.append((name, t["dtype"], list(t["shape"]), data[b:e]))
    return meta, out


def st_raw(header_bytes, data=b"", hlen=None):
    """a file from a header given as bytes (may be broken on purpose)"""
    if hlen is None:
        hlen = len(header_bytes)
    return struct.pack("<Q", hlen) + header_bytes + data


def st_build(tensors, meta=None, header_hook=None, raw_header=None):
    """tensors: [(name, dtype, shape, bytes)]; returns file bytes.
    header_hook(list_of_(name, entry_dict)) may change entries in place.
    The header is written by hand (not json.dumps of a dict) so that a name
    may appear twice."""
    entries = []
    off = 0
    for name, dtype, shape, buf in tensors:
        entries.append([name, {"dtype": dtype, "shape": list(shape),
                               "data_offsets": [off, off + len(buf)]}])
        off += len(buf)
    if header_hook:
        header_hook(entries)
    parts = []
    if meta is not None:
        parts.append('"__metadata__":' + json.dumps(meta))
    for name, ent in entries:
        parts.append(json.dumps(name) + ":" + json.dumps(ent))
    h = ("{" + ",".join(parts) + "}").encode()
    h += b" " * (-len(h) % 8)
    return st_raw(h, b"".join(t[3] for t in tensors))


def f32(vals):
    return struct.pack("<%df" % len(vals), *vals)


def numel(shape):
    n = 1
    for s in shape:
        n *= s
    return n


# deterministic pseudo-random values (no numpy): a small LCG
class Lcg:
    def __init__(self, seed):
        self.s = seed

    def uniform(self):
        self.s = (self.s * 6364136223846793005 + 1442695040888963407) % (1 << 64)
        return (self.s >> 11) / float(1 << 53)


def pixels(shape, rng):
    return [2 * rng.uniform() - 1 for _ in range(numel(shape))]


def noise(shape, rng):
    # a cheap, bounded stand-in for normal noise (sum of uniforms)
    return [sum(rng.uniform() for _ in range(4)) - 2 for _ in range(numel(shape))]


# --------------------------------------------------------------------------
# dtype conversion of good checkpoints


def f32_to_f16_bytes(buf):
    vals = struct.unpack("<%df" % (len(buf) // 4), buf)
    return struct.pack("<%de" % len(vals), *vals)


def f32_to_bf16_bytes(buf):
    out = bytearray()
    for (u,) in struct.iter_unpack("<I", buf):
        # round to nearest even on the top 16 bits (values here are finite)
        u = (u + 0x7FFF + ((u >> 16) & 1)) >> 16
        out += struct.pack("<H", u & 0xFFFF)
    return bytes(out)


# --------------------------------------------------------------------------
# the runner


class Runner:
    def __init__(self, exe, tmp):
        self.exe = exe
        self.tmp = tmp
        self.results = []  # (name, ok, why)
        self.n_files = 0
        self.env = {}  # extra environment for the next commands

    def path(self, name):
        return os.path.join(self.tmp, name)

    def write(self, data, name=None):
        self.n_files += 1
        p = self.path(name or "f%03d.safetensors" % self.n_files)
        with open(p, "wb") as f:
            f.write(data)
        return p

    def run(self, args):
        env = dict(os.environ)
        # the model is tiny: one thread avoids OpenMP spin-waits on a busy machine
        env["OMP_NUM_THREADS"] = "1"
        env.update(self.env)
        try:
            r = subprocess.run([self.exe] + args, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               timeout=TIMEOUT, env=env, cwd=self.tmp)
        except subprocess.TimeoutExpired:
            return None, "", "timed out after %d s" % TIMEOUT
        except OSError as ex:
            return None, "", "cannot run %s: %s" % (self.exe, ex)
        return (r.returncode, r.stdout.decode("utf-8", "replace"),
                r.stderr.decode("utf-8", "replace"))

    def record(self, name, why):
        self.results.append((name, why is None, why))
        if why is None:
            print("ok   " + name)
        else:
            print("FAIL %s: %s" % (name, why))
        sys.stdout.flush()

    def expect_ok(self, name, args, check=None):
        rc, out, err = self.run(args)
        why = None
        if rc is None:
            why = err
        elif rc != 0:
            why = "exit status %d (expected 0); stderr: %s" % (rc, short(err))
        elif sanitizer(err):
            why = "sanitizer report: " + short(err)
        elif check:
            why = check()
        self.record(name, why)
        return why is None

    def expect_error(self, name, args, keywords, extra=None):
        """exit 1, one 'ivae: error:' line, no sanitizer text, one of keywords"""
        if isinstance(keywords, str):
            keywords = [keywords]
        rc, out, err = self.run(args)
        why = None
        lines = err.splitlines()
        if rc is None:
            why = err
        elif rc < 0:
            why = "killed by signal %d; stderr: %s" % (-rc, short(err))
        elif sanitizer(err):
            why = "sanitizer report (exit %d): %s" % (rc, short(err))
        elif rc != 1:
            why = "exit status %d (expected 1); stderr: %s" % (rc, short(err))
        elif len(lines) != 1 or not err.endswith("\n"):
            why = "stderr has %d lines (expected exactly one): %s" % (len(lines), short(err))
        elif not lines[0].startswith("ivae: error: "):
            why = "stderr does not start with 'ivae: error: ': " + short(err)
        elif not any(k.lower() in lines[0].lower() for k in keywords):
            why = "error names none of %s: %s" % (keywords, short(err))
        elif extra:
            why = extra(lines[0])
        self.record(name, why)


def sanitizer(text):
    return "Sanitizer" in text or "runtime error" in text or "AddressSanitizer" in text


def short(s, n=400):
    s = s.strip().replace("\n", "\\n")
    return s if len(s) <= n else s[:n] + "..."


# --------------------------------------------------------------------------


def main():
    if len(sys.argv) != 2:
        print("usage: python3 test/bad_input.py ./ivae|./ivae_asan", file=sys.stderr)
        return 2
    exe = os.path.abspath(sys.argv[1])
    if not os.access(exe, os.X_OK):
        print("bad_input: %s is not an executable" % exe, file=sys.stderr)
        return 2
    tmp = tempfile.mkdtemp(prefix="ivae_bad_input_")
    try:
        return run_all(Runner(exe, tmp))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def run_all(R):
    P = R.path
    model = P("model.safetensors")
    rc, out, err = R.run(["init"] + INIT_ARGS + ["--seed", "7", model])
    if rc != 0 or sanitizer(err):
        R.record("init tiny model", "exit %s: %s" % (rc, short(err)))
        return summary(R)
    R.record("init tiny model", None)
    meta, tensors = st_tensors(model)
    by_name = {t[0]: t for t in tensors}

    # the batch: a 3-frame clip and an image, 4x4 pixels; latents (2,2,2,2) and (2,1,2,2)
    rng = Lcg(12345)
    xs0, xs1 = [3, 3, 4, 4], [3, 1, 4, 4]
    es0, es1 = [Z_CH, 2, 2, 2], [Z_CH, 1, 2, 2]
    x0, x1 = pixels(xs0, rng), pixels(xs1, rng)
    e0, e1 = noise(es0, rng), noise(es1, rng)

    def batch(x0s=xs0, x0v=None, e0s=es0, e0v=None, drop=(), dtype="F32", extra=()):
        x0v = x0 if x0v is None else x0v
        e0v = e0 if e0v is None else e0v
        ts = [("x.0", "F32", x0s, f32(x0v)), ("x.1", "F32", xs1, f32(x1)),
              ("eps.0", "F32", e0s, f32(e0v)), ("eps.1", "F32", es1, f32(e1))]
        ts = [t for t in ts if t[0] not in drop] + list(extra)
        if dtype == "F16":
            ts = [(n, "F16", s, f32_to_f16_bytes(b)) for n, _, s, b in ts]
        return st_build(ts)

    good_in = R.write(batch(), "in.safetensors")
    out = P("out.safetensors")

    # --- the working baseline -------------------------------------------------
    def check_out():
        try:
            _, ts = st_tensors(out)
        except Exception as ex:  # noqa: BLE001
            return "OUT is not a readable safetensors file: %s" % ex
        names = {t[0] for t in ts}
        want = {"loss", "rec", "kl", "mu.0", "xhat.1", "grad.x.0"} | {"grad." + n for n in by_name}
        if not want <= names:
            return "OUT lacks %s" % sorted(want - names)[:5]
        os.remove(out)
        return None

    if not R.expect_ok("baseline: grad on the valid model and batch", ["grad", model, good_in, out], check_out):
        print("the baseline fails: the bad-input cases below would prove nothing")
        return summary(R)
    R.expect_ok("baseline: info on the valid model", ["info", model])

    def model_file(ts=None, m=None, hook=None):
        return R.write(st_build(tensors if ts is None else ts, meta if m is None else m, hook))

    def grad_model(name, path, keywords, extra=None):
        R.expect_error(name, ["grad", path, good_in, out], keywords, extra)

    def grad_in(name, path, keywords, extra=None):
        R.expect_error(name, ["grad", model, path, out], keywords, extra)

    # --- good inputs: F16 and BF16 checkpoints, an F16 batch -----------------
    f16 = [(n, "F16", s, f32_to_f16_bytes(b)) for n, _, s, b in tensors]
    bf16 = [(n, "BF16", s, f32_to_bf16_bytes(b)) for n, _, s, b in tensors]
    f16_model = model_file(f16)
    R.expect_ok("good: F16 checkpoint loads and runs grad", ["grad", f16_model, good_in, out], check_out)
    R.expect_ok("good: BF16 checkpoint loads and runs grad", ["grad", model_file(bf16), good_in, out], check_out)
    mixed = [bf16[i] if i % 2 else f16[i] for i in range(len(tensors))]
    R.expect_ok("good: mixed F16/BF16/F32 checkpoint", ["grad", model_file(mixed), good_in, out], check_out)
    R.expect_ok("good: F16 batch file", ["grad", model, R.write(batch(dtype="F16")), out], check_out)
    R.expect_ok("good: optim.* tensors in a checkpoint are ignored",
                ["grad", model_file(tensors + [("optim.step", "F32", [1], f32([3.0]))]), good_in, out], check_out)

    # --- the checkpoint file itself --------------------------------------------
    grad_model("model: file missing", P("no_such_file.safetensors"), "cannot open")
    grad_model("model: a directory", R.tmp, ["cannot read", "not a regular file", "directory"])
    grad_model("model: empty file", R.write(b""), "too short")
    grad_model("model: 5 bytes", R.write(b"\x10\x00\x00\x00\x00"), "too short")
    grad_model("model: 8-byte header length only", R.write(struct.pack("<Q", 2)), "does not fit")
    raw = open(model, "rb").read()
    (hlen,) = struct.unpack("<Q", raw[:8])
    grad_model("model: header length larger than the file",
               R.write(struct.pack("<Q", len(raw)) + raw[8:]), "does not fit")
    grad_model("model: header length 2^63", R.write(struct.pack("<Q", 1 << 63) + raw[8:]), "does not fit")
    grad_model("model: header length 2^64-1", R.write(b"\xff" * 8 + raw[8:]), "does not fit")
    grad_model("model: header length 0", R.write(struct.pack("<Q", 0) + raw[8:]), "does not fit")
    grad_model("model: truncated in the data section", R.write(raw[:len(raw) - 100]),
               ["outside", "truncated"])
    grad_model("model: truncated in the middle of the JSON header", R.write(raw[:8 + hlen // 2]),
               ["does not fit", "truncated"])
    grad_model("model: truncated after the header length", R.write(raw[:12]), ["does not fit", "truncated"])
    grad_model("model: header is not JSON", R.write(st_raw(b"this is not json at all!")),
               "corrupt safetensors header")
    grad_model("model: header is a JSON array", R.write(st_raw(b"[1, 2, 3]")), "corrupt safetensors header")
    grad_model("model: garbage after the JSON object",
               R.write(st_raw(raw[8:8 + hlen].rstrip() + b"garbage", raw[8 + hlen:])),
               ["trailing bytes", "corrupt"])
    grad_model("model: garbage inside the JSON header",
               R.write(st_raw(raw[8:8 + 40] + b"\x01\x02@@" + raw[8 + 44:8 + hlen], raw[8 + hlen:])),
               "corrupt safetensors header")
    grad_model("model: unterminated string in the header", R.write(st_raw(b'{"encoder.conv_in.weight')),
               "corrupt safetensors header")
    grad_model("model: header nested too deep",
               R.write(st_raw(b'{"a":{"dtype":"F32","shape":[],"data_offsets":[0,4],"x":' + b"[" * 200
                              + b"]" * 200 + b"}}", f32([1.0]))), ["nesting too deep", "corrupt"])
    grad_model("model: NUL bytes as the header", R.write(st_raw(b"\x00" * 16)), "corrupt safetensors header")
    R.expect_error("model: corrupt-header error gives a non-negative byte offset",
                   ["grad", R.write(st_raw(b'{"a": nonsense}')), good_in, out], "corrupt",
                   lambda l: "the byte offset is negative: " + l if "at byte -" in l else None)

    first = tensors[0][0]

    def hook_entry(name, **kv):
        def h(entries):
            for n, ent in entries:
                if n == name:
                    ent.update(kv)
        return h

    grad_model("model: data_offsets past the end of the data",
               model_file(hook=hook_entry(first, data_offsets=[len(raw), len(raw) + 4 * numel(tensors[0][2])])),
               "outside")
    grad_model("model: data_offsets begin > end", model_file(hook=hook_entry(first, data_offsets=[400, 8])),
               "outside")
    grad_model("model: data_offsets size disagrees with shape x dtype",
               model_file(hook=hook_entry(first, data_offsets=[0, 4 * numel(tensors[0][2]) - 4])),
               ["need", "bytes"])
    grad_model("model: data_offsets with 3 numbers", model_file(hook=hook_entry(first, data_offsets=[0, 4, 8])),
               ["data_offsets", "corrupt"])
    grad_model("model: data_offsets negative", model_file(hook=hook_entry(first, data_offsets=[-4, 8])),
               ["non-negative", "corrupt"])
    grad_model("model: negative shape", model_file(hook=hook_entry(first, shape=[-1, 3, 3, 3, 3])),
               ["non-negative", "corrupt"])
    grad_model("model: enormous shape (2^41 x ...)",
               model_file(hook=hook_entry(first, shape=[1 << 41, 3, 3, 3, 3])), ["impossible shape"])
    grad_model("model: enormous shape (product overflows)",
               model_file(hook=hook_entry(first, shape=[1 << 30, 1 << 30, 1 << 30, 3, 3])), ["impossible shape"])
    grad_model("model: shape entry above 2^63", model_file(hook=hook_entry(first, shape=[10 ** 20, 3, 3, 3, 3])),
               ["too large", "corrupt"])
    grad_model("model: shape with 9 dimensions", model_file(hook=hook_entry(first, shape=[1] * 9)),
               ["more than 8", "corrupt"])
    grad_model("model: shape is a string", model_file(hook=hook_entry(first, shape="4,3,3,3,3")),
               ["corrupt"])
    grad_model("model: tensor entry without a dtype",
               R.write(st_build(tensors, meta, lambda es: es[0][1].pop("dtype"))), ["lacks", "dtype"])
    grad_model("model: tensor entry is not an object",
               R.write(st_raw(b'{"encoder.conv_in.bias": 5}')), "corrupt safetensors header")
    grad_model("model: duplicate tensor name", model_file(tensors + [tensors[1]]), ["twice", "duplicate"])
    grad_model("model: missing parameter tensor", model_file(tensors[:5] + tensors[6:]),
               ["missing", tensors[5][0]])
    n, d, s, b = tensors[0]
    grad_model("model: parameter with the wrong shape",
               model_file([(n, d, [s[1], s[0]] + s[2:], b)] + tensors[1:]), "wrong shape")
    grad_model("model: parameter with the wrong number of dims",
               model_file([(n, d, [s[0], s[1] * s[2]] + s[3:], b)] + tensors[1:]), "wrong shape")
    grad_model("model: dtype I32", model_file([(n, "I32", s, b)] + tensors[1:]), ["dtype", "I32"])
    grad_model("model: dtype U8",
               model_file([(n, "U8", s, b[:numel(s)])] + tensors[1:]), ["dtype", "U8"])
    grad_model("model: dtype F8_E4M3", model_file([(n, "F8_E4M3", s, b[:numel(s)])] + tensors[1:]), ["dtype"])

    def poke(ts, idx, elem, val_bytes):
        n, d, s, b = ts[idx]
        w = len(val_bytes)
        return ts[:idx] + [(n, d, s, b[:elem * w] + val_bytes + b[(elem + 1) * w:])] + ts[idx + 1:]

    grad_model("model: NaN in a weight (F32)", model_file(poke(tensors, 0, 5, struct.pack("<I", 0x7FC00000))), "NaN")
    grad_model("model: NaN with payload and sign (F32)",
               model_file(poke(tensors, 2, 0, struct.pack("<I", 0xFF800001))), "NaN")
    grad_model("model: +inf in a weight (F32)", model_file(poke(tensors, 0, 7, struct.pack("<I", 0x7F800000))), "inf")
    grad_model("model: -inf in a bias (F32)", model_file(poke(tensors, 1, 0, struct.pack("<I", 0xFF800000))), "inf")
    grad_model("model: NaN in a weight (F16)", model_file(poke(f16, 0, 3, struct.pack("<H", 0x7E00))), "NaN")
    grad_model("model: inf in a weight (F16)", model_file(poke(f16, 0, 3, struct.pack("<H", 0x7C00))), "inf")
    grad_model("model: NaN in a weight (BF16)", model_file(poke(bf16, 0, 3, struct.pack("<H", 0x7FC0))), "NaN")

    def meta_with(**kv):
        m = dict(meta)
        for k, v in kv.items():
            if v is None:
                m.pop(k, None)
            else:
                m[k] = v
        return m

    grad_model("model: metadata missing 'format'", model_file(m=meta_with(format=None)),
               ["not an ivae checkpoint", "format"])
    grad_model("model: metadata format other than ivae", model_file(m=meta_with(format="pytorch")),
               ["not an ivae checkpoint", "format"])
    grad_model("model: no __metadata__ at all", R.write(st_build(tensors, None)),
               ["not an ivae checkpoint", "format"])
    grad_model("model: metadata ch_mult malformed ('1,x')", model_file(m=meta_with(ch_mult="1,x")), "ch_mult")
    grad_model("model: metadata ch_mult empty", model_file(m=meta_with(ch_mult="")), "ch_mult")
    grad_model("model: metadata ch_mult missing", model_file(m=meta_with(ch_mult=None)), "ch_mult")
    grad_model("model: metadata ch_mult with 9 stages", model_file(m=meta_with(ch_mult="1,1,1,1,1,1,1,1,1")),
               "ch_mult")
    grad_model("model: metadata ch_mult 0", model_file(m=meta_with(ch_mult="0,2")), ["ch_mult", "out of range"])
    grad_model("model: metadata base_ch not a number", model_file(m=meta_with(base_ch="four")), "base_ch")
    grad_model("model: metadata z_ch missing", model_file(m=meta_with(z_ch=None)), "z_ch")
    grad_model("model: metadata temporal has the wrong count", model_file(m=meta_with(temporal="1,1")), "temporal")
    grad_model("model: metadata temporal flag 2", model_file(m=meta_with(temporal="2")), "temporal")
    grad_model("model: metadata attn unknown", model_file(m=meta_with(attn="global")), "attn")
    grad_model("model: metadata config that disagrees with the tensors (z_ch 3)",
               model_file(m=meta_with(z_ch="3")), ["wrong shape", "missing"])
    grad_model("model: metadata value is not a string",
               R.write(st_raw(b'{"__metadata__":{"format":1}}')), ["corrupt", "format"])
    grad_model("model: absurd config in metadata (base_ch 4096, 8 stages of x64, n_res 64)",
               model_file(m=meta_with(base_ch="4096", ch_mult="64,64,64,64,64,64,64,64",
                                      temporal="1,1,1,1,1,1,1", n_res="64")),
               ["missing", "too large", "memory", "config", "out of range"])
    grad_model("model: extra tensor that is not a parameter",
               model_file(tensors + [("encoder.bogus.weight", "F32", [2], f32([1.0, 2.0]))]),
               ["not a parameter", "bogus"])
    grad_model("model: extra tensor whose name holds an escaped newline",
               model_file(tensors + [("encoder.bogus\nweight", "F32", [1], f32([1.0]))]),
               ["not a parameter", "bogus", "control character"])
    grad_model("model: metadata format holding an escaped newline",
               model_file(m=meta_with(format="ivae\nv2")),
               ["not an ivae checkpoint", "format", "control character"])
    grad_model("model: dtype holding an escaped newline", model_file([(n, "F32\nX", s, b)] + tensors[1:]),
               ["dtype", "control character"])
    R.expect_error("info: header is not JSON", ["info", R.write(st_raw(b"not json"))], "corrupt safetensors header")
    R.expect_error("info: NaN in a checkpoint weight",
                   ["info", model_file(poke(tensors, 0, 5, struct.pack("<I", 0x7FC00000)))], "NaN")

    # --- the batch file ----------------------------------------------------------
    grad_in("IN: file missing", P("no_in.safetensors"), "cannot open")
    grad_in("IN: empty file", R.write(b""), "too short")
    grad_in("IN: truncated", R.write(open(good_in, "rb").read()[:-16]), ["outside", "truncated"])
    grad_in("IN: no x.0 (only x.1)", R.write(batch(drop=("x.0", "eps.0"))), ["no input clips", "x.0"])
    grad_in("IN: no tensors at all", R.write(st_raw(b"{}")), ["no input clips", "x.0"])
    grad_in("IN: a model file instead of a batch", model, ["no input clips", "x.0"])
    grad_in("IN: x.0 with 4 channels", R.write(batch(x0s=[4, 3, 4, 4], x0v=x0 + x0[:48])), "channels")
    grad_in("IN: x.0 with T = 2 (needs 1 + 2k)", R.write(batch(x0s=[3, 2, 4, 4], x0v=x0[:96])), "frames")
    grad_in("IN: x.0 with H = 3 (not a multiple of 2)", R.write(batch(x0s=[3, 3, 3, 4], x0v=x0[:108])),
            "multiples of")
    grad_in("IN: x.0 with W = 5", R.write(batch(x0s=[3, 3, 4, 5], x0v=x0 + x0[:36])), "multiples of")
    grad_in("IN: x.0 with an empty dimension", R.write(batch(x0s=[3, 0, 4, 4], x0v=[])), ["empty", "absurd"])
    grad_in("IN: eps.0 missing", R.write(batch(drop=("eps.0",))), ["eps.0", "missing"])
    grad_in("IN: eps.1 missing", R.write(batch(drop=("eps.1",))), ["eps.1", "missing"])
    grad_in("IN: eps.0 with the wrong shape", R.write(batch(e0s=[Z_CH, 1, 4, 4], e0v=e0 + e0)),
            ["eps.0", "shape"])
    grad_in("IN: eps.0 with the wrong channel count", R.write(batch(e0s=[2 * Z_CH, 2, 2, 2], e0v=e0 + e0)),
            ["eps.0", "shape"])
    bad_x = list(x0)
    bad_x[10] = float("nan")
    grad_in("IN: NaN in x.0", R.write(batch(x0v=bad_x)), "NaN")
    bad_x[10] = float("inf")
    grad_in("IN: inf in x.0", R.write(batch(x0v=bad_x)), "inf")
    bad_e = list(e0)
    bad_e[3] = float("nan")
    grad_in("IN: NaN in eps.0", R.write(batch(e0v=bad_e)), "NaN")
    grad_in("IN: x.0 with 3 dims instead of 4", R.write(batch(x0s=[3, 12, 4])), "dimensions")
    grad_in("IN: x.0 with 5 dims", R.write(batch(x0s=[1, 3, 3, 4, 4])), "dimensions")
    grad_in("IN: x.0 is a scalar", R.write(batch(x0s=[], x0v=[0.5])), "dimensions")
    grad_in("IN: eps.0 with 3 dims", R.write(batch(e0s=[Z_CH, 2, 4])), ["dimensions", "eps.0"])
    grad_in("IN: x.0 with dtype I32",
            R.write(st_build([("x.0", "I32", xs0, f32(x0)), ("eps.0", "F32", es0, f32(e0))])), ["dtype", "I32"])

    # --- the command line ------------------------------------------------------------
    R.expect_error("CLI: unknown subcommand", ["frobnicate"], "unknown command")
    R.expect_error("CLI: unknown option to grad", ["grad", "--bogus", model, good_in, out], "unknown option")
    R.expect_error("CLI: unknown option to init", ["init", "--bogus", P("x.safetensors")], "unknown option")
    R.expect_error("CLI: --beta abc", ["grad", "--beta", "abc", model, good_in, out], ["--beta", "not a number"])
    R.expect_error("CLI: --beta nan", ["grad", "--beta", "nan", model, good_in, out], ["--beta", "not a number"])
    R.expect_error("CLI: --w-image 1x", ["grad", "--w-image", "1x", model, good_in, out], ["--w-image"])
    R.expect_error("CLI: --ref-shape 17x64", ["grad", "--ref-shape", "17x64", model, good_in, out], "ref-shape")
    R.expect_error("CLI: --ref-shape 0x64x64", ["grad", "--ref-shape", "0x64x64", model, good_in, out], "ref-shape")
    R.expect_error("CLI: --beta without a value", ["grad", model, good_in, out, "--beta"], ["--beta", "value"])
    R.expect_error("CLI: grad with no arguments", ["grad"], ["expected MODEL IN OUT", "usage"])
    R.expect_error("CLI: grad with two arguments", ["grad", model, good_in], ["expected MODEL IN OUT", "usage"])
    R.expect_error("CLI: grad with four arguments", ["grad", model, good_in, out, out], ["too many", "usage"])
    R.expect_error("CLI: init --config unknown", ["init", "--config", "ivae-xxl", P("y.safetensors")],
                   ["unknown config", "ivae-xxl"])
    R.expect_error("CLI: init --ch-mult 1,x", ["init", "--ch-mult", "1,x", P("y.safetensors")], "ch-mult")
    R.expect_error("CLI: init --temporal count mismatch",
                   ["init", "--ch-mult", "1,2", "--temporal", "1,1", P("y.safetensors")], "temporal")
    R.expect_error("CLI: diff with a missing file", ["diff", model, P("nope.safetensors")], "cannot open")
    R.expect_error("CLI: output directory does not exist",
                   ["grad", model, good_in, P("no_such_dir/out.safetensors")], ["cannot create", "write failed"])

    outdir = P("out_is_a_dir")
    os.mkdir(outdir)

    def no_leftover(line):
        left = os.listdir(R.tmp)
        stray = [f for f in left if ".tmp." in f]
        return "temporary file left behind: %s" % stray if stray else None

    R.expect_error("CLI: output path is a directory", ["grad", model, good_in, outdir],
                   ["write failed", "cannot create", "directory"], no_leftover)
    R.expect_error("CLI: init into a missing directory", ["init"] + INIT_ARGS + [P("no_dir/m.safetensors")],
                   ["cannot create", "write failed"])
    if os.path.exists(out):
        R.record("no OUT file written by any failing grad", "%s exists" % out)
    else:
        R.record("no OUT file written by any failing grad", None)
    hardening(R, model, tensors, meta)
    return summary(R)


# --------------------------------------------------------------------------
# hardening (issue 14): each class of defect a fuzzing campaign found, one
# or more cases each; every case failed before its fix


def png_bytes(w, h, seed=1, idat=None, ihdr_wh=None):
    """an RGB PNG; idat replaces the IDAT chunks' data list, ihdr_wh the declared size"""
    raw = b"".join(b"\x00" + bytes((x * 7 + y * 13 + seed * 31 + c * 50) % 256 for x in range(w) for c in range(3))
                   for y in range(h))

    def chunk(t, d):
        return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d))
    W, H = ihdr_wh or (w, h)
    chunks = [chunk(b"IDAT", d) for d in (idat if idat is not None else [zlib.compress(raw)])]
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", W, H, 8, 2, 0, 0, 0)) + b"".join(chunks)
            + chunk(b"IEND", b""))


def jpeg_bytes(w=8, h=8, dqt16=False, sof=0xC0, scans=None, ncomp=1, cat=4, q=255, dri=0, data=None,
               dht=None):
    """a hand-made JPEG of ncomp components: one DC table whose single code
    (bit 0) is difference category cat, one AC table whose single code is
    EOB; each block is then 0, cat 1 bits, 0: the largest positive DC
    difference of the category (2^cat - 1) and an end of block (a
    progressive DC scan's block has no end of block). q: every quantiser;
    dri: a restart interval, with a marker after every dri MCUs; data: the
    entropy data of every scan instead; dht: the Huffman segments instead.
    scans: [(component ids, Ss, Se, Ah[, Al])]."""
    def seg(m, body):
        return b"\xff" + bytes([m]) + struct.pack(">H", len(body) + 2) + body
    if dqt16:
        dqt = seg(0xDB, b"\x10" + struct.pack(">64H", *([65535] * 64)))
    else:
        dqt = seg(0xDB, b"\x00" + bytes([q] * 64))
    sofb = seg(sof, bytes([8]) + struct.pack(">HH", h, w) + bytes([ncomp])
               + b"".join(bytes([c + 1, 0x11, 0]) for c in range(ncomp)))
    if dht is None:
        dht = (seg(0xC4, b"\x00" + bytes([1] + [0] * 15) + bytes([cat]))
               + seg(0xC4, b"\x10" + bytes([1] + [0] * 15) + b"\x00"))
    if dri:
        dht += seg(0xDD, struct.pack(">H", dri))
    body = b""
    for scan in (scans if scans is not None else [(list(range(1, ncomp + 1)), 0, 63, 0)]):
        ids, ss, se, ah = scan[:4]
        al = scan[4] if len(scan) > 4 else 0
        body += seg(0xDA, bytes([len(ids)]) + b"".join(bytes([i, 0x00]) for i in ids) + bytes([ss, se, ah << 4 | al]))
        if data is not None:
            body += data
            continue
        block = "0" + "1" * cat + ("" if sof == 0xC2 else "0")
        mcus = ((w + 7) // 8) * ((h + 7) // 8)
        runs = [mcus] if not dri else [min(dri, mcus - i) for i in range(0, mcus, dri)]
        for r, n in enumerate(runs):
            bits = block * (n * len(ids))
            bits += "1" * (-len(bits) % 8)
            body += bytes(int(bits[i:i + 8], 2) for i in range(0, len(bits), 8)).replace(b"\xff", b"\xff\x00")
            if r + 1 < len(runs):
                body += bytes([0xFF, 0xD0 + r % 8])
    return b"\xff\xd8" + dqt + sofb + dht + body + b"\xff\xd9"


def bmp8(w, h, idx, ncolors):
    """an uncompressed 8-bit palette BMP (BITMAPINFOHEADER) of w x h indices"""
    row = w + (-w % 4)
    pixels = b"".join(bytes(idx[y * w:(y + 1) * w]) + b"\x00" * (row - w) for y in range(h))
    pal = b"".join(bytes([40 * k, 80 * k % 256, 255 - 40 * k, 0]) for k in range(ncolors))
    off = 14 + 40 + len(pal)
    return (b"BM" + struct.pack("<IHHI", off + len(pixels), 0, 0, off)
            + struct.pack("<IiiHHIIiiII", 40, w, h, 1, 8, 0, len(pixels), 2835, 2835, ncolors, 0) + pal + pixels)


def hardening(R, model, tensors, meta):
    P = R.path

    def recon(name, data, keywords, fname="img.png"):
        R.expect_error(name, ["recon", model, R.write(data, fname), P("r.png")], keywords)

    # (1) the JPEG screen ran only on files that start FF D8; stb also takes
    # fill bytes before the D8, and then wrote past a Huffman table
    huff = b"\xff\xc4\x00\x13\x00" + b"\xff" * 16
    recon("hardening: JPEG with fill bytes before SOI and a 4080-code Huffman table",
          b"\xff\xff\xd8" + huff + b"\x00" * 8, "more than 256 codes", "fill.jpg")
    recon("hardening: JPEG with many fill bytes before SOI", b"\xff" * 40 + b"\xd8" + huff, "more than 256 codes",
          "fill2.jpg")

    # (5) stb's undefined behaviour: 16-bit quantisation (DC overflow), a
    # component no scan covers, a progressive AC scan before the DC scan,
    # an empty first IDAT (memcpy to NULL)
    R.expect_ok("hardening: the hand-made JPEG decodes (8-bit tables)",
                ["recon", model, R.write(jpeg_bytes(16, 16), "ok.jpg"), P("r.png")])
    recon("hardening: JPEG with 16-bit quantisation tables (dequantisation overflows int)",
          jpeg_bytes(16, 16, dqt16=True), "16-bit quantisation", "q16.jpg")
    recon("hardening: JPEG whose second component is in no scan",
          jpeg_bytes(16, 16, ncomp=3, scans=[([1], 0, 63, 0)]), "no scan covers", "cover.jpg")
    recon("hardening: JPEG with a frame header and no scan at all", jpeg_bytes(16, 16, scans=[]),
          "no scan covers", "noscan.jpg")
    recon("hardening: progressive JPEG whose first scan is an AC scan",
          jpeg_bytes(16, 16, sof=0xC2, scans=[([1], 1, 5, 0), ([1], 0, 0, 0)]), "first DC scan", "prog.jpg")
    recon("hardening: progressive JPEG that starts with a DC refinement scan",
          jpeg_bytes(16, 16, sof=0xC2, scans=[([1], 0, 0, 1)]), "first DC scan", "prog2.jpg")
    recon("hardening: PNG whose first IDAT chunk is empty",
          png_bytes(8, 8, idat=[b"", zlib.compress(b"\x00" * 25 * 8)]), "empty first IDAT", "idat.png")

    recon("hardening: JPEG whose scan uses a Huffman table no DHT defined",
          jpeg_bytes(16, 16).replace(b"\xff\xda\x00\x08\x01\x01\x00", b"\xff\xda\x00\x08\x01\x01\x11"),
          "never defined", "huff.jpg")
    recon("hardening: JPEG whose component uses a quantisation table no DQT defined",
          jpeg_bytes(16, 16).replace(b"\x01\x11\x00\xff\xc4", b"\x01\x11\x02\xff\xc4"), "never defined", "dqt.jpg")
    # stb keeps each DC coefficient as an int running sum of the coded
    # differences: the screen decodes the DC of every block as stb will and
    # refuses one beyond 16 bits (none of these files is a real picture)
    recon("hardening: JPEG whose DC sum climbs by 32767 a block, q 255 (int overflow after 258 blocks)",
          jpeg_bytes(256, 256, cat=15), "DC coefficient", "dcsum.jpg")
    recon("hardening: 140-byte JPEG whose empty scan decodes as zero bits: DC -32767 a block",
          jpeg_bytes(256, 256, cat=15, data=b""), "DC coefficient", "dczero.jpg")
    R.expect_ok("hardening: JPEG with DC +32767 a block, q 1, a restart marker after every block (sums reset)",
                ["recon", model, R.write(jpeg_bytes(64, 64, cat=15, q=1, dri=1), "rst1.jpg"), P("r.png")])
    recon("hardening: the same with a restart marker after every second block (2 x 32767)",
          jpeg_bytes(64, 64, cat=15, q=1, dri=2), "DC coefficient", "rst2.jpg")
    recon("hardening: progressive JPEG whose DC scan shifts +15 left by 13 bits",
          jpeg_bytes(16, 16, sof=0xC2, scans=[([1], 0, 0, 0, 13)]), "DC coefficient", "progdc.jpg")
    R.expect_ok("hardening: progressive JPEG whose DC scan shifts +15 left by 1 bit",
                ["recon", model, R.write(jpeg_bytes(16, 16, sof=0xC2, scans=[([1], 0, 0, 0, 1)]), "progdc1.jpg"),
                 P("r.png")])
    # a code that runs past the scan's data: 4 bytes, five blocks of 2 bits,
    # then a 16-bit DC code and its 15 magnitude bits with 6 bits left, so
    # stb's bit count falls to -9 and its next refill shifts by 33 bits
    dht_long = (b"\xff\xc4\x00\x15\x00" + bytes([1] + [0] * 14 + [1]) + bytes([0, 15])
                + b"\xff\xc4\x00\x14\x10" + bytes([1] + [0] * 15) + b"\x00")
    recon("hardening: JPEG whose DC magnitude bits run past the end of its scan (a shift by 33 in stb)",
          jpeg_bytes(64, 8, dht=dht_long, data=b"\x00\x20\x00\x00", q=1), "runs past the end", "overrun.jpg")
    # the same in a progressive AC scan: sixteen 1-bit end-of-band codes,
    # then a 16-bit code for an end-of-band run with 8 more bits, none left;
    # the run skips 255 blocks, and the 273rd block's refill shifts by 32
    dht_prog = (b"\xff\xc4\x00\x15\x00" + bytes([2] + [0] * 15) + bytes([0, 0])
                + b"\xff\xc4\x00\x15\x10" + bytes([1] + [0] * 14 + [1]) + bytes([0x00, 0x80]))
    recon("hardening: progressive JPEG whose end-of-band run bits run past its AC scan (a shift by 32 in stb)",
          jpeg_bytes(128, 144, sof=0xC2, scans=[([1], 0, 0, 0), ([1], 1, 63, 0)], dht=dht_prog,
                     data=b"\x00\x00\x80\x00"), "runs past the end", "overrun_ac.jpg")
    # a 256th Huffman code of 9 bits: stb's 9-bit lookup keeps indices in a
    # byte with 255 meaning "longer", reads the code through the long path
    # as another symbol and its assert aborts
    h256 = (b"\xff\xc4" + struct.pack(">H", 2 + 17 + 256) + b"\x00" + bytes([0] * 7 + [255, 1] + [0] * 7)
            + bytes(256) + b"\xff\xc4\x00\x14\x10" + bytes([1] + [0] * 15) + b"\x00")
    recon("hardening: JPEG whose DC table's 256th code is 9 bits long (stb's assert aborts)",
          jpeg_bytes(16, 16, dht=h256, data=b"\xff\x00\x00"), "256 codes", "h256.jpg")
    bmp = bmp8(4, 2, [0, 1, 1, 0, 1, 0, 0, 1], 2)
    R.expect_ok("hardening: an 8-bit BMP with a 2-colour palette and indices 0 and 1",
                ["recon", model, R.write(bmp, "p2.bmp"), P("r.png")])
    recon("hardening: an 8-bit BMP whose pixel indexes past its 2-colour palette",
          bmp8(4, 2, [0, 1, 1, 0, 1, 0, 2, 1], 2), "past the palette", "p3.bmp")
    recon("hardening: a 29-byte palette BMP whose depth's high byte is past the end (stb reads 8 bits, a palette of -2 bytes)",
          bmp8(16, 8, [0] * 128, 0)[:10] + b"\x34" + bmp8(16, 8, [0] * 128, 0)[11:29], "without a palette", "short.bmp")
    empty = bytearray(bmp8(4, 2, [0] * 8, 2))
    empty[18:26] = struct.pack("<ii", 0, -1776156672)  # width 0, height -1.8e9 (the fuzzer's timeout)
    recon("hardening: a palette BMP of 0 x 1776156672 (the screen must not walk 1.8e9 rows)", bytes(empty),
          ["large", "corrupt", "image"], "wide0.bmp")

    # (6) small files that declare huge images: refused before allocating
    recon("hardening: 89-byte PNG whose IDAT declares 1.5 GB", png_bytes(8, 8)[:33] + struct.pack(">I", 0x59000000)
          + png_bytes(8, 8)[37:], "longer than the rest", "len.png")
    recon("hardening: 100-byte PNG declaring 16384 x 16384", png_bytes(8, 8, ihdr_wh=(16384, 16384)),
          "IVAE_MAX_PIXELS", "bomb.png")
    recon("hardening: JPEG declaring 11897 x 13421", jpeg_bytes(11897, 13421, scans=[]), "IVAE_MAX_PIXELS",
          "bomb.jpg")
    good_png = R.write(png_bytes(16, 16), "good.png")
    R.expect_ok("hardening: a 16x16 PNG under the default pixel limit", ["recon", model, good_png, P("r.png")])
    R.env = {"IVAE_MAX_PIXELS": "255"}
    R.expect_error("hardening: IVAE_MAX_PIXELS=255 refuses a 16x16 PNG", ["recon", model, good_png, P("r.png")],
                   "IVAE_MAX_PIXELS")
    R.env = {"IVAE_MAX_PIXELS": "256"}
    R.expect_ok("hardening: IVAE_MAX_PIXELS=256 takes a 16x16 PNG", ["recon", model, good_png, P("r.png")])
    R.env = {"IVAE_MAX_PIXELS": "lots"}
    R.expect_error("hardening: IVAE_MAX_PIXELS=lots", ["recon", model, good_png, P("r.png")], "IVAE_MAX_PIXELS")
    R.env = {}

    # (3) tensors must tile the data: no shared bytes, no gaps, nothing after
    def grad_raw(name, header, data, keywords):
        h = json.dumps(header).encode()
        h += b" " * (-len(h) % 8)
        R.expect_error(name, ["info", R.write(st_raw(h, data))], keywords)
    t4 = {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}
    grad_raw("hardening: two tensors that share their bytes", {"a": t4, "b": dict(t4)}, f32([1.0]), "overlaps")
    grad_raw("hardening: a gap before a tensor", {"a": dict(t4, data_offsets=[4, 8])}, f32([1.0, 2.0]), "unused")
    grad_raw("hardening: bytes after the last tensor", {"a": t4}, f32([1.0, 2.0]), "after the last tensor")
    n0 = tensors[0]
    big = [(n0[0], n0[1], n0[2], n0[3])] + [("copy%d" % k, n0[1], n0[2], b"") for k in range(3)]

    def share_first(entries):
        for n, ent in entries[1:]:
            ent["data_offsets"] = list(entries[0][1]["data_offsets"])
    R.expect_error("hardening: a model whose tensors all point at one tensor's bytes",
                   ["info", R.write(st_build(big, meta, share_first))], "overlaps")

    # (7) the checksum ivae writes, verified on load
    raw = bytearray(open(model, "rb").read())
    (hl,) = struct.unpack("<Q", raw[:8])
    hdr = json.loads(raw[8:8 + hl])
    if "data_crc32" not in hdr.get("__metadata__", {}):
        R.record("hardening: ivae init writes data_crc32 in the metadata", "no data_crc32 in %s" % model)
    else:
        want = "%08x" % zlib.crc32(bytes(raw[8 + hl:]))
        R.record("hardening: ivae init writes data_crc32 (zlib's CRC-32 of the data)",
                 None if hdr["__metadata__"]["data_crc32"] == want else
                 "data_crc32 %s, zlib.crc32 %s" % (hdr["__metadata__"]["data_crc32"], want))
    flip = bytearray(raw)
    flip[8 + hl + 5] ^= 0x10  # one bit of a weight: still a finite float
    R.expect_error("hardening: one flipped bit in the weight data", ["info", R.write(bytes(flip))], "checksum mismatch")
    R.expect_error("hardening: data_crc32 that is not hex",
                   ["info", R.write(st_build(tensors, dict(meta, data_crc32="banana!!")))], "data_crc32")
    R.expect_ok("hardening: the same tensors without data_crc32 load (any safetensors file)",
                ["info", R.write(st_build(tensors, meta))])

    # (4) option values that wrapped when narrowed to int
    for flag in ("--guard-every", "--log-every", "--ckpt-every"):
        R.expect_error("hardening: train %s 4294967296 (was SIGFPE)" % flag,
                       ["train", flag, "4294967296", "--steps", "1", "--data", P("nodata")], flag + ": '4294967296' must be an integer in")
    R.expect_error("hardening: train --crop 4294967304 (was silently 8)",
                   ["train", "--crop", "4294967304", "--data", P("nodata")], "--crop: '4294967304' must be an integer in")
    R.expect_error("hardening: train --clips 2147483647", ["train", "--clips", "2147483647", "--data", P("nodata")],
                   "--clips: '2147483647' must be an integer in")
    R.expect_error("hardening: train --steps 99999999999999999999", ["train", "--steps", "99999999999999999999"],
                   "must be an integer in")
    R.expect_error("hardening: train --lr 1e999", ["train", "--lr", "1e999"], ["--lr", "number"])
    R.expect_error("hardening: train --ref-shape 4294967313x64x64", ["train", "--ref-shape", "4294967313x64x64"],
                   "ref-shape")
    R.expect_error("hardening: eval --size 4294967296", ["eval", "--size", "4294967296", model], "--size: '4294967296' is not an integer in")
    R.expect_error("hardening: batch --clip 4294967313x64x64",
                   ["batch", "--clip", "4294967313x64x64", model, P("b.safetensors")], "--clip")
    R.expect_error("hardening: init --base-ch ' 8' (blank first)", ["init", "--base-ch", " 8", P("y.safetensors")],
                   "--base-ch")

    # (2) and (7): the training checkpoint, resumed
    data = P("data")
    for split, seed in (("train", 1), ("eval", 2)):
        os.makedirs(os.path.join(data, split, "images"))
        with open(os.path.join(data, split, "images", "a.png"), "wb") as f:
            f.write(png_bytes(16, 16, seed))
    run_dir = P("run")
    os.mkdir(run_dir)
    ck = ckpt_from_model(R, tensors, meta, os.path.join(run_dir, "ckpt.safetensors"))
    resume = ["train", "--data", data, "--out", run_dir, "--steps", "5", "--eval-size", "16"]
    R.env = {"ASAN_OPTIONS": "detect_leaks=1"}  # a successful run must free what it took
    R.expect_ok("hardening: train --resume on a valid checkpoint exits 0 (sanitizer build: no leak)",
                ["train", "--resume", ck, "--data", data, "--out", P("run0"), "--steps", "4", "--eval-size", "16"])
    R.env = {}

    def bad_ckpt(name, keywords, **kv):
        m = dict(CKPT_META)
        m.update(kv)
        p = ckpt_from_model(R, tensors, meta, P("bad_ckpt.safetensors"), m)
        R.expect_error(name, ["train", "--resume", p, "--data", data, "--out", P("run_bad"), "--steps", "5"], keywords)
    bad_ckpt("hardening: checkpoint n_hist 4294967295", "n_hist", n_hist="4294967295")
    bad_ckpt("hardening: checkpoint n_hist -1", "n_hist", n_hist="-1")
    bad_ckpt("hardening: checkpoint lr_scale banana (trained at rate 0)", "lr_scale", lr_scale="banana")
    bad_ckpt("hardening: checkpoint lr_scale nan", "lr_scale", lr_scale="nan")
    bad_ckpt("hardening: checkpoint lr_scale 0", "lr_scale", lr_scale="0")
    bad_ckpt("hardening: checkpoint step LONG_MAX", "step", step="9223372036854775807")
    bad_ckpt("hardening: checkpoint step past total_steps", "total_steps", step="9", total_steps="5")
    bad_ckpt("hardening: checkpoint rng -1", "rng", rng="-1")
    bad_ckpt("hardening: checkpoint opt.lr nan names the checkpoint", ["checkpoint metadata"], **{"opt.lr": "nan"})
    bad_ckpt("hardening: checkpoint opt.guard-every 4294967296", ["checkpoint metadata"],
             **{"opt.guard-every": "4294967296"})

    # (7) a run killed after logging steps it did not checkpoint, and its
    # temporary files: the resumed run logs each step once and cleans up
    dead = subprocess.Popen(["true"])
    dead.wait()
    stale = os.path.join(run_dir, "ckpt.safetensors.tmp.%d" % dead.pid)
    live = os.path.join(run_dir, "ckpt.safetensors.tmp.%d" % os.getpid())
    for f in (stale, live):
        with open(f, "wb") as g:
            g.write(b"half a checkpoint")
    with open(os.path.join(run_dir, "log.csv"), "w") as f:
        f.write("step,seconds,loss\n1,0.1,0.5\n2,0.2,0.5\n3,0.3,0.5\n4,0.4,0.5\n5,0.5,0.")

    def resumed_ok():
        steps = [l.split(",")[0] for l in open(os.path.join(run_dir, "log.csv")).read().splitlines()[1:]]
        if steps != ["1", "2", "3", "4", "5"]:
            return "log.csv steps %s (expected 1..5, each once)" % steps
        if os.path.exists(stale):
            return "the stale temporary %s is still there" % os.path.basename(stale)
        if not os.path.exists(live):
            return "the temporary of a live process was removed"
        return None
    R.expect_ok("hardening: resume after a kill: log.csv cut to the checkpoint, stale .tmp.PID removed",
                resume + ["--resume", ck], resumed_ok)
    os.remove(live)


CKPT_META = {"step": "3", "total_steps": "5", "rng": "12345", "lr_scale": "1", "n_hist": "3",
             "opt.lr": "0.0005", "opt.warmup": "2", "opt.guard-every": "1", "opt.crop": "8", "opt.clips": "0",
             "opt.images": "1", "opt.seed": "1"}


def ckpt_from_model(R, tensors, meta, path, extra=None):
    """a training checkpoint (SPEC 5) made from the tiny model: zero moments,
    a short guard history, the metadata of a run at step 3 of 5"""
    m = dict(meta)
    m.update(CKPT_META if extra is None else extra)
    ts = list(tensors)
    for pre in ("optim.m.", "optim.v."):
        ts += [(pre + n, "F32", s, bytes(len(b))) for n, d, s, b in tensors]
    for n in ("optim.hist.loss", "optim.hist.gnorm", "optim.hist.act"):
        ts.append((n, "F32", [64], f32([0.5, 0.25, 0.125] + [0.0] * 61)))
    with open(path, "wb") as f:
        f.write(st_build(ts, m))
    return path


def summary(R):
    fails = [r for r in R.results if not r[1]]
    print("%s: %d of %d cases passed (%s)" % ("PASS" if not fails else "FAIL", len(R.results) - len(fails),
                                              len(R.results), os.path.basename(R.exe)))
    return 1 if fails else 0


if __name__ == "__main__":
    sys.exit(main())
