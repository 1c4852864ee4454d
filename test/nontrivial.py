#!/usr/bin/env python3
"""test/nontrivial.py IN.safetensors OUT.safetensors [SEED]

Makes every parameter of an ivae checkpoint non-trivial, as SPEC 8 asks of
an agreement test (at the default initialisation the attention projection
is zero, so attention gradients vanish and a test proves nothing about
them): biases U(-0.1, 0.1), SMC scales and gains and GroupNorm weights
U(0.5, 1.5), attention
projection weights 0.5 * U(-sqrt(3/fan_in), sqrt(3/fan_in)); the other
weights keep their (random) values. The same distributions as
test/ref.py's init_nontrivial, from Python's own generator: plain Python,
no numpy or torch, so the OpenCL tests run wherever python3 does. The
checksum in the metadata (data_crc32, SPEC 5) is updated to the new data.
"""
import json
import math
import random
import struct
import sys
import zlib


def main():
    if len(sys.argv) not in (3, 4):
        sys.exit(__doc__.strip().splitlines()[0])
    src, dst = sys.argv[1], sys.argv[2]
    rng = random.Random(int(sys.argv[3]) if len(sys.argv) == 4 else 1)
    data = bytearray(open(src, "rb").read())
    (n,) = struct.unpack_from("<Q", data, 0)
    header = json.loads(data[8:8 + n])
    base = 8 + n
    for name, t in header.items():
        if name == "__metadata__":
            continue
        if t["dtype"] != "F32":
            sys.exit(f"{src}: {name} is {t['dtype']}, expected F32 (a checkpoint ivae wrote)")
        begin, end = t["data_offsets"]
        count = (end - begin) // 4
        if name.endswith(".bias"):
            vals = [rng.uniform(-0.1, 0.1) for _ in range(count)]
        elif name.endswith(".scale") or name.endswith(".gain") or (len(t["shape"]) == 1 and name.endswith(".weight")):
            # (1-D weights: the GroupNorm weights of SPEC 9's variants)
            vals = [rng.uniform(0.5, 1.5) for _ in range(count)]
        elif ".attn.proj." in name and name.endswith(".weight"):
            a = math.sqrt(3.0 / (count // t["shape"][0]))
            vals = [0.5 * rng.uniform(-a, a) for _ in range(count)]
        else:
            continue
        struct.pack_into(f"<{count}f", data, base + begin, *vals)
    # the data's checksum (SPEC 5), rewritten in place: 8 hex digits either way
    old = header.get("__metadata__", {}).get("data_crc32")
    if old is not None:
        key = b'"data_crc32":"' + old.encode() + b'"'
        at = data.find(key, 8, base)
        if at < 0:
            sys.exit(f"{src}: cannot find the data_crc32 entry in the header")
        new = "%08x" % zlib.crc32(bytes(data[base:]))
        data[at + len(key) - 9:at + len(key) - 1] = new.encode()
    open(dst, "wb").write(data)


if __name__ == "__main__":
    main()
