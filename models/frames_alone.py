#!/usr/bin/python3
"""What limits a model on the held-out clips: motion, or the pictures?

For every held-out clip of DATA/eval/clips (the 64 x 64 centre crop of its
first 17 frames, as `ivae eval` takes it), this reconstructs

  - the clip, as `ivae eval` does (one causal pass over the 17 frames), and
  - each frame alone, as a one-frame clip (an image),

with `ivae recon`, and prints per clip the mean PSNR of its frames both ways
and how much the picture moves (the mean absolute difference of neighbouring
frames, in 8-bit levels). A frame alone is what the model can do for that
picture; the gap to the same frame inside the clip is what the clip's time
compression (4 frames to one latent frame after the first) costs. PSNR is on
8-bit values, as `ivae eval` computes it (media.c: clip_psnr), so the clip
column equals eval's frames.csv.

usage: /usr/bin/python3 models/frames_alone.py MODEL [DATA] [CSV]
       (defaults: data, and no CSV; ./ivae must be built)
Needs python3-pil and python3-numpy (Debian packages).
"""
import math
import os
import subprocess
import sys
import tempfile

try:
    import numpy as np
    from PIL import Image
except ImportError as e:
    sys.exit("frames_alone.py: %s (apt-get install python3-pil python3-numpy; run with /usr/bin/python3)" % e)

SIZE, FRAMES = 64, 17


def crop(path):
    im = np.asarray(Image.open(path).convert("RGB"))
    h, w = im.shape[:2]
    s = min(SIZE, h, w) // 8 * 8
    y, x = (h - s) // 2, (w - s) // 2
    return im[y:y + s, x:x + s]


def psnr(a, b):
    sse = float(((a.astype(np.int64) - b.astype(np.int64)) ** 2).sum())
    return 99.0 if sse == 0 else min(99.0, 10 * math.log10(255.0 ** 2 / (sse / a.size)))


def recon(ivae, model, src, dst):
    r = subprocess.run([ivae, "recon", model, src, dst], capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit("frames_alone.py: ivae recon %s: %s" % (src, (r.stderr or r.stdout).strip()))


def main():
    if len(sys.argv) < 2 or sys.argv[1] in ("-h", "--help"):
        print(__doc__.strip())
        return 0 if len(sys.argv) >= 2 else 2
    model = sys.argv[1]
    data = sys.argv[2] if len(sys.argv) > 2 else "data"
    out_csv = sys.argv[3] if len(sys.argv) > 3 else None
    ivae = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "ivae")
    if not os.access(ivae, os.X_OK):
        sys.exit("frames_alone.py: %s: not built (run make)" % ivae)
    if not os.path.isfile(model):
        sys.exit("frames_alone.py: %s: no such model file" % model)
    cdir = os.path.join(data, "eval", "clips")
    if not os.path.isdir(cdir):
        sys.exit("frames_alone.py: %s: no such folder" % cdir)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in sorted(os.listdir(cdir)):
            files = sorted(f for f in os.listdir(os.path.join(cdir, name)) if f.endswith(".png"))[:FRAMES]
            if len(files) < 1:
                continue
            files = files[:(len(files) - 1) // 4 * 4 + 1]
            frames = [crop(os.path.join(cdir, name, f)) for f in files]
            src = os.path.join(tmp, name)
            os.makedirs(src)
            for t, f in enumerate(frames):
                Image.fromarray(f).save(os.path.join(src, "%04d.png" % (t + 1)))
            dst = os.path.join(tmp, name + ".recon")
            recon(ivae, model, src, dst)
            got = sorted(os.listdir(dst))
            if len(got) != len(frames):
                sys.exit("frames_alone.py: ivae recon %s wrote %d frames, expected %d" % (src, len(got), len(frames)))
            in_clip = [psnr(f, np.asarray(Image.open(os.path.join(dst, g)).convert("RGB"))) for f, g in zip(frames, got)]
            alone = []
            for t in range(len(frames)):
                one = os.path.join(src, "%04d.png" % (t + 1))
                rec = os.path.join(tmp, "one.png")
                recon(ivae, model, one, rec)
                alone.append(psnr(frames[t], np.asarray(Image.open(rec).convert("RGB"))))
            motion = [float(np.abs(frames[t].astype(np.int64) - frames[t - 1].astype(np.int64)).mean())
                      for t in range(1, len(frames))]
            rows.append((name, in_clip, alone, motion))
    print("clip                  motion | frames in the clip: mean  min (frame) | each frame alone: mean  min | gap")
    for name, c, a, m in rows:
        k = min(range(len(c)), key=lambda t: c[t])
        print("%-20s %7.1f | %29.2f %5.2f (%2d) | %22.2f %5.2f | %5.2f" %
              (name, sum(m) / len(m) if m else 0.0, sum(c) / len(c), c[k], k + 1, sum(a) / len(a), min(a),
               sum(a) / len(a) - sum(c) / len(c)))
    n = len(rows)
    if n:
        mc = sum(sum(c) / len(c) for _, c, _, _ in rows) / n
        ma = sum(sum(a) / len(a) for _, _, a, _ in rows) / n
        print("mean over %d clips: in the clip %.2f dB, each frame alone %.2f dB (gap %.2f)" % (n, mc, ma, ma - mc))
    if out_csv:
        with open(out_csv, "w") as f:
            f.write("clip,frame,psnr_in_clip,psnr_alone,motion_from_previous\n")
            for name, c, a, m in rows:
                for t in range(len(c)):
                    f.write("%s,%d,%.4f,%.4f,%s\n" % (name, t + 1, c[t], a[t], "%.3f" % m[t - 1] if t else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
