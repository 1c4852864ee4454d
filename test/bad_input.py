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
    return summary(R)


def summary(R):
    fails = [r for r in R.results if not r[1]]
    print("%s: %d of %d cases passed (%s)" % ("PASS" if not fails else "FAIL", len(R.results) - len(fails),
                                              len(R.results), os.path.basename(R.exe)))
    return 1 if fails else 0


if __name__ == "__main__":
    sys.exit(main())
