#!/usr/bin/python3
"""Wan 2.1 VAE in PyTorch: the project's own float64 port (SPEC section 7).

Written from the published description of the model (Wan-Video/Wan2.1,
wan/modules/vae.py, and diffusers' AutoencoderKLWan); see SPEC.md section 7 for the
description the C code is written from. It exists to write golden files for
the C implementation and to measure a baseline.

Usage (Debian's python, the one that has torch):
  /usr/bin/python3 test/wan_ref.py init --dim 16 --z 16 --seed 1 M.safetensors [--layout official]
  /usr/bin/python3 test/wan_ref.py golden --model M.safetensors --frames 9 --size 64x64 \\
        --seed 1 --outdir DIR --name NAME [--latent-norm] [--trace blocks|full|none]
  /usr/bin/python3 test/wan_ref.py convert Wan2.1_VAE.pth Wan2.1_VAE.safetensors [--layout diffusers]
  /usr/bin/python3 test/wan_ref.py bench --frames 17 --size 256x256 --threads 2 --dim 96
  /usr/bin/python3 test/wan_ref.py selftest
  /usr/bin/python3 test/wan_ref.py count [--dim 96] [--z 16]
  /usr/bin/python3 test/wan_ref.py names [--dim 96]      # every tensor in both layouts

Tensors: activations are (1, C, T, H, W) (a batch of one, PyTorch's layout);
files store clips without the batch dimension, (C, T, H, W). Parameters live
in one dict keyed by diffusers names (the canonical names of this file); the
official .pth names are a renaming (official_name / diffusers_name).

Streaming: encode() runs frame chunks 1, 4, 4, ... and decode() one latent
frame at a time, each chunk through the whole network with a FeatureCache, as
the official WanVAE_.encode / decode do. encode_whole() / decode_whole() are
the same network on the whole clip at once, with the temporal rules written
out for a whole sequence; in exact arithmetic the two agree (selftest checks
it). The C code must follow the streaming rules.
"""

import argparse
import math
import os
import resource
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ref import load_safetensors, save_safetensors  # noqa: E402  (the project's safetensors I/O)

# ----------------------------------------------------------------------------
# The released configuration. Only dim (base width) and z (latent channels)
# vary; they are read from the weights' shapes.

DIM_MULT = [1, 2, 4, 4]
NUM_RES = 2                         # encoder: 2 per stage; decoder: NUM_RES + 1 = 3
TEMPORAL_DOWN = [False, True, True]  # what the official loader (_video_vae) passes;
                                     # the class default [True, True, False] is NOT the model
TEMPORAL_UP = TEMPORAL_DOWN[::-1]    # [True, True, False]
CTX_T = 2                            # frames of context a (3,.,.) causal conv needs (CACHE_T)
RMS_EPS = 1e-12                      # F.normalize: x / max(||x||_2, eps)
LOGVAR_CLAMP = (-30.0, 20.0)

# Per-channel latent statistics published with the model (WanVAE in the
# official wan/modules/vae.py; diffusers' latents_mean / latents_std). The
# diffusion model sees (mu - mean) / std.
LATENT_MEAN = [-0.7571, -0.7089, -0.9113, 0.1075, -0.1745, 0.9653, -0.1517, 1.5508,
               0.4134, -0.0715, 0.5517, -0.3632, -0.1922, -0.9497, 0.2503, -0.2921]
LATENT_STD = [2.8184, 1.4541, 2.3275, 2.6558, 1.2196, 1.7708, 2.6052, 2.0743,
              3.2687, 2.1526, 2.8652, 1.5579, 1.6382, 1.1253, 2.8251, 1.9160]


# ----------------------------------------------------------------------------
# Architecture as data: the block lists of the encoder and the decoder, each
# entry (name, kind, cin, cout). kind: 'res', 'down2d', 'down3d', 'up2d',
# 'up3d'. Names are diffusers' module paths.

def encoder_blocks(dim):
    widths = [dim * m for m in [1] + DIM_MULT]          # dim 96: 96 96 192 384 384
    blocks, n, c = [], 0, widths[0]
    for s in range(len(DIM_MULT)):
        cout = widths[s + 1]
        for _ in range(NUM_RES):
            blocks.append((f"encoder.down_blocks.{n}", "res", c, cout))
            c, n = cout, n + 1
        if s != len(DIM_MULT) - 1:
            kind = "down3d" if TEMPORAL_DOWN[s] else "down2d"
            blocks.append((f"encoder.down_blocks.{n}", kind, c, c))
            n += 1
    return blocks


def decoder_stages(dim):
    """-> list of (stage name, [res blocks], upsampler or None)."""
    widths = [dim * m for m in [DIM_MULT[-1]] + DIM_MULT[::-1]]   # dim 96: 384 384 384 192 96
    stages = []
    for s in range(len(DIM_MULT)):
        cin = widths[s] if s == 0 else widths[s] // 2    # the upsampler before halved it
        cout = widths[s + 1]
        res = []
        for j in range(NUM_RES + 1):
            res.append((f"decoder.up_blocks.{s}.resnets.{j}", "res", cin, cout))
            cin = cout
        up = None
        if s != len(DIM_MULT) - 1:
            kind = "up3d" if TEMPORAL_UP[s] else "up2d"
            up = (f"decoder.up_blocks.{s}.upsamplers.0", kind, cout, cout // 2)
        stages.append((f"decoder.up_blocks.{s}", res, up))
    return stages


def param_shapes(dim, z):
    """Every parameter, diffusers name -> shape, in a fixed order."""
    P = {}

    def conv(name, cout, cin, k):
        P[name + ".weight"] = (cout, cin) + k
        P[name + ".bias"] = (cout,)

    def res(name, cin, cout):
        P[name + ".norm1.gamma"] = (cin, 1, 1, 1)
        conv(name + ".conv1", cout, cin, (3, 3, 3))
        P[name + ".norm2.gamma"] = (cout, 1, 1, 1)
        conv(name + ".conv2", cout, cout, (3, 3, 3))
        if cin != cout:
            conv(name + ".conv_shortcut", cout, cin, (1, 1, 1))

    def mid(name, c):
        res(name + ".resnets.0", c, c)
        P[name + ".attentions.0.norm.gamma"] = (c, 1, 1)
        conv(name + ".attentions.0.to_qkv", 3 * c, c, (1, 1))
        conv(name + ".attentions.0.proj", c, c, (1, 1))
        res(name + ".resnets.1", c, c)

    def block(name, kind, cin, cout):
        if kind == "res":
            res(name, cin, cout)
        elif kind.startswith("down"):
            conv(name + ".resample.1", cin, cin, (3, 3))
            if kind == "down3d":
                conv(name + ".time_conv", cin, cin, (3, 1, 1))
        else:
            if kind == "up3d":
                conv(name + ".time_conv", 2 * cin, cin, (3, 1, 1))
            conv(name + ".resample.1", cout, cin, (3, 3))

    cz = dim * DIM_MULT[-1]
    conv("encoder.conv_in", dim, 3, (3, 3, 3))
    for b in encoder_blocks(dim):
        block(*b)
    mid("encoder.mid_block", cz)
    P["encoder.norm_out.gamma"] = (cz, 1, 1, 1)
    conv("encoder.conv_out", 2 * z, cz, (3, 3, 3))
    conv("quant_conv", 2 * z, 2 * z, (1, 1, 1))
    conv("post_quant_conv", z, z, (1, 1, 1))
    conv("decoder.conv_in", cz, z, (3, 3, 3))
    mid("decoder.mid_block", cz)
    for _, res_blocks, up in decoder_stages(dim):
        for b in res_blocks:
            block(*b)
        if up:
            block(*up)
    P["decoder.norm_out.gamma"] = (dim, 1, 1, 1)
    conv("decoder.conv_out", 3, dim, (3, 3, 3))
    return P


# ----------------------------------------------------------------------------
# The two key layouts. Diffusers (AutoencoderKLWan) is canonical here; the
# official .pth uses nn.Sequential indices. Both describe the same tensors
# with the same shapes.

_RES_OFFICIAL = {"norm1.gamma": "residual.0.gamma", "conv1": "residual.2",
                 "norm2.gamma": "residual.3.gamma", "conv2": "residual.6",
                 "conv_shortcut": "shortcut"}


def _res_suffix_to_official(rest):
    for d, o in _RES_OFFICIAL.items():
        if rest == d or rest.startswith(d + "."):
            return o + rest[len(d):]
    return rest          # resample.1.*, time_conv.* keep their names


def official_name(name):
    """diffusers parameter name -> official Wan2.1_VAE.pth name."""
    top = {"quant_conv": "conv1", "post_quant_conv": "conv2"}
    head, _, rest = name.partition(".")
    if head in top:
        return top[head] + "." + rest
    part = head                                  # encoder / decoder
    p = rest.split(".")
    if p[0] == "conv_in":
        return f"{part}.conv1." + ".".join(p[1:])
    if p[0] == "norm_out":
        return f"{part}.head.0." + ".".join(p[1:])
    if p[0] == "conv_out":
        return f"{part}.head.2." + ".".join(p[1:])
    if p[0] == "mid_block":
        idx = {"resnets.0": 0, "attentions.0": 1, "resnets.1": 2}[p[1] + "." + p[2]]
        tail = ".".join(p[3:])
        if idx != 1:
            tail = _res_suffix_to_official(tail)
        return f"{part}.middle.{idx}.{tail}"
    if p[0] == "down_blocks":
        return f"{part}.downsamples.{p[1]}." + _res_suffix_to_official(".".join(p[2:]))
    if p[0] == "up_blocks":
        s = int(p[1])
        per = NUM_RES + 2                        # 3 residual blocks + 1 upsampler per stage
        if p[2] == "resnets":
            return f"{part}.upsamples.{s * per + int(p[3])}." + _res_suffix_to_official(".".join(p[4:]))
        if p[2] == "upsamplers":
            return f"{part}.upsamples.{s * per + NUM_RES + 1}." + ".".join(p[4:])
    raise KeyError(f"no official name for {name}")


def diffusers_names_by_official(dim, z):
    return {official_name(n): n for n in param_shapes(dim, z)}


def detect_layout(names):
    if "encoder.conv_in.weight" in names:
        return "diffusers"
    if "encoder.conv1.weight" in names:
        return "official"
    raise ValueError("neither encoder.conv_in.weight (diffusers) nor encoder.conv1.weight "
                     "(official) found: not a Wan 2.1 VAE checkpoint")


def canonical_params(tensors, dtype=torch.float64):
    """Any layout -> (params keyed by diffusers names, dim, z, layout).
    dim and z come from the shapes; every name and shape is checked."""
    layout = detect_layout(tensors)
    w_in = tensors["encoder.conv_in.weight" if layout == "diffusers" else "encoder.conv1.weight"]
    w_pq = tensors["post_quant_conv.weight" if layout == "diffusers" else "conv2.weight"]
    dim, z = int(w_in.shape[0]), int(w_pq.shape[0])
    shapes = param_shapes(dim, z)
    rename = {n: n for n in shapes} if layout == "diffusers" else diffusers_names_by_official(dim, z)
    missing = [f for f in rename if f not in tensors]
    extra = [f for f in tensors if f not in rename]
    if missing or extra:
        raise ValueError(f"{layout} layout, dim {dim}, z {z}: missing {missing[:8]}"
                         f"{'...' if len(missing) > 8 else ''} extra {extra[:8]}"
                         f"{'...' if len(extra) > 8 else ''}")
    params = {}
    for fname, dname in rename.items():
        t = tensors[fname]
        if tuple(t.shape) != shapes[dname]:
            raise ValueError(f"{fname}: shape {tuple(t.shape)}, expected {shapes[dname]}")
        params[dname] = t.to(dtype)
    return params, dim, z, layout


def load_model(path, dtype=torch.float64):
    tensors, _ = load_safetensors(path)
    return canonical_params(tensors, dtype)


def save_model(path, params, dim, z, layout="diffusers"):
    out = {}
    for n in param_shapes(dim, z):
        out[n if layout == "diffusers" else official_name(n)] = params[n]
    meta = {"model": "wan2.1-vae", "dim": dim, "z": z, "layout": layout}
    save_safetensors(path, out, meta, "F32")


# ----------------------------------------------------------------------------
# Random non-trivial weights (for golden tests; SPEC 8 asks for every
# parameter to matter). Drawn in float32 from one generator in param_shapes
# order, so a layout is only a renaming of the same numbers.

def init_params(dim, z, seed):
    g = torch.Generator().manual_seed(seed)

    def u(shape, lo, hi):
        return torch.rand(shape, generator=g, dtype=torch.float32) * (hi - lo) + lo

    params = {}
    for n, shape in param_shapes(dim, z).items():
        if n.endswith(".gamma"):
            t = u(shape, 0.5, 1.5)
        elif n.endswith(".bias"):
            t = u(shape, -0.1, 0.1)
        else:
            fan_in = int(np.prod(shape[1:]))
            a = math.sqrt(3.0 / fan_in)            # variance 1/fan_in
            if n.endswith(".conv2.weight") or n.endswith(".proj.weight"):
                a *= 0.5                           # residual branches: keep the stream O(1)
            elif n.endswith(".conv_out.weight") and n.startswith("encoder"):
                a *= 0.5                           # logvar well inside the clamp
            t = u(shape, -a, a)
        params[n] = t
    return params


def count_params(dim, z):
    return sum(int(np.prod(s)) for s in param_shapes(dim, z).values())


# ----------------------------------------------------------------------------
# Layers. x is (1, C, T, H, W).

def silu(x):
    return x * torch.sigmoid(x)


def rms_norm(x, gamma):
    """x / max(||x||_2 over channels, 1e-12) * sqrt(C) * gamma, per position.
    gamma (C,1,1,1) or (C,1,1): one value per channel."""
    c = x.shape[1]
    n = torch.sqrt((x * x).sum(dim=1, keepdim=True)).clamp_min(RMS_EPS)
    g = gamma.reshape(1, c, *([1] * (x.dim() - 2)))
    return x / n * math.sqrt(c) * g


def conv3d_causal(x, w, b, front, ctx=None):
    """Stride-1 causal conv: `front` frames of time context before the first
    frame (the cached frames `ctx`, then zeros for what ctx lacks), none
    after; spatial zero padding (k-1)/2 on every side."""
    kh, kw = w.shape[3], w.shape[4]
    if ctx is not None and front > 0:
        x = torch.cat([ctx, x], dim=2)
        front -= ctx.shape[2]
    x = F.pad(x, ((kw - 1) // 2, (kw - 1) // 2, (kh - 1) // 2, (kh - 1) // 2, front, 0))
    return F.conv3d(x, w, b)


class FeatureCache:
    """Per-layer state carried from one chunk to the next, keyed by the
    layer's parameter prefix (e.g. 'encoder.down_blocks.3.conv1').
    None in place of a FeatureCache means: whole clip, no chunks."""

    def __init__(self):
        self.slot = {}


def cached_conv(P, name, x, cache):
    """A (3,3,3) (or any kt=3, padding 1) causal conv with its cache. After
    each chunk the slot holds the last CTX_T frames of this conv's input seen
    so far: the chunk's last two, or, for a one-frame chunk, the previous
    slot's last frame followed by this frame."""
    w, b = P[name + ".weight"], P[name + ".bias"]
    front = w.shape[2] - 1
    if cache is None:
        return conv3d_causal(x, w, b, front)
    prev = cache.slot.get(name)
    keep = x[:, :, -CTX_T:]
    if keep.shape[2] < CTX_T and prev is not None:
        keep = torch.cat([prev[:, :, -1:], keep], dim=2)
    y = conv3d_causal(x, w, b, front, prev)
    cache.slot[name] = keep
    return y


def per_frame(x, fn):
    """Apply a 2-D op fn((T, C, H, W)) -> (T, C', H', W') to every frame."""
    _, c, t, h, w = x.shape
    y = fn(x[0].transpose(0, 1))                      # (T, C, H, W)
    return y.transpose(0, 1).unsqueeze(0)             # (1, C', T, H', W')


def resblock(P, name, x, cache):
    """shortcut(x) + conv2(silu(norm2(conv1(silu(norm1(x)))))); shortcut is
    a 1x1x1 conv when Cin != Cout, else identity. No cache for the shortcut."""
    if name + ".conv_shortcut.weight" in P:
        sc = F.conv3d(x, P[name + ".conv_shortcut.weight"], P[name + ".conv_shortcut.bias"])
    else:
        sc = x
    h = silu(rms_norm(x, P[name + ".norm1.gamma"]))
    h = cached_conv(P, name + ".conv1", h, cache)
    h = silu(rms_norm(h, P[name + ".norm2.gamma"]))
    h = cached_conv(P, name + ".conv2", h, cache)
    return h + sc


def attention(P, name, x):
    """Single-head self-attention inside each frame (no mixing of frames):
    q, k, v = the three C-channel thirds of a 1x1 conv of the normed frame,
    softmax(q k^T / sqrt(C)) v over the H*W positions, 1x1 proj, plus x."""
    c = x.shape[1]

    def frame_attn(f):                                # (T, C, H, W)
        t, _, h, w = f.shape
        n = rms_norm(f, P[name + ".norm.gamma"])
        qkv = F.conv2d(n, P[name + ".to_qkv.weight"], P[name + ".to_qkv.bias"])
        qkv = qkv.reshape(t, 3 * c, h * w).transpose(1, 2)     # (T, HW, 3C)
        q, k, v = qkv[..., :c], qkv[..., c:2 * c], qkv[..., 2 * c:]
        a = torch.softmax(q @ k.transpose(1, 2) / math.sqrt(c), dim=-1)   # (T, HW, HW)
        o = (a @ v).transpose(1, 2).reshape(t, c, h, w)
        return F.conv2d(o, P[name + ".proj.weight"], P[name + ".proj.bias"])

    return x + per_frame(x, frame_attn)


def downsample(P, name, kind, x, cache):
    """Per frame: zero pad one column right and one row bottom, 3x3 conv
    stride 2 (no other padding). down3d then halves time with time_conv
    (kernel (3,1,1), stride 2, no padding) over [last frame before this chunk,
    this chunk]; the very first chunk passes through without it."""
    y = per_frame(x, lambda f: F.conv2d(F.pad(f, (0, 1, 0, 1)), P[name + ".resample.1.weight"],
                                        P[name + ".resample.1.bias"], stride=2))
    if kind == "down2d":
        return y
    wt, bt = P[name + ".time_conv.weight"], P[name + ".time_conv.bias"]
    if cache is None:                                 # whole clip: frame 0, then windows 0-2, 2-4, ...
        if y.shape[2] < 3:
            return y[:, :, :1]
        return torch.cat([y[:, :, :1], F.conv3d(y, wt, bt, stride=(2, 1, 1))], dim=2)
    prev = cache.slot.get(name + ".time_conv")
    if prev is None:                                  # first chunk: pass through, remember it
        cache.slot[name + ".time_conv"] = y
        return y
    cache.slot[name + ".time_conv"] = y[:, :, -1:]
    return F.conv3d(torch.cat([prev[:, :, -1:], y], dim=2), wt, bt, stride=(2, 1, 1))


def interleave_halves(y):
    """(1, 2C, T, H, W) -> (1, C, 2T, H, W): output frame 2t is channels
    0..C-1 of input frame t, frame 2t+1 is channels C..2C-1."""
    _, c2, t, h, w = y.shape
    c = c2 // 2
    return y.reshape(1, 2, c, t, h, w).permute(0, 2, 3, 1, 4, 5).reshape(1, c, 2 * t, h, w)


def upsample(P, name, kind, x, cache):
    """up3d first doubles time: time_conv (Cin -> 2 Cin, kernel (3,1,1),
    causal) and interleave_halves; the very first chunk skips it (slot set
    to 'Rep') and the second chunk's time context is zeros, not that frame.
    Then per frame: nearest x2 and a 3x3 conv (padding 1) Cin -> Cin/2."""
    if kind == "up3d":
        tn = name + ".time_conv"
        wt, bt = P[tn + ".weight"], P[tn + ".bias"]
        if cache is None:                             # whole clip: frame 0 as is, the rest doubled
            rest = x[:, :, 1:]
            if rest.shape[2] > 0:
                x = torch.cat([x[:, :, :1], interleave_halves(conv3d_causal(rest, wt, bt, 2))], dim=2)
        else:
            prev = cache.slot.get(tn)
            if prev is None:
                cache.slot[tn] = "Rep"
            else:
                keep = x[:, :, -CTX_T:]
                if keep.shape[2] < CTX_T:
                    first = torch.zeros_like(keep) if isinstance(prev, str) else prev[:, :, -1:]
                    keep = torch.cat([first, keep], dim=2)
                y = conv3d_causal(x, wt, bt, 2, None if isinstance(prev, str) else prev)
                cache.slot[tn] = keep
                x = interleave_halves(y)

    def spatial(f):
        f = f.repeat_interleave(2, dim=2).repeat_interleave(2, dim=3)   # nearest x2
        return F.conv2d(f, P[name + ".resample.1.weight"], P[name + ".resample.1.bias"], padding=1)

    return per_frame(x, spatial)


def mid_block(P, name, x, cache, rec):
    x = resblock(P, name + ".resnets.0", x, cache)
    rec(name + ".resnets.0", x, full=True)
    x = attention(P, name + ".attentions.0", x)
    rec(name + ".attentions.0", x, full=True)
    x = resblock(P, name + ".resnets.1", x, cache)
    rec(name + ".resnets.1", x, full=True)
    return x


# ----------------------------------------------------------------------------
# Encoder and decoder on one chunk (or the whole clip when cache is None).
# rec(name, tensor, full=False) records trace entries.

def _no_rec(name, x, full=False):
    pass


def encoder_forward(P, dim, x, cache, rec=_no_rec):
    x = cached_conv(P, "encoder.conv_in", x, cache)
    rec("encoder.conv_in", x)
    for name, kind, _, _ in encoder_blocks(dim):
        if kind == "res":
            x = resblock(P, name, x, cache)
        else:
            x = downsample(P, name, kind, x, cache)
        rec(name, x)
    x = mid_block(P, "encoder.mid_block", x, cache, rec)
    rec("encoder.mid_block", x)
    x = silu(rms_norm(x, P["encoder.norm_out.gamma"]))
    x = cached_conv(P, "encoder.conv_out", x, cache)
    rec("encoder.conv_out", x)
    return x


def decoder_forward(P, dim, x, cache, rec=_no_rec):
    x = cached_conv(P, "decoder.conv_in", x, cache)
    rec("decoder.conv_in", x)
    x = mid_block(P, "decoder.mid_block", x, cache, rec)
    rec("decoder.mid_block", x)
    for sname, res_blocks, up in decoder_stages(dim):
        for name, _, _, _ in res_blocks:
            x = resblock(P, name, x, cache)
            rec(name, x, full=True)
        if up:
            x = upsample(P, up[0], up[1], x, cache)
            rec(up[0], x, full=True)
        rec(sname, x)
    x = silu(rms_norm(x, P["decoder.norm_out.gamma"]))
    x = cached_conv(P, "decoder.conv_out", x, cache)
    rec("decoder.conv_out", x)
    return x


def pointwise(P, name, x):
    return F.conv3d(x, P[name + ".weight"], P[name + ".bias"])


def check_frames(t):
    if t < 1 or (t - 1) % 4:
        raise ValueError(f"{t} frames: the Wan VAE takes 1 + 4k frames "
                         "(the official code would silently drop the extra ones)")


class Trace:
    """Collects 'NAME.chunkK' -> (C, t, h, w) tensors. level: 'blocks' (the
    top-level blocks), 'full' (also every sub-block) or 'none'."""

    def __init__(self, level="blocks"):
        self.level, self.chunk, self.tensors = level, 0, {}

    def __call__(self, name, x, full=False):
        if self.level == "none" or (full and self.level != "full"):
            return
        self.tensors[f"{name}.chunk{self.chunk}"] = x[0].detach().clone()


def encode(P, dim, z, x, trace=None):
    """Streaming encode of (1, 3, T, H, W), T = 1 + 4k: chunks of 1, 4, 4, ...
    frames, one FeatureCache for the clip. -> mu, logvar (1, z, 1 + k, H/8, W/8);
    logvar is returned unclamped (as the official encode does)."""
    check_frames(x.shape[2])
    rec = trace if trace is not None else _no_rec
    cache, outs = FeatureCache(), []
    starts = [0] + list(range(1, x.shape[2], 4))
    for k, s in enumerate(starts):
        if trace is not None:
            trace.chunk = k
        h = encoder_forward(P, dim, x[:, :, s:s + (1 if k == 0 else 4)], cache, rec)
        h = pointwise(P, "quant_conv", h)              # 1x1x1: per chunk == on the concatenation
        rec("quant_conv", h)
        outs.append(h)
    h = torch.cat(outs, dim=2)
    return h[:, :z], h[:, z:]


def decode(P, dim, z, zlat, trace=None):
    """Streaming decode of (1, z, T', h, w): one latent frame per chunk ->
    (1, 3, 1 + 4 (T' - 1), 8h, 8w), raw (unclamped)."""
    rec = trace if trace is not None else _no_rec
    cache, outs = FeatureCache(), []
    for k in range(zlat.shape[2]):
        if trace is not None:
            trace.chunk = k
        h = pointwise(P, "post_quant_conv", zlat[:, :, k:k + 1])
        rec("post_quant_conv", h)
        outs.append(decoder_forward(P, dim, h, cache, rec))
    return torch.cat(outs, dim=2)


def encode_whole(P, dim, z, x):
    check_frames(x.shape[2])
    h = pointwise(P, "quant_conv", encoder_forward(P, dim, x, None))
    return h[:, :z], h[:, z:]


def decode_whole(P, dim, z, zlat):
    return decoder_forward(P, dim, pointwise(P, "post_quant_conv", zlat), None)


def latent_normalize(mu):
    m = torch.tensor(LATENT_MEAN, dtype=mu.dtype).view(1, -1, 1, 1, 1)
    s = torch.tensor(LATENT_STD, dtype=mu.dtype).view(1, -1, 1, 1, 1)
    return (mu - m) / s


def latent_denormalize(zn):
    m = torch.tensor(LATENT_MEAN, dtype=zn.dtype).view(1, -1, 1, 1, 1)
    s = torch.tensor(LATENT_STD, dtype=zn.dtype).view(1, -1, 1, 1, 1)
    return zn * s + m


# ----------------------------------------------------------------------------
# Commands

def parse_size(s):
    try:
        h, w = (int(v) for v in s.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"size {s!r}: expected HxW, e.g. 64x64")
    if h < 1 or w < 1:
        raise argparse.ArgumentTypeError(f"size {s!r}: must be positive")
    return h, w


def rel_err(a, b):
    d = (a.double() - b.double()).abs().max().item()
    m = b.double().abs().max().item()
    return d / m if m > 0 else d


def random_clip(frames, h, w, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.rand((3, frames, h, w), generator=g, dtype=torch.float32) * 2 - 1


def cmd_init(a):
    if a.dim < 1 or a.z < 1:
        sys.exit("init: --dim and --z must be positive")
    params = init_params(a.dim, a.z, a.seed)
    os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
    save_model(a.out, params, a.dim, a.z, a.layout)
    print(f"wrote {a.out}: Wan 2.1 VAE dim {a.dim} z {a.z}, {count_params(a.dim, a.z):,} "
          f"parameters, {a.layout} layout, seed {a.seed}")


def cmd_golden(a):
    dtype = getattr(torch, a.dtype)
    check_frames(a.frames)
    P, dim, z, layout = load_model(a.model, dtype)
    if a.latent_norm and z != len(LATENT_MEAN):
        sys.exit(f"golden: --latent-norm needs z = {len(LATENT_MEAN)} (the published table), model has z = {z}")
    h, w = a.size
    x32 = random_clip(a.frames, h, w, a.seed)
    x = x32.to(dtype).unsqueeze(0)
    trace = Trace(a.trace)
    t0 = time.time()
    with torch.no_grad():
        mu, logvar = encode(P, dim, z, x, trace)
        zin = mu
        if a.latent_norm:
            mu_norm = latent_normalize(mu)
            zin = latent_denormalize(mu_norm)
        xhat = decode(P, dim, z, zin, trace)
    dt = time.time() - t0
    os.makedirs(a.outdir, exist_ok=True)
    meta = {"model": os.path.basename(a.model), "dim": dim, "z": z, "layout": layout,
            "frames": a.frames, "size": f"{h}x{w}", "seed": a.seed, "dtype": a.dtype,
            "latent_norm": int(a.latent_norm)}
    base = os.path.join(a.outdir, a.name)
    save_safetensors(base + ".in.safetensors", {"x": x32}, meta, "F32")
    out = {"mu": mu[0], "logvar": logvar[0], "xhat": xhat[0]}
    if a.latent_norm:
        out["mu_norm"] = mu_norm[0]
    exp32 = dict(out)
    exp64 = {k + ".f64": v for k, v in out.items()}
    save_safetensors(base + ".expected.safetensors", exp32, meta, "F32")
    save_safetensors(base + ".expected64.safetensors", exp64, meta, "F64")
    if a.trace != "none":
        save_safetensors(base + ".trace.safetensors", trace.tensors, meta, "F32")
    lv = logvar[0]
    clamped = ((lv < LOGVAR_CLAMP[0]) | (lv > LOGVAR_CLAMP[1])).sum().item()
    print(f"golden {a.name}: dim {dim} z {z} ({layout}), x {tuple(x32.shape)} -> mu {tuple(mu[0].shape)} "
          f"-> xhat {tuple(xhat[0].shape)} in {dt:.1f} s ({a.dtype})")
    print(f"  |mu| max {mu.abs().max().item():.3g} rms {mu.pow(2).mean().sqrt().item():.3g}; logvar in "
          f"[{lv.min().item():.3g}, {lv.max().item():.3g}] ({clamped} outside the clamp); "
          f"xhat rms {xhat.pow(2).mean().sqrt().item():.3g}")
    if a.trace != "none":
        rms = [t.pow(2).mean().sqrt().item() for t in trace.tensors.values()]
        print(f"  trace: {len(trace.tensors)} tensors, rms in [{min(rms):.3g}, {max(rms):.3g}]")
    print(f"  wrote {base}.in / .expected / .expected64" + (" / .trace" if a.trace != "none" else "")
          + ".safetensors")


def cmd_convert(a):
    sd = torch.load(a.inp, map_location="cpu")
    if isinstance(sd, dict) and "state_dict" in sd and isinstance(sd["state_dict"], dict):
        sd = sd["state_dict"]
    tensors = {k: v for k, v in sd.items() if torch.is_tensor(v)}
    params, dim, z, layout = canonical_params(tensors, torch.float32)   # checks names and shapes
    save_model(a.out, params, dim, z, a.layout)
    print(f"wrote {a.out}: {len(params)} tensors, {count_params(dim, z):,} parameters, "
          f"dim {dim} z {z}, from the {layout} layout to the {a.layout} layout, F32")


def _peak_rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _bench_child(what, a, wfd):
    torch.set_num_threads(a.threads)
    h, w = a.size
    P = {k: v for k, v in init_params(a.dim, a.z, 1).items()}      # float32
    rss_weights = _peak_rss_mb()
    with torch.no_grad():
        if what == "encode":
            x = random_clip(a.frames, h, w, 1).unsqueeze(0)
            t0 = time.perf_counter()
            encode(P, a.dim, a.z, x)
        else:
            tl = 1 + (a.frames - 1) // 4
            g = torch.Generator().manual_seed(1)
            zl = torch.randn((1, a.z, tl, h // 8, w // 8), generator=g)
            t0 = time.perf_counter()
            decode(P, a.dim, a.z, zl)
        dt = time.perf_counter() - t0
    os.write(wfd, f"{dt} {rss_weights} {_peak_rss_mb()}".encode())
    os._exit(0)


def cmd_bench(a):
    check_frames(a.frames)
    h, w = a.size
    if h % 8 or w % 8:
        sys.exit("bench: --size must be a multiple of 8")
    for what in a.what.split(","):
        r, wfd = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(r)
            try:
                _bench_child(what, a, wfd)
            except BaseException as e:          # noqa: BLE001
                sys.stderr.write(f"bench {what}: {e}\n")
                os._exit(1)
        os.close(wfd)
        msg = os.read(r, 4096).decode()
        os.close(r)
        _, st = os.waitpid(pid, 0)
        if st != 0 or not msg:
            sys.exit(f"bench {what}: child failed")
        dt, rss_w, rss = (float(v) for v in msg.split())
        print(f"bench impl=wan_ref.py dtype=float32 op={what} dim={a.dim} z={a.z} frames={a.frames} "
              f"size={h}x{w} threads={a.threads} seconds={dt:.3f} fps={a.frames / dt:.4f} "
              f"peak_rss_mb={rss:.0f} weights_rss_mb={rss_w:.0f}", flush=True)


def cmd_count(a):
    n = count_params(a.dim, a.z)
    enc = sum(int(np.prod(s)) for k, s in param_shapes(a.dim, a.z).items()
              if k.startswith("encoder.") or k.startswith("quant_conv."))
    print(f"Wan 2.1 VAE dim {a.dim} z {a.z}: {n:,} parameters ({len(param_shapes(a.dim, a.z))} tensors; "
          f"encoder + quant_conv {enc:,}, decoder + post_quant_conv {n - enc:,})")


def cmd_names(a):
    for n, shape in param_shapes(a.dim, a.z).items():
        print(f"{n:56s} {official_name(n):44s} {'x'.join(str(v) for v in shape)}")


def cmd_selftest(a):
    import tempfile
    torch.set_num_threads(1)
    dtype = torch.float64
    fails = []
    t_all = time.time()

    def check(ok, what):
        print(("ok   " if ok else "FAIL ") + what, flush=True)
        if not ok:
            fails.append(what)

    # Naming: every diffusers name has exactly one official name, and back.
    for dim in (16, 96):
        shapes = param_shapes(dim, 16)
        off = [official_name(n) for n in shapes]
        check(len(set(off)) == len(off), f"dim {dim}: {len(off)} tensors, official names distinct")
    check(count_params(96, 16) == 126_892_531,
          f"dim 96 z 16: {count_params(96, 16):,} parameters (the released model: 126.9M)")

    with torch.no_grad():
        # dim 16, 64x64, T in {1, 5, 9, 13}
        P32 = init_params(16, 16, 7)
        P = {k: v.to(dtype) for k, v in P32.items()}
        clip = random_clip(13, 64, 64, 3).to(dtype).unsqueeze(0)
        mus, xhats = {}, {}
        for t in (1, 5, 9, 13):
            x = clip[:, :, :t]
            mu, lv = encode(P, 16, 16, x)
            tl = 1 + (t - 1) // 4
            check(tuple(mu.shape) == (1, 16, tl, 8, 8) and tuple(lv.shape) == (1, 16, tl, 8, 8),
                  f"dim 16 T {t:2d}: mu, logvar {tuple(mu.shape[1:])}")
            muw, lvw = encode_whole(P, 16, 16, x)
            e = max(rel_err(mu, muw), rel_err(lv, lvw))
            check(e < 1e-12, f"dim 16 T {t:2d}: streaming encode == whole-clip encode (e {e:.1e})")
            xh = decode(P, 16, 16, mu)
            check(tuple(xh.shape) == (1, 3, t, 64, 64), f"dim 16 T {t:2d}: decode -> {tuple(xh.shape[1:])}")
            xw = decode_whole(P, 16, 16, mu)
            e = rel_err(xh, xw)
            check(e < 1e-12, f"dim 16 T {t:2d}: streaming decode == whole-clip decode (e {e:.1e})")
            mus[t], xhats[t] = mu, xh
        for t in (5, 9, 13):
            tl = 1 + (t - 1) // 4
            check(torch.equal(mus[t][:, :, :1], mus[1]),
                  f"causality: latent frame 0 of T {t} == latent of the image (frame 0), bit for bit")
            check(torch.equal(mus[t][:, :, :tl - 1], mus[t - 4]),
                  f"causality: T {t} latents 0..{tl - 2} == latents of its first {t - 4} frames, bit for bit")
            check(torch.equal(xhats[t][:, :, :t - 4], decode(P, 16, 16, mus[t][:, :, :tl - 1])),
                  f"causality: decode of T {t}'s first {tl - 1} latents == first {t - 4} frames of its decode")
        # frame count rule
        try:
            encode(P, 16, 16, clip[:, :, :4])
            check(False, "T 4 refused")
        except ValueError as e:
            check("1 + 4k" in str(e), "T 4 refused with a clear error")
        # layouts: the same numbers under both key sets give the same bits
        with tempfile.TemporaryDirectory() as d:
            fd, fo = os.path.join(d, "d.safetensors"), os.path.join(d, "o.safetensors")
            save_model(fd, P32, 16, 16, "diffusers")
            save_model(fo, P32, 16, 16, "official")
            Pd, dd, zd, ld = load_model(fd)
            Po, do, zo, lo = load_model(fo)
            check((dd, zd, ld, do, zo, lo) == (16, 16, "diffusers", 16, 16, "official"),
                  "layouts detected, dim and z read from the shapes")
            x = clip[:, :, :5]
            check(torch.equal(encode(Pd, 16, 16, x)[0], encode(Po, 16, 16, x)[0]) and
                  torch.equal(encode(Pd, 16, 16, x)[0], mus[5]),
                  "diffusers and official layouts load to the same outputs, bit for bit")
            # a missing tensor is named
            tens, _ = load_safetensors(fo)
            del tens["decoder.upsamples.7.time_conv.bias"]
            try:
                canonical_params(tens)
                check(False, "a missing tensor is named")
            except ValueError as e:
                check("decoder.upsamples.7.time_conv.bias" in str(e), "a missing tensor is named")

        # dim 96 (the released width), 5 x 32 x 32
        t0 = time.time()
        P = {k: v.to(dtype) for k, v in init_params(96, 16, 11).items()}
        x = random_clip(5, 32, 32, 5).to(dtype).unsqueeze(0)
        mu, lv = encode(P, 96, 16, x)
        muw, lvw = encode_whole(P, 96, 16, x)
        check(tuple(mu.shape) == (1, 16, 2, 4, 4), f"dim 96 T 5 32x32: mu {tuple(mu.shape[1:])}")
        e = max(rel_err(mu, muw), rel_err(lv, lvw))
        check(e < 1e-12, f"dim 96 T 5: streaming encode == whole-clip encode (e {e:.1e})")
        check(torch.equal(mu[:, :, :1], encode(P, 96, 16, x[:, :, :1])[0]),
              "dim 96: latent frame 0 == latent of the image, bit for bit")
        xh = decode(P, 96, 16, mu)
        xw = decode_whole(P, 96, 16, mu)
        e = rel_err(xh, xw)
        check(tuple(xh.shape) == (1, 3, 5, 32, 32) and e < 1e-12,
              f"dim 96 T 5: decode {tuple(xh.shape[1:])}, streaming == whole-clip (e {e:.1e})")
        print(f"     (dim 96 part: {time.time() - t0:.1f} s)")

    print(f"{'FAIL' if fails else 'OK'}: selftest, {len(fails)} failures, {time.time() - t_all:.1f} s")
    sys.exit(1 if fails else 0)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="Details: SPEC.md section 7. Trace names: see golden --help.")
    sub = ap.add_subparsers(dest="cmd", required=True)

    p = sub.add_parser("init", help="random non-trivial weights as an F32 safetensors checkpoint")
    p.add_argument("--dim", type=int, default=16, help="base width (released model: 96)")
    p.add_argument("--z", type=int, default=16, help="latent channels (released model: 16)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--layout", choices=["diffusers", "official"], default="diffusers",
                   help="key names: diffusers AutoencoderKLWan (default) or the official .pth")
    p.add_argument("out", metavar="OUT.safetensors")

    p = sub.add_parser("golden", help="input, expected outputs and per-block trace for the C tests",
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       description="Writes NAME.in.safetensors (x: (3,T,H,W) F32 in [-1,1]),\n"
                       "NAME.expected.safetensors (mu, logvar [unclamped], xhat [raw decoder output],\n"
                       "mu_norm with --latent-norm; F32), NAME.expected64.safetensors (the same, F64,\n"
                       "names + '.f64') and NAME.trace.safetensors (F32): the output of every block\n"
                       "for every chunk, named '<module>.chunk<K>' (no batch dim, (C, t, h, w)):\n"
                       "  encoder.conv_in, encoder.down_blocks.N (N = 0..10), encoder.mid_block,\n"
                       "  encoder.conv_out (after norm_out, SiLU, conv_out), quant_conv: encoder chunk K\n"
                       "  (K = 0: frame 0; K >= 1: frames 4K-3..4K);\n"
                       "  post_quant_conv, decoder.conv_in, decoder.mid_block, decoder.up_blocks.S\n"
                       "  (S = 0..3, after its upsampler), decoder.conv_out: decoder chunk K (latent frame K).\n"
                       "--trace full adds <mid_block>.resnets.{0,1}, <mid_block>.attentions.0,\n"
                       "  decoder.up_blocks.S.resnets.J and decoder.up_blocks.S.upsamplers.0.")
    p.add_argument("--model", required=True)
    p.add_argument("--frames", type=int, default=5)
    p.add_argument("--size", type=parse_size, default=(32, 32), help="HxW")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--outdir", required=True)
    p.add_argument("--name", default="wan")
    p.add_argument("--latent-norm", action="store_true",
                   help="also write mu_norm = (mu - mean) / std and decode mu_norm * std + mean")
    p.add_argument("--trace", choices=["blocks", "full", "none"], default="blocks")
    p.add_argument("--dtype", choices=["float64", "float32"], default="float64")

    p = sub.add_parser("convert", help="official Wan2.1_VAE.pth -> F32 safetensors")
    p.add_argument("inp", metavar="IN.pth")
    p.add_argument("out", metavar="OUT.safetensors")
    p.add_argument("--layout", choices=["official", "diffusers"], default="official",
                   help="key names to write (default: keep the official names)")

    p = sub.add_parser("bench", help="float32 encode/decode timing and peak RSS of this port")
    p.add_argument("--frames", type=int, default=17)
    p.add_argument("--size", type=parse_size, default=(256, 256))
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--dim", type=int, default=96)
    p.add_argument("--z", type=int, default=16)
    p.add_argument("--what", default="encode,decode", help="encode, decode or both (comma list)")

    sub.add_parser("selftest", help="streaming vs whole clip, causality, shapes, layouts (< 1 min)")

    p = sub.add_parser("count", help="parameter count")
    p.add_argument("--dim", type=int, default=96)
    p.add_argument("--z", type=int, default=16)

    p = sub.add_parser("names", help="every tensor: diffusers name, official name, shape")
    p.add_argument("--dim", type=int, default=96)
    p.add_argument("--z", type=int, default=16)

    a = ap.parse_args()
    if a.cmd != "bench":
        torch.set_num_threads(1)
    try:
        {"init": cmd_init, "golden": cmd_golden, "convert": cmd_convert, "bench": cmd_bench,
         "selftest": cmd_selftest, "count": cmd_count, "names": cmd_names}[a.cmd](a)
    except (ValueError, OSError) as e:
        sys.exit(f"wan_ref.py {a.cmd}: {e}")


if __name__ == "__main__":
    main()
