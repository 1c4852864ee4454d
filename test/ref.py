#!/usr/bin/python3
"""ivae reference in PyTorch: the project's independent float64 port of SPEC.md.

It follows ../shared/SPEC.md (sections 2-6) and nothing else. It exists to
write "golden" files, the expected numbers the C code is checked against
(SPEC section 8): a model checkpoint, a batch of inputs, and the outputs, loss
and every gradient computed in float64.

Usage (run with Debian's python, the one that has torch):
  /usr/bin/python3 test/ref.py golden --config tiny  --outdir test/golden [--seed 1]
  /usr/bin/python3 test/ref.py golden --config ivae-s --outdir test/golden
  /usr/bin/python3 test/ref.py selfcheck     # finite differences, causality, ...
  /usr/bin/python3 test/ref.py count         # parameter count of every config

golden writes three safetensors files:
  NAME.model.safetensors     every parameter, F32, SPEC section 5 order, config
                             in __metadata__
  NAME.in.safetensors        x.i (3,T,H,W) and eps.i (z,T',H',W'), F32, loss
                             flags in __metadata__
  NAME.expected.safetensors  F64: loss, rec, kl; per sample mu.i, logvar.i
                             (clamped), xhat.i, grad.x.i; grad.<name> for every
                             parameter

Inputs and parameters are drawn in float32 and then widened to float64, so the
C code, which reads the float32 values, sees exactly the same numbers.

Python API (for other scripts):
  build_model(config, dtype)              IVAE from a config name or dict
  init_nontrivial(model, seed)            SPEC section 8 random parameters
  init_default(model)                     SPEC section 6 initialisation
  load_safetensors(path) -> (tensors, metadata)
  save_safetensors(path, tensors, metadata, dtype)
  save_model(path, model) / load_model(path, dtype)
  forward_loss(model, xs, epss, flags)    SPEC section 4 loss, per sample
  spec_param_names(config)                SPEC section 5 names, in order
"""

import argparse
import json
import math
import os
import sys
import time

# The float64 sums of the BLAS behind torch depend on its thread count (at
# the 1e-20 level on a nearly cancelling gradient), and the committed golden
# files are compared byte for byte: two threads, whatever the caller's
# OMP_NUM_THREADS (OpenBLAS reads this before it reads that, once, at load).
os.environ["OPENBLAS_NUM_THREADS"] = "2"

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

# ----------------------------------------------------------------------------
# Configs (SPEC section 3). C_s = base_ch * ch_mult[s]; S = len(ch_mult);
# temporal[s] says whether transition s (after encoder stage s) halves time.

CONFIGS = {
    # SPEC section 3: the default model, 9,398,107 parameters.
    "ivae-s": dict(base_ch=32, ch_mult=[1, 2, 4, 4], n_res=1, z_ch=16,
                   temporal=[0, 1, 1], attn="frame"),
    # SPEC section 3: same at C0 = 16, 2,394,059 parameters.
    "ivae-xs": dict(base_ch=16, ch_mult=[1, 2, 4, 4], n_res=1, z_ch=16,
                    temporal=[0, 1, 1], attn="frame"),
    # A small model for quick golden tests: n_res 2 and causal attention, so
    # the paths the default config does not take are also checked.
    "tiny": dict(base_ch=8, ch_mult=[1, 2, 2], n_res=2, z_ch=4,
                 temporal=[1, 0], attn="causal"),
    # SPEC 9's variants on a small model: GroupNorm residual blocks and
    # attention, the loss normalised by each sample's own size, images as
    # static 5-frame clips ...
    "tiny-gn": dict(base_ch=8, ch_mult=[2, 2, 4], n_res=1, z_ch=4,
                    temporal=[1, 1], attn="frame", block_norm="groupnorm",
                    attn_norm="groupnorm", image_mode="static", loss_norm="mean"),
    # ... and attention without normalisation, the loss summed
    "tiny-none": dict(base_ch=8, ch_mult=[1, 2, 2], n_res=1, z_ch=4,
                      temporal=[1, 0], attn="causal", attn_norm="none", loss_norm="sum"),
}

# SPEC 9: the variants and their defaults (the first of each list)
VARIANTS = dict(block_norm=["smc", "groupnorm"], attn_norm=["pixelnorm", "groupnorm", "none"],
                image_mode=["causal", "static"], loss_norm=["ref", "sum", "mean"])

# Golden batches and loss flags (SPEC section 8 for ivae-s).
GOLDEN = {
    "tiny": dict(
        shapes=[(3, 5, 16, 16), (3, 1, 16, 16), (3, 3, 8, 12)],
        flags=dict(w_image=0.7, w_video=1.3, beta=0.01, w_opl=0.1,
                   ref_shape=(5, 16, 16)),
        # With standard normal eps no latent position is 3 std-norms from its
        # frame's mean, so the outlier penalty and its gradient would be 0.
        # Plant a few outliers in eps: (sample, latent frame, h, w, value in
        # every channel). Frame 1 of sample 0 and all of sample 2 (only 6
        # positions per frame, where an outlier is impossible: max distance is
        # sqrt(5) std-norms) stay inactive.
        eps_outliers=[(0, 0, 1, 2, 8.0), (0, 2, 3, 0, -8.0), (1, 0, 2, 1, 8.0)]),
    "tiny-gn": dict(
        shapes=[(3, 9, 16, 16), (3, 1, 16, 16), (3, 5, 8, 16)],
        flags=dict(w_image=0.7, w_video=1.3, beta=0.01, w_opl=0.1, ref_shape=(5, 16, 16)),
        eps_outliers=[(0, 0, 1, 2, 8.0), (1, 1, 2, 1, -8.0)]),
    "tiny-none": dict(
        shapes=[(3, 5, 16, 16), (3, 1, 16, 16)],
        flags=dict(w_image=0.7, w_video=1.3, beta=0.01, w_opl=0.0, ref_shape=(5, 16, 16))),
    "ivae-s": dict(
        shapes=[(3, 9, 32, 32), (3, 1, 32, 32)],
        # SPEC section 4 defaults.
        flags=dict(w_image=1.0, w_video=1.0, beta=1e-6, w_opl=0.0,
                   ref_shape=(17, 64, 64))),
}


def get_config(config):
    """A config name from CONFIGS, or a dict with the same keys."""
    if isinstance(config, str):
        if config not in CONFIGS:
            raise ValueError(f"unknown config {config!r} (have {sorted(CONFIGS)})")
        config = CONFIGS[config]
    cfg = dict(config)
    cfg["ch_mult"] = [int(m) for m in cfg["ch_mult"]]
    cfg["temporal"] = [int(bool(t)) for t in cfg["temporal"]]
    if len(cfg["temporal"]) != len(cfg["ch_mult"]) - 1:
        raise ValueError("temporal must have len(ch_mult) - 1 entries")
    if cfg["attn"] not in ("frame", "causal"):
        raise ValueError(f"attn must be 'frame' or 'causal', not {cfg['attn']!r}")
    for key, names in VARIANTS.items():
        cfg[key] = cfg.get(key, names[0])
        if cfg[key] not in names:
            raise ValueError(f"{key} must be one of {names}, not {cfg[key]!r}")
    return cfg


def channels(cfg):
    """C_s = C0 * m[s] for s = 0..S-1 (SPEC section 3)."""
    return [cfg["base_ch"] * m for m in cfg["ch_mult"]]


def config_metadata(cfg):
    """SPEC section 5: __metadata__ holds the config as strings."""
    return {
        "format": "ivae",
        "base_ch": str(cfg["base_ch"]),
        "ch_mult": ",".join(str(m) for m in cfg["ch_mult"]),
        "n_res": str(cfg["n_res"]),
        "z_ch": str(cfg["z_ch"]),
        "temporal": ",".join(str(t) for t in cfg["temporal"]),
        "attn": cfg["attn"],
        # SPEC 9: a variant other than the default (absent keys = defaults)
        **{k: cfg[k] for k, names in VARIANTS.items() if cfg.get(k, names[0]) != names[0]},
    }


def config_from_metadata(meta):
    if meta.get("format") != "ivae":
        raise ValueError("not an ivae checkpoint (metadata format != 'ivae')")
    ints = lambda s: [int(v) for v in s.split(",")] if s else []
    return get_config(dict(base_ch=int(meta["base_ch"]), ch_mult=ints(meta["ch_mult"]),
                           n_res=int(meta["n_res"]), z_ch=int(meta["z_ch"]),
                           temporal=ints(meta["temporal"]), attn=meta["attn"],
                           **{k: meta[k] for k in VARIANTS if k in meta}))


# ----------------------------------------------------------------------------
# Layers (SPEC section 2). Activations are (1, C, T, H, W): one sample at a
# time, with PyTorch's batch dimension of 1.

def causal_conv3d(x, weight, bias, stride=(1, 1, 1)):
    """SPEC 2.1: zero padding kt-1 frames in FRONT only, floor(kh/2) rows top
    and bottom, floor(kw/2) columns left and right; then a plain strided conv.
    T' = floor((T-1)/st) + 1."""
    kt, kh, kw = weight.shape[2:]
    # F.pad lists pairs from the last dim: (w_left, w_right, h_top, h_bottom, t_front, t_back)
    xpad = F.pad(x, (kw // 2, kw // 2, kh // 2, kh // 2, kt - 1, 0))
    return F.conv3d(xpad, weight, bias, stride=stride, padding=0)


def smc_weight(weight, scale, gain):
    """SPEC 2.2: What[o,i,k] = g * s[i] * W[o,i,k] / sqrt(sum_{i,k} (s[i] W[o,i,k])^2 + 1e-8),
    normalised per output channel o."""
    sw = scale.view(1, -1, 1, 1, 1) * weight                      # (Cout, Cin, kt, kh, kw)
    norm = torch.sqrt((sw * sw).sum(dim=(1, 2, 3, 4), keepdim=True) + 1e-8)
    return gain * sw / norm


def silu(x):
    """SPEC 2.3: x / (1 + exp(-x))."""
    return x * torch.sigmoid(x)


def pixelnorm(x):
    """SPEC 2.4: x / sqrt(mean_c x^2 + 1e-8), over the channel dim."""
    return x / torch.sqrt((x * x).mean(dim=1, keepdim=True) + 1e-8)


class GroupNorm(nn.Module):
    """SPEC 9: G = 8 groups of C/8 channels, statistics per frame over
    (C/8, H, W), population variance, eps 1e-6; weight, bias per channel."""

    def __init__(self, c, groups=8):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(c))
        self.bias = nn.Parameter(torch.zeros(c))
        self.groups = groups

    def forward(self, x):
        _, C, T, H, W = x.shape
        g = x.reshape(1, self.groups, C // self.groups, T, H, W)
        mean = g.mean(dim=(2, 4, 5), keepdim=True)
        var = ((g - mean) ** 2).mean(dim=(2, 4, 5), keepdim=True)
        y = ((g - mean) / torch.sqrt(var + 1e-6)).reshape(1, C, T, H, W)
        return y * self.weight.view(1, C, 1, 1, 1) + self.bias.view(1, C, 1, 1, 1)


class Conv(nn.Module):
    """Plain causal conv3d (SPEC 2.1). Parameters in order: weight, bias."""

    def __init__(self, cin, cout, k=(3, 3, 3), stride=(1, 1, 1)):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(cout, cin, *k))
        self.bias = nn.Parameter(torch.zeros(cout))
        self.stride = tuple(stride)

    def forward(self, x):
        return causal_conv3d(x, self.weight, self.bias, self.stride)


class SMC(nn.Module):
    """Self-modulated conv (SPEC 2.2). Parameters: weight, bias, scale, gain."""

    def __init__(self, cin, cout, k=(3, 3, 3)):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(cout, cin, *k))
        self.bias = nn.Parameter(torch.zeros(cout))
        self.scale = nn.Parameter(torch.ones(cin))
        self.gain = nn.Parameter(torch.ones(1))

    def forward(self, x):
        return causal_conv3d(x, smc_weight(self.weight, self.scale, self.gain), self.bias)


class ResBlock(nn.Module):
    """SPEC 2.5: h = smc1(silu(x)); h = smc2(silu(h)); out = shortcut(x) + h.
    shortcut is identity when Cin == Cout, else a (1,1,1) conv named 'shortcut'.
    SPEC 9, block_norm 'groupnorm': h = conv1(silu(norm1(x))); h = conv2(silu(norm2(h)))
    with plain convs."""

    def __init__(self, cin, cout, block_norm="smc"):
        super().__init__()
        gn = block_norm == "groupnorm"
        if gn:
            self.norm1 = GroupNorm(cin)
            self.norm2 = GroupNorm(cout)
        self.conv1 = Conv(cin, cout) if gn else SMC(cin, cout)
        self.conv2 = Conv(cout, cout) if gn else SMC(cout, cout)
        self.gn = gn
        self.shortcut = Conv(cin, cout, k=(1, 1, 1)) if cin != cout else None

    def forward(self, x):
        if self.gn:
            h = self.conv1(silu(self.norm1(x)))
            h = self.conv2(silu(self.norm2(h)))
        else:
            h = self.conv1(silu(x))
            h = self.conv2(silu(h))
        skip = x if self.shortcut is None else self.shortcut(x)
        return skip + h


class Attention(nn.Module):
    """SPEC 2.6: single-head attention over the tokens (t,h,w) of one sample.
    n = pixelnorm(x); [q;k;v] = qkv(n); out = x + proj(softmax(q k^T / sqrt(C)) v),
    with token p allowed to see token r when r's frame == p's frame ('frame')
    or r's frame <= p's frame ('causal')."""

    def __init__(self, c, mode, attn_norm="pixelnorm"):
        super().__init__()
        if attn_norm == "groupnorm":
            self.norm = GroupNorm(c)
        self.qkv = Conv(c, 3 * c, k=(1, 1, 1))
        self.proj = Conv(c, c, k=(1, 1, 1))
        self.mode = mode
        self.attn_norm = attn_norm

    def forward(self, x):
        _, C, T, H, W = x.shape
        # SPEC 9: the input normalised by pixelnorm (default), GroupNorm or nothing
        n = pixelnorm(x) if self.attn_norm == "pixelnorm" else self.norm(x) if self.attn_norm == "groupnorm" else x
        qkv = self.qkv(n)                                    # (1, 3C, T, H, W)
        # token p = (t*H + h)*W + w; q = channels 0..C-1, k = C..2C-1, v = 2C..3C-1
        tokens = qkv.reshape(3 * C, T * H * W).t()          # (N, 3C)
        q, k, v = tokens[:, :C], tokens[:, C:2 * C], tokens[:, 2 * C:]
        scores = q @ k.t() / math.sqrt(C)                    # (N, N): [p, r]
        frame = torch.arange(T).repeat_interleave(H * W)     # frame of each token
        if self.mode == "frame":
            allowed = frame[:, None] == frame[None, :]
        else:  # causal
            allowed = frame[None, :] <= frame[:, None]
        scores = scores.masked_fill(~allowed, float("-inf"))
        o = torch.softmax(scores, dim=1) @ v                 # (N, C)
        o = o.t().reshape(1, C, T, H, W)
        return x + self.proj(o)


class Down(Conv):
    """SPEC 2.7: plain conv3d C -> C, (3,3,3), stride (2 if temporal else 1, 2, 2)."""

    def __init__(self, c, temporal):
        super().__init__(c, c, stride=(2 if temporal else 1, 2, 2))


class Up(Conv):
    """SPEC 2.8: nearest 2x2 in space; if temporal, every frame twice and the
    first frame of the result dropped (T -> 2T-1); then conv3d C -> C, (3,3,3)."""

    def __init__(self, c, temporal):
        super().__init__(c, c)
        self.temporal = bool(temporal)

    def forward(self, x):
        x = x.repeat_interleave(2, dim=3).repeat_interleave(2, dim=4)
        if self.temporal:
            x = x.repeat_interleave(2, dim=2)[:, :, 1:]
        return super().forward(x)


# ----------------------------------------------------------------------------
# The model (SPEC section 3).

class Mid(nn.Module):
    """SPEC 3: mid = res(C), attn(C), res(C). Names mid.res.{0,1}, mid.attn."""

    def __init__(self, c, mode, block_norm="smc", attn_norm="pixelnorm"):
        super().__init__()
        self.res = nn.ModuleList([ResBlock(c, c, block_norm), ResBlock(c, c, block_norm)])
        self.attn = Attention(c, mode, attn_norm)

    def forward(self, x):
        return self.res[1](self.attn(self.res[0](x)))


class Stage(nn.Module):
    """A list of res blocks, then optionally a 'down' or an 'up' resampler."""

    def __init__(self, blocks, down=None, up=None):
        super().__init__()
        self.res = nn.ModuleList(blocks)
        if down is not None:
            self.down = down
        if up is not None:
            self.up = up

    def forward(self, x):
        for block in self.res:
            x = block(x)
        if hasattr(self, "down"):
            x = self.down(x)
        if hasattr(self, "up"):
            x = self.up(x)
        return x


class Encoder(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        C, S, n = channels(cfg), len(cfg["ch_mult"]), cfg["n_res"]
        # 1. conv_in: conv3d 3 -> C_0, (3,3,3)
        self.conv_in = Conv(3, C[0])
        # 2. stage s: res(C_{s-1} -> C_s) (C_{-1} = C_0), n_res-1 x res(C_s -> C_s);
        #    if s < S-1: down(C_s, temporal[s])
        stages = []
        for s in range(S):
            cin = C[s - 1] if s > 0 else C[0]
            bn = cfg["block_norm"]
            blocks = [ResBlock(cin, C[s], bn)] + [ResBlock(C[s], C[s], bn) for _ in range(n - 1)]
            down = Down(C[s], cfg["temporal"][s]) if s < S - 1 else None
            stages.append(Stage(blocks, down=down))
        self.stages = nn.ModuleList(stages)
        # 3. mid
        self.mid = Mid(C[-1], cfg["attn"], cfg["block_norm"], cfg["attn_norm"])
        # 4. conv_out: silu, then conv3d C_{S-1} -> 2z, (3,3,3)
        self.conv_out = Conv(C[-1], 2 * cfg["z_ch"])

    def forward(self, x):
        h = self.conv_in(x)
        for stage in self.stages:
            h = stage(h)
        h = self.mid(h)
        return self.conv_out(silu(h))


class Decoder(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        C, S, n = channels(cfg), len(cfg["ch_mult"]), cfg["n_res"]
        # 1. conv_in: conv3d z -> C_{S-1}, (3,3,3)
        self.conv_in = Conv(cfg["z_ch"], C[-1])
        # 2. mid
        self.mid = Mid(C[-1], cfg["attn"], cfg["block_norm"], cfg["attn_norm"])
        # 3. for s = S-1 down to 0: res(C_{s+1} -> C_s) (C_S = C_{S-1}),
        #    n_res-1 x res(C_s -> C_s); if s > 0: up(C_s, temporal[s-1]).
        #    A ModuleDict keeps the run order S-1..0 with names stages.{s}.
        self.stages = nn.ModuleDict()
        for s in reversed(range(S)):
            cin = C[s + 1] if s + 1 < S else C[S - 1]
            bn = cfg["block_norm"]
            blocks = [ResBlock(cin, C[s], bn)] + [ResBlock(C[s], C[s], bn) for _ in range(n - 1)]
            up = Up(C[s], cfg["temporal"][s - 1]) if s > 0 else None
            self.stages[str(s)] = Stage(blocks, up=up)
        # 4. conv_out: silu, then conv3d C_0 -> 3, (3,3,3)
        self.conv_out = Conv(C[0], 3)

    def forward(self, z):
        h = self.conv_in(z)
        h = self.mid(h)
        for stage in self.stages.values():   # s = S-1, ..., 0
            h = stage(h)
        return self.conv_out(silu(h))


class IVAE(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.cfg = get_config(config)
        self.encoder = Encoder(self.cfg)
        self.decoder = Decoder(self.cfg)
        self.names = spec_param_names(self.cfg)
        assert sorted(self.names) == sorted(n for n, _ in self.named_parameters()), \
            "module names differ from SPEC section 5"

    @property
    def spec_params(self):
        """[(name, parameter)] in SPEC section 5 order (mid.attn sits between
        mid.res.0 and mid.res.1, which module registration order cannot say)."""
        have = dict(self.named_parameters())
        return [(name, have[name]) for name in self.names]

    def check_shape(self, x):
        """SPEC 1: T = 1 + k * 2^(temporal downsamples), H, W multiples of
        2^(S-1); anything else is refused."""
        if x.dim() != 4 or x.shape[0] != 3:
            raise ValueError(f"expected a (3, T, H, W) clip, got {tuple(x.shape)}")
        _, T, H, W = x.shape
        tdiv = 2 ** sum(self.cfg["temporal"])
        sdiv = 2 ** (len(self.cfg["ch_mult"]) - 1)
        if (T - 1) % tdiv or H % sdiv or W % sdiv or H == 0 or W == 0:
            raise ValueError(f"clip {T}x{H}x{W} not allowed: need T = 1 + k*{tdiv}, "
                             f"H and W multiples of {sdiv}")

    def latent_shape(self, x_shape):
        _, T, H, W = x_shape
        sdiv = 2 ** (len(self.cfg["ch_mult"]) - 1)
        return (self.cfg["z_ch"], (T - 1) // 2 ** sum(self.cfg["temporal"]) + 1,
                H // sdiv, W // sdiv)

    def encode(self, x):
        """x (3,T,H,W) -> mu, clamped logvar, raw logvar, each (z,T',H',W') (SPEC 3 step 5)."""
        self.check_shape(x)
        h = self.encoder(x[None])[0]
        z = self.cfg["z_ch"]
        mu, raw = h[:z], h[z:]
        return mu, torch.clamp(raw, -30.0, 20.0), raw

    def decode(self, z):
        return self.decoder(z[None])[0]


def spec_param_names(config):
    """Every parameter name of SPEC section 5, in the order the checkpoint
    stores them, derived from the config by SPEC section 3."""
    cfg = get_config(config)
    C, S, n = channels(cfg), len(cfg["ch_mult"]), cfg["n_res"]
    conv = lambda p: [f"{p}.weight", f"{p}.bias"]
    smc = lambda p: [f"{p}.weight", f"{p}.bias", f"{p}.scale", f"{p}.gain"]

    def res(p, cin, cout):
        sc = conv(f"{p}.shortcut") if cin != cout else []
        if cfg["block_norm"] == "groupnorm":  # SPEC 9: norm1, conv1, norm2, conv2
            return conv(f"{p}.norm1") + conv(f"{p}.conv1") + conv(f"{p}.norm2") + conv(f"{p}.conv2") + sc
        return smc(f"{p}.conv1") + smc(f"{p}.conv2") + sc

    def mid(p):
        c = C[-1]
        norm = conv(f"{p}.attn.norm") if cfg["attn_norm"] == "groupnorm" else []
        return (res(f"{p}.res.0", c, c) + norm + conv(f"{p}.attn.qkv") + conv(f"{p}.attn.proj")
                + res(f"{p}.res.1", c, c))

    names = conv("encoder.conv_in")
    for s in range(S):
        cin = C[s - 1] if s > 0 else C[0]
        for j in range(n):
            names += res(f"encoder.stages.{s}.res.{j}", cin if j == 0 else C[s], C[s])
        if s < S - 1:
            names += conv(f"encoder.stages.{s}.down")
    names += mid("encoder.mid") + conv("encoder.conv_out")
    names += conv("decoder.conv_in") + mid("decoder.mid")
    for s in reversed(range(S)):
        cin = C[s + 1] if s + 1 < S else C[S - 1]
        for j in range(n):
            names += res(f"decoder.stages.{s}.res.{j}", cin if j == 0 else C[s], C[s])
        if s > 0:
            names += conv(f"decoder.stages.{s}.up")
    names += conv("decoder.conv_out")
    return names


def build_model(config, dtype=torch.float64):
    return IVAE(config).to(dtype)


def count_params(model):
    return sum(p.numel() for _, p in model.spec_params)


# ----------------------------------------------------------------------------
# Initialisation.

def param_kind(name, block_norm="smc"):
    """'conv', 'smc', 'attn' weight, 'norm' weight (GroupNorm, SPEC 9),
    'bias', 'scale' or 'gain', from the name."""
    leaf = name.rsplit(".", 1)[1]
    if leaf in ("bias", "scale", "gain"):
        return leaf
    if name.rsplit(".", 2)[1] in ("norm", "norm1", "norm2"):
        return "norm"
    if ".attn." in name:
        return "attn"
    if name.rsplit(".", 2)[1] in ("conv1", "conv2"):
        return "smc" if block_norm == "smc" else "conv"
    return "conv"


def fan_in(w):
    """SPEC 6: fan_in = Cin*kt*kh*kw."""
    return w[0].numel()


@torch.no_grad()
def init_nontrivial(model, seed=1):
    """SPEC 8: every parameter non-trivial. Values drawn in float32 from one
    seeded generator, in SPEC section 5 order, then stored in the model:
      conv and SMC weights  U(-sqrt(3/fan_in), +sqrt(3/fan_in))
      attention qkv, proj   0.5 * U(-sqrt(3/fan_in), +sqrt(3/fan_in))  (proj non-zero)
      biases                U(-0.1, 0.1)
      SMC scale, gain       U(0.5, 1.5)
      GroupNorm weight      U(0.5, 1.5)"""
    g = torch.Generator().manual_seed(seed)
    uniform = lambda shape, lo, hi: torch.rand(shape, generator=g, dtype=torch.float32) * (hi - lo) + lo
    for name, p in model.spec_params:
        kind = param_kind(name, model.cfg["block_norm"])
        if kind in ("conv", "smc", "attn"):
            a = math.sqrt(3.0 / fan_in(p))
            v = uniform(p.shape, -a, a) * (0.5 if kind == "attn" else 1.0)
        elif kind == "bias":
            v = uniform(p.shape, -0.1, 0.1)
        else:  # scale, gain, norm
            v = uniform(p.shape, 0.5, 1.5)
        p.copy_(v)  # float32 -> model dtype, exact


@torch.no_grad()
def init_default(model, seed=1):
    """SPEC 6: plain conv weights U(+-sqrt(3/fan_in)); SMC weights
    U(+-1/sqrt(fan_in)); biases 0; SMC scale = gain = 1; attention proj
    weight and bias 0 (attention starts as the identity); qkv weight as a
    plain conv."""
    g = torch.Generator().manual_seed(seed)
    for name, p in model.spec_params:
        kind = param_kind(name, model.cfg["block_norm"])
        if kind in ("conv", "attn", "smc"):
            a = 1.0 / math.sqrt(fan_in(p)) if kind == "smc" else math.sqrt(3.0 / fan_in(p))
            p.copy_(torch.rand(p.shape, generator=g, dtype=torch.float32) * 2 * a - a)
            if ".attn.proj." in name:
                p.zero_()
        elif kind == "bias":
            p.zero_()
        else:
            p.fill_(1.0)


# ----------------------------------------------------------------------------
# safetensors I/O (SPEC section 5): u64 little-endian header length, JSON
# header {name: {dtype, shape, data_offsets}}, "__metadata__" {str: str},
# raw little-endian data. The header is padded with spaces to a multiple of 8.

_NP_DTYPE = {"F32": "<f4", "F64": "<f8", "F16": "<f2", "BF16": "<u2"}
_ITEMSIZE = {"F32": 4, "F64": 8, "F16": 2, "BF16": 2}


def save_safetensors(path, tensors, metadata=None, dtype="F32"):
    """tensors: ordered {name: tensor}; written in that order as F32 or F64."""
    assert dtype in ("F32", "F64")
    header, blobs, offset = {}, [], 0
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    for name, t in tensors.items():
        # (np.ascontiguousarray would turn a 0-dim scalar into shape [1])
        a = t.detach().cpu().double().contiguous().numpy().astype(_NP_DTYPE[dtype], order="C")
        blob = a.tobytes()
        header[name] = {"dtype": dtype, "shape": list(a.shape),
                        "data_offsets": [offset, offset + len(blob)]}
        blobs.append(blob)
        offset += len(blob)
    h = json.dumps(header, separators=(",", ":")).encode("utf-8")
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(len(h).to_bytes(8, "little"))
        f.write(h)
        for blob in blobs:
            f.write(blob)


def load_safetensors(path):
    """-> ({name: tensor}, metadata). F32 and F64 keep their dtype; F16 and
    BF16 are widened (exactly) to float32."""
    with open(path, "rb") as f:
        data = f.read()
    n = int.from_bytes(data[:8], "little")
    if n > len(data) - 8:
        raise ValueError(f"{path}: header length {n} beyond end of file")
    header = json.loads(data[8:8 + n].decode("utf-8"))
    metadata = header.pop("__metadata__", {}) or {}
    body = data[8 + n:]
    tensors = {}
    for name, info in header.items():
        dt, shape = info["dtype"], tuple(info["shape"])
        if dt not in _NP_DTYPE:
            raise ValueError(f"{path}: {name}: unsupported dtype {dt}")
        start, end = info["data_offsets"]
        if end - start != _ITEMSIZE[dt] * int(np.prod(shape)) or end > len(body):
            raise ValueError(f"{path}: {name}: bad data_offsets {start, end}")
        a = np.frombuffer(body, dtype=_NP_DTYPE[dt], count=(end - start) // _ITEMSIZE[dt],
                          offset=start)
        if dt == "BF16":   # bfloat16 is the top half of a float32
            a = (a.astype(np.uint32) << 16).view(np.float32)
        elif dt == "F16":
            a = a.astype(np.float32)
        tensors[name] = torch.from_numpy(np.array(a, dtype=a.dtype.newbyteorder("="))).reshape(shape)
    return tensors, metadata


def save_model(path, model):
    """Every parameter as F32, SPEC section 5 order, config in __metadata__."""
    save_safetensors(path, dict(model.spec_params), config_metadata(model.cfg), "F32")


def load_model(path, dtype=torch.float64):
    """A weights-only checkpoint (extra 'optim.' tensors are ignored)."""
    tensors, meta = load_safetensors(path)
    model = build_model(config_from_metadata(meta), dtype)
    with torch.no_grad():
        for name, p in model.spec_params:
            if name not in tensors or tuple(tensors[name].shape) != tuple(p.shape):
                raise ValueError(f"{path}: missing or misshapen parameter {name}")
            p.copy_(tensors[name])
    return model


def flags_metadata(flags):
    md = {k: repr(float(flags[k])) for k in ("w_image", "w_video", "beta", "w_opl")}
    md["ref_shape"] = "x".join(str(v) for v in flags["ref_shape"])
    return md


def flags_from_metadata(md):
    flags = {k: float(md[k]) for k in ("w_image", "w_video", "beta", "w_opl")}
    flags["ref_shape"] = tuple(int(v) for v in md["ref_shape"].split("x"))
    return flags


# ----------------------------------------------------------------------------
# Loss (SPEC section 4).

def outlier_penalty(z):
    """SPEC 4 (Movie Gen): z (C, T', H', W'). For each latent frame t, with
    m[c], sd[c] the mean and population std over (h, w):
      opl_t = mean_{h,w} max(||z[:,t,h,w] - m|| - 3 ||sd||, 0)   (norms over c)
    returns mean over t of opl_t."""
    dist, sd_norm = opl_distances(z)
    opl_t = torch.relu(dist - 3.0 * sd_norm).mean(dim=1)      # (T,)
    return opl_t.mean()


def opl_distances(z):
    """||z[:,t,h,w] - m|| (T, H'W') and ||sd|| (T, 1) of outlier_penalty."""
    C, T, H, W = z.shape
    zt = z.permute(1, 0, 2, 3).reshape(T, C, H * W)           # (T, C, HW)
    m = zt.mean(dim=2, keepdim=True)                          # (T, C, 1)
    sd = zt.std(dim=2, unbiased=False)                        # (T, C) population std
    dist = torch.sqrt(((zt - m) ** 2).sum(dim=1))             # (T, HW)
    sd_norm = torch.sqrt((sd ** 2).sum(dim=1, keepdim=True))  # (T, 1)
    return dist, sd_norm


def forward_loss(model, xs, epss, flags):
    """SPEC 4 on a batch given as lists (each sample may have its own shape):
      rec_i = sum|xhat_i - x_i| / N_ref,  kl_i = sum 0.5 (mu^2 + e^logvar - 1 - logvar) / N_ref
      L = (1/B) sum_i w_i (rec_i + beta kl_i + w_opl opl_i),  N_ref = 3 T_ref H_ref W_ref,
    with z_i = mu_i + exp(0.5 logvar_i) * eps_i and xhat_i = decode(z_i).
    SPEC 9 (the model's config): loss_norm 'sum' divides by 1 instead of
    N_ref, 'mean' by the sample's own element counts; image_mode 'static'
    feeds an image as 5 copies of itself (a video for w_i; x's gradient sums
    over the copies through the repeat).
    Returns a dict: loss, rec, kl (means over the batch, unweighted), and per
    sample lists mu, logvar (clamped), raw_logvar, z, xhat, opl."""
    Tr, Hr, Wr = flags["ref_shape"]
    n_ref = 3 * Tr * Hr * Wr
    B = len(xs)
    out = dict(mu=[], logvar=[], raw_logvar=[], z=[], xhat=[], opl=[])
    loss = rec_sum = kl_sum = 0.0
    for x, eps in zip(xs, epss):
        if model.cfg["image_mode"] == "static" and x.shape[1] == 1:
            x = x.repeat(1, 5, 1, 1)
        mu, logvar, raw = model.encode(x)
        n_rec = n_kl = n_ref
        if model.cfg["loss_norm"] == "sum":
            n_rec = n_kl = 1
        elif model.cfg["loss_norm"] == "mean":
            n_rec, n_kl = x.numel(), mu.numel()
        if tuple(eps.shape) != tuple(mu.shape):
            raise ValueError(f"eps shape {tuple(eps.shape)} != latent {tuple(mu.shape)}")
        z = mu + torch.exp(0.5 * logvar) * eps
        xhat = model.decode(z)
        assert xhat.shape == x.shape, (tuple(xhat.shape), tuple(x.shape))
        rec = (xhat - x).abs().sum() / n_rec
        kl = (0.5 * (mu * mu + torch.exp(logvar) - 1.0 - logvar)).sum() / n_kl
        w = flags["w_image"] if x.shape[1] == 1 else flags["w_video"]
        term = rec + flags["beta"] * kl
        opl = outlier_penalty(z) if flags["w_opl"] != 0 else torch.zeros((), dtype=z.dtype)
        term = term + flags["w_opl"] * opl
        loss = loss + w * term
        rec_sum = rec_sum + rec
        kl_sum = kl_sum + kl
        for key, val in (("mu", mu), ("logvar", logvar), ("raw_logvar", raw),
                         ("z", z), ("xhat", xhat), ("opl", opl)):
            out[key].append(val)
    out.update(loss=loss / B, rec=rec_sum / B, kl=kl_sum / B)
    return out


# ----------------------------------------------------------------------------
# Golden files.

def make_inputs(model, shapes, seed, eps_outliers=()):
    """x.i ~ U(-1, 1), eps.i ~ N(0, 1), float32, from a generator seeded with
    seed + 1000 (independent of the parameters' generator); then
    eps[i][:, t, h, w] = value for each (i, t, h, w, value) in eps_outliers."""
    g = torch.Generator().manual_seed(seed + 1000)
    xs = [torch.rand(s, generator=g, dtype=torch.float32) * 2 - 1 for s in shapes]
    for x in xs:
        model.check_shape(x)
    # SPEC 9: a static image's noise has its 5-frame clip's latent shape
    lat = lambda s: model.latent_shape((3, 5, s[2], s[3]) if model.cfg["image_mode"] == "static" and s[1] == 1 else s)
    epss = [torch.randn(lat(s), generator=g, dtype=torch.float32) for s in shapes]
    for i, t, h, w, value in eps_outliers:
        epss[i][:, t, h, w] = value
    return xs, epss


def golden(name, outdir, seed=1):
    spec = GOLDEN[name]
    flags = spec["flags"]
    t0 = time.time()
    model = build_model(name, torch.float32)
    init_nontrivial(model, seed)
    xs32, epss32 = make_inputs(model, spec["shapes"], seed, spec.get("eps_outliers", ()))
    os.makedirs(outdir, exist_ok=True)
    save_model(os.path.join(outdir, f"{name}.model.safetensors"), model)
    inputs = {f"x.{i}": x for i, x in enumerate(xs32)}
    inputs.update({f"eps.{i}": e for i, e in enumerate(epss32)})
    save_safetensors(os.path.join(outdir, f"{name}.in.safetensors"), inputs,
                     flags_metadata(flags), "F32")

    # float64 from here on: the same float32 values, widened exactly
    model = model.double()
    xs = [x.double().requires_grad_(True) for x in xs32]
    epss = [e.double() for e in epss32]
    t1 = time.time()
    out = forward_loss(model, xs, epss, flags)
    out["loss"].backward()
    t2 = time.time()

    expected = {"loss": out["loss"], "rec": out["rec"], "kl": out["kl"]}
    for i in range(len(xs)):
        expected[f"mu.{i}"] = out["mu"][i]
        expected[f"logvar.{i}"] = out["logvar"][i]
        expected[f"xhat.{i}"] = out["xhat"][i]
        expected[f"grad.x.{i}"] = xs[i].grad
    for pname, p in model.spec_params:
        expected[f"grad.{pname}"] = p.grad
    save_safetensors(os.path.join(outdir, f"{name}.expected.safetensors"), expected,
                     {"format": "ivae-golden", "config": name, "seed": str(seed)}, "F64")
    print_summary(name, model, out, xs, flags, t2 - t1, time.time() - t0)
    return out


def print_summary(name, model, out, xs, flags, t_fwdbwd, t_total):
    raw = torch.cat([r.flatten() for r in out["raw_logvar"]]).detach()
    mu = torch.cat([m.flatten() for m in out["mu"]]).detach()
    xhat_max = max(x.detach().abs().max().item() for x in out["xhat"])
    outside = ((raw < -30) | (raw > 20)).double().mean().item()
    print(f"config {name}: {count_params(model):,} parameters, "
          f"samples {[tuple(x.shape) for x in xs]}")
    print(f"  loss {out['loss'].item():.17g}  rec {out['rec'].item():.17g}  "
          f"kl {out['kl'].item():.17g}")
    # How close the kinks are: a float32 twin could take the other side of a
    # kink only where these margins are tiny.
    print(f"  margin: min|xhat - x| "
          f"{min((xh - x).detach().abs().min().item() for xh, x in zip(out['xhat'], xs)):.3g}")
    if flags["w_opl"] != 0:
        gaps = [opl_distances(z.detach()) for z in out["z"]]
        gaps = torch.cat([(d - 3 * s).flatten() / s.max() for d, s in gaps])
        print(f"  opl per sample {[round(o.item(), 6) for o in out['opl']]}; "
              f"{int((gaps > 0).sum())} of {gaps.numel()} terms active; margin "
              f"min|dist - 3||sd||| / ||sd|| {gaps.abs().min().item():.3g}")
    print(f"  max|mu| {mu.abs().max().item():.4g}  raw logvar in "
          f"[{raw.min().item():.4g}, {raw.max().item():.4g}], outside [-30,20]: "
          f"{outside:.3g}  max|xhat| {xhat_max:.4g}")
    grad_max = max(p.grad.abs().max().item() for _, p in model.spec_params)
    print(f"  max|grad param| {grad_max:.4g}  max|grad x| "
          f"{max(x.grad.abs().max().item() for x in xs):.4g}")
    print(f"  time: forward+backward {t_fwdbwd:.2f} s, total {t_total:.2f} s")


# ----------------------------------------------------------------------------
# Self-checks: autograd vs finite differences, and the properties SPEC 2.1 and
# 2.6 promise (causality, image == first frame of a video).

def selfcheck(seed=1):
    torch.manual_seed(0)
    ok = True

    def report(what, err, tol):
        nonlocal ok
        good = err <= tol
        ok &= good
        print(f"  {'OK ' if good else 'BAD'} {what}: {err:.3g} (tol {tol:g})")

    print("causal conv3d vs SPEC 2.1's sum formula (stride 2,2,2, kernel 3x3x2):")
    x = torch.randn(1, 2, 5, 6, 7, dtype=torch.float64)
    w = torch.randn(3, 2, 3, 3, 2, dtype=torch.float64)
    b = torch.randn(3, dtype=torch.float64)
    report("max|diff|", (causal_conv3d(x, w, b, (2, 2, 2)) - naive_conv3d(x, w, b, (2, 2, 2)))
           .abs().max().item(), 1e-12)

    print("attention vs SPEC 2.6 written out token by token:")
    for mode in ("frame", "causal"):
        att = Attention(4, mode).double()
        with torch.no_grad():
            for p in att.parameters():
                p.normal_()
            x = torch.randn(1, 4, 3, 2, 3, dtype=torch.float64)
            report(mode, (att(x) - naive_attention(att, x)).abs().max().item(), 1e-12)

    print("upsample vs SPEC 2.8 by index (T -> 2T-1, frame u <- input frame ceil(u/2)):")
    up = Up(2, temporal=1).double()
    with torch.no_grad():
        up.weight.zero_()
        up.weight[:, :, 2, 1, 1] = torch.eye(2)     # conv = identity on the current frame
        up.bias.zero_()
        x = torch.randn(1, 2, 3, 2, 2, dtype=torch.float64)
        y = up(x)
        want = torch.stack([x[:, :, (u + 1) // 2] for u in range(5)], dim=2)
        want = want.repeat_interleave(2, dim=3).repeat_interleave(2, dim=4)
        report("max|diff|", (y - want).abs().max().item(), 0)

    model = build_model("tiny", torch.float64)
    init_nontrivial(model, seed)
    flags = GOLDEN["tiny"]["flags"]
    xs, epss = make_inputs(model, GOLDEN["tiny"]["shapes"], seed, GOLDEN["tiny"]["eps_outliers"])
    xs = [x.double() for x in xs]
    epss = [e.double() for e in epss]

    print("causality: encode(video)[:, 0] == encode(first frame); changing later "
          "frames leaves latent frame 0 alone")
    with torch.no_grad():
        mu_v = model.encode(xs[0])[0]
        mu_i = model.encode(xs[0][:, :1])[0]
        report("image vs frame 0", (mu_v[:, :1] - mu_i).abs().max().item(), 1e-12)
        x2 = xs[0].clone()
        x2[:, 1:] += torch.randn_like(x2[:, 1:])
        report("perturbed later frames", (model.encode(x2)[0][:, 0] - mu_v[:, 0])
               .abs().max().item(), 1e-12)
        zlat = torch.randn(model.latent_shape(xs[0].shape), dtype=torch.float64)
        report("decode: frame 0 from latent frame 0 alone",
               (model.decode(zlat)[:, 0] - model.decode(zlat[:, :1])[:, 0]).abs().max().item(),
               1e-12)

    print("checkpoint round trip:")
    path = "/tmp/ivae_ref_selfcheck.safetensors"
    save_model(path, model)
    m2 = load_model(path)
    report("max|param diff|", max((p - q).abs().max().item()
                                  for (_, p), (_, q) in zip(model.spec_params, m2.spec_params)), 0)
    os.remove(path)

    print("autograd vs central finite differences (float64, h = 1e-6), tiny config:")
    for p in model.parameters():
        p.grad = None
    out = forward_loss(model, xs, epss, flags)
    out["loss"].backward()
    params = dict(model.spec_params)
    picks = [
        ("encoder.stages.0.res.0.conv1.gain", (0,)),
        ("encoder.stages.1.res.0.conv2.scale", (3,)),
        ("encoder.mid.res.1.conv1.gain", (0,)),
        ("encoder.mid.attn.qkv.weight", (2, 5, 0, 0, 0)),     # a q row
        ("encoder.mid.attn.qkv.weight", (17, 3, 0, 0, 0)),    # a k row
        ("encoder.mid.attn.proj.weight", (1, 4, 0, 0, 0)),
        ("decoder.mid.attn.qkv.weight", (40, 1, 0, 0, 0)),    # a v row
        ("decoder.mid.attn.proj.bias", (7,)),
        ("decoder.stages.2.res.0.conv1.scale", (2,)),
        ("decoder.stages.1.up.weight", (0, 1, 2, 1, 1)),
        ("decoder.stages.0.res.1.conv2.gain", (0,)),
        ("encoder.conv_out.bias", (5,)),                      # a logvar channel
        ("encoder.conv_out.weight", (1, 3, 2, 1, 0)),         # a mu channel
    ]
    for name, idx in picks:
        p = params[name]
        fd = finite_difference(lambda: forward_loss(model, xs, epss, flags)["loss"], p, idx)
        g = p.grad[idx].item()
        # relative error, with a floor of 1e-4 (about the size of the larger
        # gradients here) under the denominator: the finite difference of a
        # loss near 0.3 carries ~1e-11 of rounding noise.
        report(f"{name}{list(idx)}: autograd {g:.6e} fd {fd:.6e}",
               abs(g - fd) / max(abs(fd), 1e-4), 1e-6)
    print(f"  (opl per sample {[o.item() for o in out['opl']]})")
    print("selfcheck:", "PASS" if ok else "FAIL")
    return ok


def naive_conv3d(x, w, b, stride):
    """SPEC 2.1 written out as its sum, for checking causal_conv3d."""
    _, Cin, T, H, W = x.shape
    Cout, _, kt, kh, kw = w.shape
    st, sh, sw = stride
    xpad = torch.zeros(1, Cin, T + kt - 1, H + 2 * (kh // 2), W + 2 * (kw // 2), dtype=x.dtype)
    xpad[:, :, kt - 1:, kh // 2:kh // 2 + H, kw // 2:kw // 2 + W] = x
    To, Ho, Wo = (T - 1) // st + 1, (H + 2 * (kh // 2) - kh) // sh + 1, (W + 2 * (kw // 2) - kw) // sw + 1
    y = torch.zeros(1, Cout, To, Ho, Wo, dtype=x.dtype)
    for t in range(To):
        for h in range(Ho):
            for ww in range(Wo):
                patch = xpad[0, :, t * st:t * st + kt, h * sh:h * sh + kh, ww * sw:ww * sw + kw]
                y[0, :, t, h, ww] = b + (w * patch).sum(dim=(1, 2, 3, 4))
    return y


def naive_attention(att, x):
    """SPEC 2.6 token by token, for checking Attention."""
    _, C, T, H, W = x.shape
    n = x / torch.sqrt((x ** 2).mean(dim=1, keepdim=True) + 1e-8)
    qkv = torch.einsum("oi,bithw->bothw", att.qkv.weight[:, :, 0, 0, 0], n) \
        + att.qkv.bias.view(1, -1, 1, 1, 1)
    pos = [(t, h, w) for t in range(T) for h in range(H) for w in range(W)]
    o = torch.zeros(1, C, T, H, W, dtype=x.dtype)
    for p in pos:
        q = qkv[0, :C][(slice(None),) + p]
        allowed = [r for r in pos if (r[0] == p[0] if att.mode == "frame" else r[0] <= p[0])]
        s = torch.stack([q @ qkv[0, C:2 * C][(slice(None),) + r] / math.sqrt(C) for r in allowed])
        a = torch.exp(s - s.max())
        a = a / a.sum()
        o[(0, slice(None)) + p] = sum(a[j] * qkv[0, 2 * C:][(slice(None),) + r]
                                      for j, r in enumerate(allowed))
    proj = torch.einsum("oi,bithw->bothw", att.proj.weight[:, :, 0, 0, 0], o) \
        + att.proj.bias.view(1, -1, 1, 1, 1)
    return x + proj


@torch.no_grad()
def finite_difference(f, p, idx, h=1e-6):
    old = p[idx].item()
    p[idx] = old + h
    fp = f().item()
    p[idx] = old - h
    fm = f().item()
    p[idx] = old
    return (fp - fm) / (2 * h)


# ----------------------------------------------------------------------------

def main():
    torch.set_num_threads(2)
    ap = argparse.ArgumentParser(description="ivae float64 PyTorch reference (SPEC.md)")
    sub = ap.add_subparsers(dest="cmd", required=True)
    g = sub.add_parser("golden", help="write NAME.{model,in,expected}.safetensors")
    g.add_argument("--config", required=True, choices=sorted(GOLDEN))
    g.add_argument("--outdir", required=True)
    g.add_argument("--seed", type=int, default=1)
    s = sub.add_parser("selfcheck", help="finite differences and causality checks")
    s.add_argument("--seed", type=int, default=1)
    sub.add_parser("count", help="parameter count of every config")
    args = ap.parse_args()

    if args.cmd == "golden":
        golden(args.config, args.outdir, args.seed)
    elif args.cmd == "selfcheck":
        sys.exit(0 if selfcheck(args.seed) else 1)
    elif args.cmd == "count":
        for name in CONFIGS:
            print(f"{name}: {count_params(build_model(name, torch.float32)):,} parameters")


if __name__ == "__main__":
    main()
