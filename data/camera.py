#!/usr/bin/env python3
"""camera.py - a synthetic video clip: a virtual camera moving over one photo.

Usage: camera.py SRC OUTDIR FRAMES MOTION

Real video is scarce among Debian's freely licensed files, so make_data.sh
adds clips made by moving a camera over large photos: the temporal path of
the VAE then sees varied motion over real textures. Each frame is a 128 x 128
view of the photo; there is no motion blur, no noise and no randomness, so a
clip is a pure function of the photo and the MOTION string.

MOTION is a comma-separated list of key=value (all optional):
  x0,y0 / x1,y1   centre of the view at the first / last frame, as fractions of
                  the photo's width and height (default 0.5,0.5 -> 0.5,0.5)
  z0 / z1         zoom at the first / last frame: the view covers
                  short_side / z of the photo (default 1 -> 1)
  r0 / r1         rotation in degrees at the first / last frame (default 0 -> 0)
  ease            lin (default: constant speed), in (starts slow, speeds up),
                  out (slows down to a stop), inout (both)
  shake           amplitude of a hand-held wobble, in output pixels (default 0):
                  the sum of two sines of fixed, incommensurate periods

How a frame is made: the photo is first shrunk with PIL's box filter (an
area average) so that one output pixel spans between 1 and 2 source pixels
at the frame's zoom, then the rotated, scaled view is sampled from it with
bicubic interpolation (Image.transform, AFFINE). The shrink step is chosen per
frame from a fixed ladder of sizes (the photo's short side divided by 2^k), so
a slow zoom does not change filters every frame.

Writes OUTDIR/0001.png ... as 8-bit RGB PNG (PIL, compress_level 9). Needs
python3-pil (the Debian package).
"""
import math
import os
import sys

from PIL import Image

SIZE = 128


def parse_motion(text):
    m = {"x0": 0.5, "y0": 0.5, "x1": None, "y1": None, "z0": 1.0, "z1": None, "r0": 0.0, "r1": None,
         "ease": "lin", "shake": 0.0}
    for part in filter(None, text.split(",")):
        if "=" not in part:
            raise SystemExit(f"camera.py: motion item '{part}' is not key=value")
        k, v = part.split("=", 1)
        if k not in m:
            raise SystemExit(f"camera.py: unknown motion key '{k}' (known: {', '.join(m)})")
        m[k] = v if k == "ease" else float(v)
    for a in ("x", "y", "z", "r"):
        if m[a + "1"] is None:
            m[a + "1"] = m[a + "0"]
    if m["ease"] not in ("lin", "in", "out", "inout"):
        raise SystemExit(f"camera.py: ease '{m['ease']}': lin, in, out or inout")
    return m


def ease(s, kind):
    if kind == "in":
        return s * s
    if kind == "out":
        return 1 - (1 - s) * (1 - s)
    if kind == "inout":
        return s * s * (3 - 2 * s)
    return s


def main():
    if len(sys.argv) != 5:
        raise SystemExit(__doc__.split("\n\n")[0] + "\nusage: camera.py SRC OUTDIR FRAMES MOTION")
    src, outdir, frames, motion = sys.argv[1], sys.argv[2], int(sys.argv[3]), parse_motion(sys.argv[4])
    photo = Image.open(src).convert("RGB")
    W, H = photo.size
    short = min(W, H)
    ladder = {}  # k -> the photo shrunk by 2^k (box filter), made once
    os.makedirs(outdir, exist_ok=True)
    for f in range(frames):
        s = ease(f / (frames - 1) if frames > 1 else 0.0, motion["ease"])
        lerp = lambda a: motion[a + "0"] + (motion[a + "1"] - motion[a + "0"]) * s
        zoom, angle = lerp("z"), math.radians(lerp("r"))
        cx, cy = lerp("x") * W, lerp("y") * H
        if motion["shake"]:
            amp = motion["shake"] * short / zoom / SIZE  # output pixels -> source pixels
            cx += amp * (math.sin(2 * math.pi * f / 7.3) + 0.5 * math.sin(2 * math.pi * f / 3.1))
            cy += amp * (math.cos(2 * math.pi * f / 5.9) + 0.5 * math.sin(2 * math.pi * f / 2.3))
        step = short / zoom / SIZE  # source pixels per output pixel
        k = max(0, int(math.floor(math.log2(step))))  # shrink by 2^k: 1 <= step / 2^k < 2
        if k not in ladder:
            ladder[k] = photo if k == 0 else photo.resize((max(1, W >> k), max(1, H >> k)), Image.BOX)
        img = ladder[k]
        sx, sy = img.size[0] / W, img.size[1] / H  # the shrunk photo's scale
        c, si = math.cos(angle), math.sin(angle)
        # output pixel (u, v) -> source point centre + step * R(angle) (u - 64, v - 64)
        a, b = step * c * sx, -step * si * sx
        d, e = step * si * sy, step * c * sy
        x0 = cx * sx - (a + b) * SIZE / 2
        y0 = cy * sy - (d + e) * SIZE / 2
        corners = [(x0 + a * u + b * v, y0 + d * u + e * v) for u in (0, SIZE) for v in (0, SIZE)]
        if any(not (0 <= px <= img.size[0] and 0 <= py <= img.size[1]) for px, py in corners):
            raise SystemExit(f"camera.py: {src} frame {f + 1}: the view leaves the photo "
                             f"(centre {cx / W:.3f},{cy / H:.3f}, zoom {zoom:.3f}, {math.degrees(angle):.1f} deg)")
        view = img.transform((SIZE, SIZE), Image.AFFINE, (a, b, x0, d, e, y0), resample=Image.BICUBIC)
        view.save(os.path.join(outdir, f"{f + 1:04d}.png"), compress_level=9)


if __name__ == "__main__":
    main()
