#!/usr/bin/python3
"""bench_torch.py: the PyTorch side of test/bench (`make bench`).

test/bench starts this once as a server and, right after timing a row in C,
asks for the same row here, so that both sides of each ratio are measured
seconds apart on a shared machine. Everything is float32 on the model of
test/ref.py, the project's own PyTorch port of SPEC.md (imported, not copied).

  /usr/bin/python3 test/bench_torch.py --serve [--threads 2]   # the server (stdin/stdout)
  /usr/bin/python3 test/bench_torch.py conv 32 64 3 3 3 1 1 1 17 32 32 fwd   # one request, by hand

Protocol: the server first prints either
"ready torch=VER threads=N blas=PATHS openblas_pthread=yes|no" or
"notorch REASON" (and exits). Then one request per line, one answer per line:

  conv CIN COUT KT KH KW ST SH SW T H W fwd|dinp|dw  WARMUP RUNS MIN BUDGET
  train B T H W                                      WARMUP RUNS MIN BUDGET
  encode T H W                                       WARMUP RUNS MIN BUDGET
  decode TZ HZ WZ                                    WARMUP RUNS MIN BUDGET
  gemm N                                             WARMUP RUNS MIN BUDGET
  quit
  -> "ok MEDIAN_SECONDS N WARM_KEPT T1,T2,... [kernel=NAME]"  or  "err MESSAGE"
     (kernel: the aten conv3d kernel PyTorch picked for a conv row's shape)

What is timed:
  conv fwd   ref.causal_conv3d (F.pad + F.conv3d) under torch.no_grad()
  conv dinp  torch.autograd.grad(y, x, dy) on a graph where only x needs a
             gradient (so only the input gradient is computed; it includes
             F.pad's backward, a slice), graph kept between calls
  conv dw    torch.autograd.grad(y, (weight, bias), dy), only those need one
  train      ref.forward_loss (SPEC 4 defaults) + backward + torch.optim.AdamW
             (lr 1e-3, betas 0.9/0.999, eps 1e-8, weight decay 0, as ivae's
             defaults); x requires a gradient too, since ivae_batch_grad
             always computes dL/dx
  encode     model.encode(x) under torch.no_grad()
  decode     model.decode(z) under torch.no_grad()
  gemm       torch.mm of two N x N matrices: what PyTorch's BLAS reaches
The timing rule is test/bench.c's time_calls(): one untimed warm-up call
(kept as the one sample if it took LONG seconds or more), then RUNS timed
calls, more (up to 64) while they add up to less than MIN seconds, and no
new one once sum + last would pass BUDGET.
"""

import argparse
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
LONG_S = 10.0  # test/bench.c's --long default; overridden by --long
MAX_RUNS = 64  # test/bench.c's MAX_RUNS


def say(line):
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def openblas_pthread_installed():
    try:
        r = subprocess.run(["dpkg-query", "-W", "-f=${Status}", "libopenblas0-pthread"],
                           capture_output=True, text=True, timeout=20)
        return r.returncode == 0 and "install ok installed" in r.stdout
    except (OSError, subprocess.SubprocessError):
        return False


def loaded_blas():
    """The BLAS library this process has mapped (after a first matmul)."""
    try:
        with open("/proc/self/maps") as f:
            libs = {line.split()[-1] for line in f if "blas" in line.lower() and "/" in line}
        return ",".join(sorted(libs)) or "none"
    except OSError:
        return "unknown"


def conv3d_backend(torch, x, w, stride=(1, 1, 1)):
    """The aten kernel F.conv3d picks for these operands: PyTorch 1.13 chooses
    per shape (aten::mkldnn_convolution, oneDNN, or aten::slow_conv3d, im2col
    + BLAS, for small batch-1 inputs with 3x3 kernels); the backward pass
    follows the same choice. Short names: onednn, im2col+blas."""
    with torch.no_grad(), torch.autograd.profiler.profile() as prof:
        torch.nn.functional.conv3d(x, w, stride=stride)
    names = [e.name for e in prof.function_events]
    if any("mkldnn" in n for n in names):
        return "onednn"
    if any("slow_conv3d" in n for n in names):
        return "im2col+blas"
    return "other"


def timed(call, warmup, runs, min_s, budget):
    """test/bench.c's time_calls(): returns (samples, warm_kept)."""
    samples, kept = [], 0
    runs = max(1, min(runs, MAX_RUNS))
    if warmup:
        t0 = time.perf_counter()
        call()
        t = time.perf_counter() - t0
        if t >= LONG_S:
            samples.append(t)
            kept = 1
    while len(samples) < MAX_RUNS:
        if samples and sum(samples) + samples[-1] > budget:
            break
        if len(samples) >= runs and sum(samples) >= min_s:
            break
        t0 = time.perf_counter()
        call()
        samples.append(time.perf_counter() - t0)
    return samples, kept


class Bench:
    def __init__(self, config, seed):
        import torch
        import ref
        self.torch, self.ref = torch, ref
        self.config, self.seed = config, seed
        self.model = None
        self.note = ""  # appended to the answer, e.g. "kernel=onednn"
        self.opt = None
        self.flags = dict(w_image=1.0, w_video=1.0, beta=1e-6, w_opl=0.0, ref_shape=(17, 64, 64))

    def get_model(self):
        if self.model is None:
            torch, ref = self.torch, self.ref
            self.model = ref.build_model(self.config, torch.float32)
            ref.init_default(self.model, self.seed)  # SPEC 6, as ivae_init_params
            self.opt = torch.optim.AdamW(self.model.parameters(), lr=1e-3, betas=(0.9, 0.999),
                                         eps=1e-8, weight_decay=0.0)
        return self.model

    def gen(self):
        return self.torch.Generator().manual_seed(self.seed + 1000)

    def conv(self, cin, cout, kt, kh, kw, st, sh, sw, T, H, W, mode):
        torch, F = self.torch, self.torch.nn.functional
        g = self.gen()
        x = torch.rand((1, cin, T, H, W), generator=g) * 2 - 1
        w = (torch.rand((cout, cin, kt, kh, kw), generator=g) * 2 - 1) / (cin * kt * kh * kw) ** 0.5
        b = torch.rand((cout,), generator=g) * 2 - 1
        stride = (st, sh, sw)
        conv = self.ref.causal_conv3d
        xpad = F.pad(x, (kw // 2, kw // 2, kh // 2, kh // 2, kt - 1, 0))  # as causal_conv3d does
        self.note = "kernel=" + conv3d_backend(torch, xpad, w, stride)
        if mode == "fwd":
            def call():
                with torch.no_grad():
                    conv(x, w, b, stride)
            return call
        if mode == "dinp":
            x.requires_grad_(True)
            y = conv(x, w, b, stride)
            dy = torch.rand(y.shape, generator=g) * 2 - 1
            return lambda: torch.autograd.grad(y, x, dy, retain_graph=True)
        if mode == "dw":
            w.requires_grad_(True)
            b.requires_grad_(True)
            y = conv(x, w, b, stride)
            dy = torch.rand(y.shape, generator=g) * 2 - 1
            return lambda: torch.autograd.grad(y, (w, b), dy, retain_graph=True)
        raise ValueError(f"conv mode {mode!r} (have fwd, dinp, dw)")

    def train(self, B, T, H, W):
        torch, ref = self.torch, self.ref
        model = self.get_model()
        g = self.gen()
        xs = [(torch.rand((3, T, H, W), generator=g) * 2 - 1).requires_grad_(True) for _ in range(B)]
        epss = [torch.randn(model.latent_shape((3, T, H, W)), generator=g) for _ in range(B)]

        # every step from the same state, as test/bench.c does (its header:
        # stepping on diverges and fills the gradients with subnormals)
        params = list(model.parameters())
        p0 = [p.detach().clone() for p in params]

        def call():
            with torch.no_grad():
                for p, q in zip(params, p0):
                    p.copy_(q)
                for st in self.opt.state.values():
                    st["exp_avg"].zero_()
                    st["exp_avg_sq"].zero_()
                    st["step"].zero_()
            self.opt.zero_grad(set_to_none=True)
            for x in xs:
                x.grad = None
            out = ref.forward_loss(model, xs, epss, self.flags)
            out["loss"].backward()
            self.opt.step()
            if not torch.isfinite(out["loss"]):
                raise RuntimeError(f"loss is {out['loss'].item()}")
        return call

    def encode(self, T, H, W):
        torch = self.torch
        model = self.get_model()
        x = torch.rand((3, T, H, W), generator=self.gen()) * 2 - 1

        def call():
            with torch.no_grad():
                model.encode(x)
        return call

    def decode(self, Tz, Hz, Wz):
        torch = self.torch
        model = self.get_model()
        z = torch.randn((model.cfg["z_ch"], Tz, Hz, Wz), generator=self.gen())

        def call():
            with torch.no_grad():
                model.decode(z)
        return call

    def gemm(self, n):
        torch = self.torch
        a = torch.rand((n, n), generator=self.gen())
        b = torch.rand((n, n), generator=self.gen())
        return lambda: torch.mm(a, b)

    def answer(self, line):
        """One request line -> one answer line."""
        f = line.split()
        if len(f) < 5:
            raise ValueError("too few fields")
        kind, args, (warmup, runs, min_s, budget) = f[0], f[1:-4], f[-4:]
        self.note = ""
        warmup, runs, min_s, budget = int(warmup), int(runs), float(min_s), float(budget)
        if kind == "conv":
            if len(args) != 12:
                raise ValueError("conv wants CIN COUT KT KH KW ST SH SW T H W MODE")
            call = self.conv(*[int(a) for a in args[:11]], args[11])
        elif kind in ("train", "encode", "decode", "gemm"):
            want = dict(train=4, encode=3, decode=3, gemm=1)[kind]
            if len(args) != want:
                raise ValueError(f"{kind} wants {want} sizes")
            call = getattr(self, kind)(*[int(a) for a in args])
        else:
            raise ValueError(f"unknown request {kind!r}")
        samples, kept = timed(call, warmup, runs, min_s, budget)
        s = sorted(samples)
        n = len(s)
        med = s[n // 2] if n % 2 else 0.5 * (s[n // 2 - 1] + s[n // 2])
        return f"ok {med!r} {n} {kept} " + ",".join(repr(t) for t in samples) + \
            (" " + self.note if self.note else "")


def start(threads, config, seed):
    """Imports torch and says 'ready ...'; returns a Bench, or None after 'notorch'."""
    sys.path.insert(0, HERE)
    try:
        import torch
        import ref  # noqa: F401  (test/ref.py: the port)
    except ImportError as e:
        say(f"notorch {e}")
        return None
    torch.set_num_threads(threads)
    torch.set_grad_enabled(True)
    b = Bench(config, seed)
    torch.mm(torch.ones(64, 64), torch.ones(64, 64))  # loads the BLAS
    blas = loaded_blas()
    ob = "yes" if openblas_pthread_installed() else "no"
    say(f"ready torch={torch.__version__} threads={torch.get_num_threads()} blas={blas} "
        f"openblas_pthread={ob}")
    return b


def serve(b):
    for line in sys.stdin:
        line = line.strip()
        if not line:
            continue
        if line == "quit":
            break
        try:
            say(b.answer(line))
        except Exception as e:  # one bad row must not end the run
            msg = f"{type(e).__name__}: {e}".replace("\n", " ")
            say(f"err {msg}")


def main():
    global LONG_S
    ap = argparse.ArgumentParser(description="PyTorch side of test/bench")
    ap.add_argument("--serve", action="store_true", help="answer requests on stdin")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--config", default="ivae-s")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--long", type=float, default=LONG_S)
    ap.add_argument("request", nargs="*", help="one request, e.g. conv 32 64 3 3 3 1 1 1 17 32 32 fwd")
    a = ap.parse_args()
    LONG_S = a.long
    b = start(a.threads, a.config, a.seed)
    if b is None:
        return 0
    if a.serve:
        serve(b)
    elif a.request:
        req = a.request + ["1", "5", "0.25", "20"]
        say(b.answer(" ".join(req)))
    else:
        ap.print_help()
    return 0


if __name__ == "__main__":
    sys.exit(main())
