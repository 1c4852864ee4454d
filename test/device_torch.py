#!/usr/bin/python3
"""device_torch.py: the PyTorch side of test/device_check.sh on a GPU.

Times, in float32 on one device (CUDA when there is one), the three rows that
issue 12 asks the OpenCL path to be measured against, on the project's own
PyTorch ports (test/ref.py for ivae, test/wan_ref.py for the Wan 2.1 VAE,
imported, not copied):

  grad   ivae-s, one 3 x T x H x W clip: SPEC 4's loss, forward and backward
         (as `ivae grad`: the gradient of every parameter and of x)
  train  ivae-s, training steps on ivae train's batch (--clips clips of
         --frames frames and --images images, --crop pixels square): loss,
         backward and AdamW, as `ivae train --config ivae-s --crop N`
  wan    the Wan 2.1 VAE's streamed decode of a 1 + 4 k frame clip
         (latent 16 x (1 + k) x H/8 x W/8), random weights of width --dim

  /usr/bin/python3 test/device_torch.py [--device cuda|cpu] [--what grad,train,wan] [sizes]

Each row: one untimed warm-up call (cuDNN picks its algorithms there), then
--runs timed calls, each ended by torch.cuda.synchronize(); it prints one
line per row, "torch ROW seconds=MEDIAN ...", that device_check.sh reads.
TF32 is off (torch.backends.{cudnn,cuda.matmul}.allow_tf32 = False): these
are float32 numbers, as ivae's are; cudnn.benchmark is on, PyTorch's fastest
float32 choice. The timing does not depend on the weights' values.
"""

import argparse
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)


def parse_size(s):
    t, h, w = (int(v) for v in s.lower().split("x"))
    return t, h, w


def timed(torch, dev, call, runs):
    """median seconds of `runs` calls after one warm-up, and the warm-up's"""
    def sync():
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
    t0 = time.perf_counter()
    call()
    sync()
    first = time.perf_counter() - t0
    samples = []
    for _ in range(runs):
        t0 = time.perf_counter()
        call()
        sync()
        samples.append(time.perf_counter() - t0)
    samples.sort()
    n = len(samples)
    med = samples[n // 2] if n % 2 else 0.5 * (samples[n // 2 - 1] + samples[n // 2])
    return med, first


def ivae_model(torch, ref, dev, config, seed):
    model = ref.build_model(config, torch.float32)
    ref.init_default(model, seed)  # SPEC 6, as ivae init
    return model.to(dev)


FLAGS = dict(w_image=1.0, w_video=1.0, beta=1e-6, w_opl=0.0, ref_shape=(17, 64, 64))  # SPEC 4's defaults


def row_grad(torch, ref, dev, a):
    model = ivae_model(torch, ref, dev, a.config, a.seed)
    g = torch.Generator().manual_seed(a.seed + 1000)
    T, H, W = a.clip
    x = ((torch.rand((3, T, H, W), generator=g) * 2 - 1).to(dev)).requires_grad_(True)
    eps = torch.randn(model.latent_shape((3, T, H, W)), generator=g).to(dev)

    def call():
        model.zero_grad(set_to_none=True)
        x.grad = None
        out = ref.forward_loss(model, [x], [eps], FLAGS)
        out["loss"].backward()
    med, first = timed(torch, dev, call, a.runs)
    print(f"torch grad config={a.config} clip=3x{T}x{H}x{W} seconds={med:.4f} first={first:.4f} runs={a.runs}",
          flush=True)


def row_train(torch, ref, dev, a):
    model = ivae_model(torch, ref, dev, a.config, a.seed)
    opt = torch.optim.AdamW(model.parameters(), lr=5e-4, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0)
    g = torch.Generator().manual_seed(a.seed + 2000)
    n = a.crop
    shapes = [(3, a.frames, n, n)] * a.clips + [(3, 1, n, n)] * a.images
    xs = [((torch.rand(s, generator=g) * 2 - 1).to(dev)).requires_grad_(True) for s in shapes]
    epss = [torch.randn(model.latent_shape(s), generator=g).to(dev) for s in shapes]

    def call():
        opt.zero_grad(set_to_none=True)
        for x in xs:
            x.grad = None
        out = ref.forward_loss(model, xs, epss, FLAGS)
        out["loss"].backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1e9)  # the global norm ivae's guards compute
        opt.step()
    med, first = timed(torch, dev, call, a.runs)
    B = len(shapes)
    print(f"torch train config={a.config} batch={a.clips}x3x{a.frames}x{n}x{n}+{a.images}x3x1x{n}x{n} "
          f"seconds={med:.4f} samples_per_s={B / med:.2f} first={first:.4f} runs={a.runs}", flush=True)


def row_wan(torch, dev, a):
    import wan_ref
    P = {k: v.to(dev) for k, v in wan_ref.init_params(a.dim, 16, 1).items()}  # float32
    T, H, W = a.wan
    wan_ref.check_frames(T)
    g = torch.Generator().manual_seed(1)
    zl = torch.randn((1, 16, 1 + (T - 1) // 4, H // 8, W // 8), generator=g).to(dev)

    def call():
        with torch.no_grad():
            wan_ref.decode(P, a.dim, 16, zl)
    med, first = timed(torch, dev, call, a.runs)
    print(f"torch wan_decode dim={a.dim} clip=3x{T}x{H}x{W} seconds={med:.4f} fps={T / med:.3f} "
          f"first={first:.4f} runs={a.runs}", flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("--device", default=None, help="cuda (default when there is one) or cpu")
    ap.add_argument("--what", default="grad,train,wan", help="comma list of grad, train, wan")
    ap.add_argument("--config", default="ivae-s")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--clip", type=parse_size, default=(17, 64, 64), help="grad's clip TxHxW")
    ap.add_argument("--crop", type=int, default=64, help="train: crop size")
    ap.add_argument("--clips", type=int, default=1, help="train: clips per batch")
    ap.add_argument("--frames", type=int, default=17, help="train: frames per clip")
    ap.add_argument("--images", type=int, default=8, help="train: images per batch")
    ap.add_argument("--wan", type=parse_size, default=(17, 256, 256), help="wan decode's clip TxHxW")
    ap.add_argument("--dim", type=int, default=96, help="wan: base width (released model: 96)")
    ap.add_argument("--runs", type=int, default=5, help="timed calls per row after the warm-up")
    ap.add_argument("--threads", type=int, default=0, help="CPU threads for torch (0: its default)")
    a = ap.parse_args()
    try:
        import torch
        import ref
    except ImportError as e:
        sys.exit(f"device_torch.py: no PyTorch ({e}); install python3-torch")
    if a.threads:
        torch.set_num_threads(a.threads)
    name = a.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        sys.exit("device_torch.py: --device cuda, but torch.cuda.is_available() is False")
    dev = torch.device(name)
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.benchmark = True
    what = [w for w in a.what.split(",") if w]
    for w in what:
        if w not in ("grad", "train", "wan"):
            sys.exit(f"device_torch.py: --what {w!r}: have grad, train, wan")
    gpu = torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu"
    print(f"torch version={torch.__version__} device={name} name={gpu.replace(' ', '_')} float32 tf32=off", flush=True)
    for w in what:
        if w == "grad":
            row_grad(torch, ref, dev, a)
        elif w == "train":
            row_train(torch, ref, dev, a)
        else:
            row_wan(torch, dev, a)


if __name__ == "__main__":
    main()
