#!/usr/bin/env bash
# make_data.sh - regenerate the ivae training/evaluation data from freely
# licensed footage and photos shipped in Debian packages.
#
# Usage:  bash data/make_data.sh [OUTDIR]        (default OUTDIR: the folder of this script)
#         FULL=1 bash data/make_data.sh /tmp/ivae-data-full
#
# Everything is deterministic: fixed source files, fixed frame numbers, fixed
# crops, no randomness. With the same ffmpeg build the PNGs come out
# byte-identical (the shipped set was made with Debian bookworm's ffmpeg
# 7:5.1.x); another ffmpeg/swscale version may differ in the last bit of some
# pixels but will give the same frames and crops.
#
# Needs (Debian packages):
#   apt-get install ffmpeg python3 python-kivy-examples forensics-samples-files \
#                   python3-skimage libjxl-testdata
# python3-skimage is only needed for its bundled sample photos
# (/usr/lib/python3/dist-packages/skimage/data). To avoid installing packages,
# unpack them instead and point SRC_ROOT at the tree:
#   apt-get download python-kivy-examples forensics-samples-files python3-skimage libjxl-testdata
#   for d in *.deb; do dpkg-deb -x "$d" /tmp/srcroot; done
#   SRC_ROOT=/tmp/srcroot bash data/make_data.sh
#
# FULL=1 additionally makes extra clips and image crops (same sources, same
# rules and held-out ranges; 30 train clips, ~100 train images, ~20 MB). That
# larger set is not shipped (repository size budget ~8 MB).
#
# Layout written under OUTDIR:
#   train/clips/<name>/0001.png ...   eval/clips/<name>/0001.png ...
#   train/images/<name>.png           eval/images/<name>.png
#   manifest.tsv  (one row per clip/image: split, source, package, frames, crop, license)
# All PNGs are 128x128, RGB, 8 bits per channel, zlib level 9.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
OUT="${1:-$HERE}"
SRC_ROOT="${SRC_ROOT:-}"
FULL="${FULL:-0}"

# ---------------------------------------------------------------- sources ----
CITY="$SRC_ROOT/usr/share/kivy-examples/widgets/cityCC0.mpg"
FOR="$SRC_ROOT/usr/share/forensics-samples/original-files"
DOG="$FOR/movie1/VID_20191220_170832.mp4"
HELLO="$FOR/movie2/movie-hello.mp4"
SK="$SRC_ROOT/usr/lib/python3/dist-packages/skimage/data"
JXL="$SRC_ROOT/usr/share/libjxl-testdata"

# short id -> "debian-package|license"
declare -A PKG=(
  [CITY]="python-kivy-examples|CC0-1.0 (per upstream file name; Debian copyright: Expat)"
  [FOR]="forensics-samples-files|CC-BY-SA-4.0 (c) 2019-2020 Joao Eriberto Mota Filho"
  [SK]="python3-skimage|see skimage/data/_fetchers.py: CC0 / public domain (per image)"
  [JXLCC0]="libjxl-testdata|CC0-1.0 (wesaturate.com photos)"
  [JXL]="libjxl-testdata|BSD-3-clause (c) the JPEG XL Project Authors"
)

need=()
for f in "$CITY" "$DOG" "$HELLO" "$SK/astronaut.png" "$JXL/jxl/flower/flower.png"; do
  [ -e "$f" ] || need+=("$f")
done
if [ ${#need[@]} -gt 0 ]; then
  echo "make_data.sh: missing source files:" >&2
  printf '  %s\n' "${need[@]}" >&2
  echo "install them with:" >&2
  echo "  apt-get update && apt-get install ffmpeg python3 python-kivy-examples forensics-samples-files python3-skimage libjxl-testdata" >&2
  echo "(or unpack those .deb files and set SRC_ROOT, see the header of this script)" >&2
  exit 1
fi
command -v ffmpeg >/dev/null || { echo "make_data.sh: ffmpeg missing: apt-get install ffmpeg" >&2; exit 1; }
command -v python3 >/dev/null || { echo "make_data.sh: python3 missing: apt-get install python3" >&2; exit 1; }

# ------------------------------------------------------------------ views ----
# A view turns a source frame into a 128x128 RGB frame:
#   c                 downscale so the short side is 128 (area filter), centre crop 128x128
#   s<S>@<fx>,<fy>    downscale so the short side is S, crop 128x128 at fraction
#                     (fx,fy) of the free range (0,0 = top-left, 1,1 = bottom-right)
#   r<W>x<H>+<X>+<Y>  crop WxH at (X,Y) in source pixels, then downscale to 128x128
view_filter() {
  local v="$1"
  case "$v" in
    c)
      echo "scale=128:128:force_original_aspect_ratio=increase:flags=area,format=rgb24,crop=128:128" ;;
    s*)
      local s="${v#s}"; local S="${s%@*}"; local p="${s#*@}"; local fx="${p%,*}"; local fy="${p#*,}"
      echo "scale=${S}:${S}:force_original_aspect_ratio=increase:flags=area,format=rgb24,crop=128:128:(iw-128)*${fx}:(ih-128)*${fy}" ;;
    r*)
      local r="${v#r}"; local wh="${r%%+*}"; local xy="${r#*+}"
      local W="${wh%x*}"; local H="${wh#*x}"; local X="${xy%+*}"; local Y="${xy#*+}"
      echo "crop=${W}:${H}:${X}:${Y},scale=128:128:flags=area,format=rgb24" ;;
    *) echo "bad view $v" >&2; exit 1 ;;
  esac
}

FF=(ffmpeg -nostdin -hide_banner -loglevel error -y)
ENC=(-fflags +bitexact -flags:v +bitexact -map_metadata -1 -c:v png -pix_fmt rgb24 -compression_level 9 -pred mixed)

MANIFEST_ROWS=()

# clip SPLIT TIER NAME SRCID SRCFILE VIEW FIRST COUNT STEP NOTE
#   frames FIRST, FIRST+STEP, ..., FIRST+(COUNT-1)*STEP (0-based decoded frame numbers)
clip() {
  local split="$1" tier="$2" name="$3" sid="$4" src="$5" view="$6" first="$7" count="$8" step="$9" note="${10}"
  [ "$tier" = F ] && [ "$FULL" != 1 ] && return 0
  local last=$((first + (count - 1) * step))
  local dir="$OUT/$split/clips/$name"
  mkdir -p "$dir"
  "${FF[@]}" -i "$src" -an \
    -vf "select='between(n\,$first\,$last)*not(mod(n-$first\,$step))',$(view_filter "$view")" \
    -fps_mode passthrough -frames:v "$count" "${ENC[@]}" "$dir/%04d.png"
  local got; got=$(find "$dir" -name '*.png' | wc -l)
  [ "$got" -eq "$count" ] || { echo "clip $name: got $got frames, want $count" >&2; exit 1; }
  local fps; fps=$(ffprobe -v error -select_streams v:0 -show_entries stream=r_frame_rate -of default=nw=1:nk=1 "$src" | head -n1)
  fps=$(python3 -c "from fractions import Fraction as F; print(round(float(F('$fps'))/$step, 2))")
  MANIFEST_ROWS+=("$split	clip	$name	${src#$SRC_ROOT}	${PKG[$sid]%%|*}	frames $first-$last step $step (${fps} fps, $count frames)	$view	${PKG[$sid]#*|}	$note")
}

# img SPLIT TIER NAME SRCID SRCFILE VIEW NOTE
img() {
  local split="$1" tier="$2" name="$3" sid="$4" src="$5" view="$6" note="$7"
  [ "$tier" = F ] && [ "$FULL" != 1 ] && return 0
  mkdir -p "$OUT/$split/images"
  "${FF[@]}" -i "$src" -vf "$(view_filter "$view")" -frames:v 1 -update 1 "${ENC[@]}" "$OUT/$split/images/$name.png"
  MANIFEST_ROWS+=("$split	image	$name	${src#$SRC_ROOT}	${PKG[$sid]%%|*}	still	$view	${PKG[$sid]#*|}	$note")
}

# photo SPLIT TIER PREFIX SRCID SRCFILE NOTE VIEW...   (one image per view)
photo() {
  local split="$1" tier="$2" prefix="$3" sid="$4" src="$5" note="$6"; shift 6
  local v tag
  for v in "$@"; do
    case "$v" in
      c) tag=full ;;
      s*) tag=$(echo "$v" | sed -E 's/^s([0-9]+)@([0-9.]+),([0-9.]+)$/s\1_x\2_y\3/; s/\.//g') ;;
      *) tag=$(echo "$v" | tr -c 'A-Za-z0-9\n' '_') ;;
    esac
    img "$split" "$tier" "${prefix}_${tag}" "$sid" "$src" "$v" "$note"
  done
}

rm -rf "$OUT/train" "$OUT/eval" "$OUT/manifest.tsv"
START=$(date +%s)

# ================================================================= CLIPS =====
# cityCC0.mpg: 720x405, 25 fps, 190 frames, two shots (cut between frame 115 and
# 116), night-time city towers, slow rotating camera. Subsampled to 12.5 fps.
# Training uses frames 0-66 (shot A) and 116-148 (shot B); evaluation uses
# frames 82-114 (end of shot A) and 156-188 (end of shot B). No overlap.
clip train S city_a_full_f000   CITY "$CITY" c             0  17 2 "night city towers, shot A, downscale+centre crop"
clip train S city_a_z2tr_f034   CITY "$CITY" s256@1,0      34 17 2 "night city towers, shot A, 2x zoom top-right"
clip train S city_b_full_f116   CITY "$CITY" c             116 17 2 "night city towers, shot B, downscale+centre crop"
clip train S city_b_z2bl_f116   CITY "$CITY" s256@0,1      116 17 2 "night city towers, shot B, 2x zoom bottom-left"
clip train F city_a_z2bl_f000   CITY "$CITY" s256@0,1      0  17 2 "night city towers, shot A, 2x zoom bottom-left"
clip train F city_a_z2tl_f000   CITY "$CITY" s256@0,0      0  17 2 "night city towers, shot A, 2x zoom top-left"
clip train F city_a_full_f034   CITY "$CITY" c             34 17 2 "night city towers, shot A, downscale+centre crop"
clip train F city_a_z2br_f034   CITY "$CITY" s256@1,1      34 17 2 "night city towers, shot A, 2x zoom bottom-right"
clip train F city_a_z3c_f000    CITY "$CITY" s405@0.5,0.5  0  17 2 "night city towers, shot A, native-res centre"
clip train F city_b_z3br_f116   CITY "$CITY" s405@0.9,0.9  116 17 2 "night city towers, shot B, native-res bottom-right"
clip train F city_b_z2br_f116   CITY "$CITY" s256@1,1      116 17 2 "night city towers, shot B, 2x zoom bottom-right"
clip train F city_b_z2c_f116    CITY "$CITY" s256@0.5,0.5  116 17 2 "night city towers, shot B, 2x zoom centre"
clip train F city_a_z2tr_f000   CITY "$CITY" s256@1,0      0  17 2 "night city towers, shot A, 2x zoom top-right"
clip train F city_a_z2br_f000   CITY "$CITY" s256@1,1      0  17 2 "night city towers, shot A, 2x zoom bottom-right"
clip train F city_a_z2c_f000    CITY "$CITY" s256@0.5,0.5  0  17 2 "night city towers, shot A, 2x zoom centre"
clip train F city_a_z2tl_f034   CITY "$CITY" s256@0,0      34 17 2 "night city towers, shot A, 2x zoom top-left"
clip train F city_a_z2bl_f034   CITY "$CITY" s256@0,1      34 17 2 "night city towers, shot A, 2x zoom bottom-left"
clip train F city_a_z2c_f034    CITY "$CITY" s256@0.5,0.5  34 17 2 "night city towers, shot A, 2x zoom centre"
clip train F city_a_z3c_f034    CITY "$CITY" s405@0.5,0.5  34 17 2 "night city towers, shot A, native-res centre"
clip train F city_b_z3c_f116    CITY "$CITY" s405@0.5,0.5  116 17 2 "night city towers, shot B, native-res centre"
clip eval  S city_a_full_f082   CITY "$CITY" c             82 17 2 "night city towers, end of shot A (held out)"
clip eval  S city_b_full_f156   CITY "$CITY" c             156 17 2 "night city towers, end of shot B (held out)"
clip eval  F city_a_z2tr_f082   CITY "$CITY" s256@1,0      82 17 2 "night city towers, end of shot A, 2x zoom (held out)"
clip eval  F city_b_z2bl_f156   CITY "$CITY" s256@0,1      156 17 2 "night city towers, end of shot B, 2x zoom (held out)"

# VID_20191220_170832.mp4: 1920x1080, 29.97 fps, 41 frames, a white dog lying
# on a floor, hand-held phone. Native frame rate (too short to subsample).
# Training: frames 0-16; evaluation: frames 24-40.
clip train S dog_full_f000      FOR "$DOG" c               0  17 1 "white dog on floor, downscale+centre crop"
clip train F dog_z2c_f000       FOR "$DOG" s256@0.5,0.3    0  17 1 "white dog on floor, 2x zoom on head"
clip eval  S dog_full_f024      FOR "$DOG" c               24 17 1 "white dog on floor, last 17 frames (held out)"

# movie-hello.mp4: 1280x720, 30 fps, 250 frames: a slide with a webcam inset
# of a man with a headset (the author) and a terminal where "ls /usr" is typed.
# Subsampled to 10 fps. Training: frames 0-150 (face) and 93-141 (terminal);
# evaluation: frames 195-243 (face). No overlap for the face views; the
# terminal view is training-only.
clip train S hello_face_f000    FOR "$HELLO" r188x188+146+84  0   17 3 "webcam: man with headset, talking"
clip train S hello_face_f051    FOR "$HELLO" r188x188+146+84  51  17 3 "webcam: man with headset, talking"
clip train S hello_face_f102    FOR "$HELLO" r188x188+146+84  102 17 3 "webcam: man with headset, looking down"
clip train S hello_term_f093    FOR "$HELLO" r256x256+406+84  93  17 3 "screen: terminal, typing 'ls /usr'"
clip train F hello_facez_f000   FOR "$HELLO" r128x128+172+96  0   17 3 "webcam: man with headset, native-res face"
clip train F hello_facez_f051   FOR "$HELLO" r128x128+172+96  51  17 3 "webcam: man with headset, native-res face"
clip train F hello_facez_f102   FOR "$HELLO" r128x128+172+96  102 17 3 "webcam: man with headset, native-res face"
clip train F hello_slide_f000   FOR "$HELLO" r448x448+0+0     0   17 3 "screen: slide title and webcam inset"
clip eval  S hello_face_f195    FOR "$HELLO" r188x188+146+84  195 17 3 "webcam: man with headset (held out)"
clip eval  F hello_facez_f195   FOR "$HELLO" r128x128+172+96  195 17 3 "webcam: native-res face (held out)"

# ================================================================ IMAGES =====
# Each photo gives a downscaled centre crop ("full") and some 128x128 crops of
# the photo downscaled less (s256 = short side 256 px, i.e. a 2x zoom, etc.).
# Training and evaluation use different photos.
P=$FOR
# --- training photos
photo train S fx_dogs_tree     FOR "$P/pic1/IMG-20191006-WA0002.jpg" "two white dogs under a tree"        c s256@0.2,0.3 s512@0.3,0.5
photo train F fx_dogs_tree     FOR "$P/pic1/IMG-20191006-WA0002.jpg" "two white dogs under a tree"        s256@1,1 s512@0,1 s512@1,0
photo train S fx_city_rail     FOR "$P/pic1/IMG_1054.JPG"            "city, railway and towers from above" c s256@0,0 s256@1,1 s512@0.5,0.6 s512@0.1,0.9
photo train F fx_city_rail     FOR "$P/pic1/IMG_1054.JPG"            "city, railway and towers from above" s256@1,0 s256@0,1 s512@0.9,0.2 s512@0.3,0.3 s960@0.5,0.5
photo train S fx_circuit       FOR "$P/pic1/IMG_20200827_231612.jpg" "circuit board close-up"             c s384@0.6,0.6 s768@0.7,0.5
photo train F fx_circuit       FOR "$P/pic1/IMG_20200827_231612.jpg" "circuit board close-up"             s256@0,0 s384@1,1 s768@0.4,0.8 s1536@0.6,0.5
photo train S fx_xmas_table    FOR "$P/pic2/IMG_20191224_234846.jpg" "dinner table, framed pictures"      c s384@0.8,0.1 s384@0.2,0.8 s768@0.5,0.7
photo train F fx_xmas_table    FOR "$P/pic2/IMG_20191224_234846.jpg" "dinner table, framed pictures"      s256@0,0 s768@0.9,0.3 s1536@0.5,0.5
photo train S fx_dog_floor     FOR "$P/pic2/IMG_20200124_231153.jpg" "white dog lying on a tiled floor"   c s384@0.6,0.4 s768@0.7,0.3
photo train F fx_dog_floor     FOR "$P/pic2/IMG_20200124_231153.jpg" "white dog lying on a tiled floor"   s256@0,0 s768@0.3,0.6 s1536@0.75,0.3
photo train S sk_astronaut     SK  "$SK/astronaut.png"        "portrait of astronaut Eileen Collins (NASA)" c s256@0.3,0.1 s256@1,1
photo train F sk_astronaut     SK  "$SK/astronaut.png"        "portrait of astronaut Eileen Collins (NASA)" s256@0,1 s512@0.4,0.2 s512@0.9,0.2 s512@0.1,0.9 s512@0.5,0.7
photo train S sk_chelsea       SK  "$SK/chelsea.png"          "cat (Chelsea) face"                  c s300@0.6,0.3
photo train F sk_chelsea       SK  "$SK/chelsea.png"          "cat (Chelsea) face"                  s300@0.1,0.9
photo train S sk_camera        SK  "$SK/camera.png"           "man with film camera on tripod (grey)" c s256@0.3,0.2
photo train F sk_camera        SK  "$SK/camera.png"           "man with film camera on tripod (grey)" s256@0.8,0.8 s512@0.45,0.25
photo train S sk_grass         SK  "$SK/grass.png"            "grass texture (grey)"                c s512@0.5,0.5
photo train F sk_grass         SK  "$SK/grass.png"            "grass texture (grey)"                s256@0,0 s512@1,1
photo train S sk_gravel        SK  "$SK/gravel.png"           "gravel texture (grey)"               c s512@0.5,0.5
photo train F sk_gravel        SK  "$SK/gravel.png"           "gravel texture (grey)"               s256@1,0 s512@0,1
photo train S sk_brick         SK  "$SK/brick.png"            "brick wall texture (grey)"           c s512@0.5,0.5
photo train F sk_brick         SK  "$SK/brick.png"            "brick wall texture (grey)"           s256@0,1 s512@1,0
photo train S sk_coins         SK  "$SK/coins.png"            "Greek coins (grey)"                  c s303@0.2,0.3
photo train F sk_coins         SK  "$SK/coins.png"            "Greek coins (grey)"                  s303@0.9,0.9
photo train S sk_ihc           SK  "$SK/ihc.png"              "stained tissue micrograph"           c s512@0.2,0.2
photo train F sk_ihc           SK  "$SK/ihc.png"              "stained tissue micrograph"           s512@0.8,0.8
photo train S sk_hubble        SK  "$SK/hubble_deep_field.jpg" "Hubble deep field (NASA)"           c s512@0.3,0.3
photo train F sk_hubble        SK  "$SK/hubble_deep_field.jpg" "Hubble deep field (NASA)"           s872@0.7,0.7 s872@0.1,0.2 s512@0.9,0.9
photo train S sk_retina        SK  "$SK/retina.jpg"           "retina fundus photograph"            c s512@0.1,0.5
photo train F sk_retina        SK  "$SK/retina.jpg"           "retina fundus photograph"            s768@0.5,0.5
photo train S jx_cliff_lake    JXLCC0 "$JXL/external/wesaturate/500px/cvo9xd_keong_macan_srgb8.png" "rock cliff, lake and hills" c s256@0,0.5 s500@0.8,0.59
photo train F jx_cliff_lake    JXLCC0 "$JXL/external/wesaturate/500px/cvo9xd_keong_macan_srgb8.png" "rock cliff, lake and hills" s500@0.1,0.8
photo train S jx_tulips        JXLCC0 "$JXL/external/wesaturate/500px/tmshre_riaphotographs_srgb8.png" "pink tulips" c s256@0.5,0.4 s500@0.6,0.3
photo train F jx_tulips        JXLCC0 "$JXL/external/wesaturate/500px/tmshre_riaphotographs_srgb8.png" "pink tulips" s500@0.1,0.9
photo train S jx_flower        JXL "$JXL/jxl/flower/flower.png" "pink and white daisy-like flowers" c s256@0.6,0.4 s512@0.55,0.45 s1024@0.59,0.54 s1024@0.445,0.21
photo train F jx_flower        JXL "$JXL/jxl/flower/flower.png" "pink and white daisy-like flowers" s256@0,1 s512@0.9,0.1 s1024@0.15,0.93 s1512@0.6,0.4
photo train S jx_room          JXL "$JXL/jxl/hdr_room.png"      "room interior with windows, chairs"  c s449@0.3,0.5 s449@0.75,0.3
photo train F jx_room          JXL "$JXL/jxl/hdr_room.png"      "room interior with windows, chairs"  s256@0.5,0.5 s449@0.5,1
# --- evaluation photos (not used anywhere in training)
photo eval  S fx_dogs_park     FOR "$P/pic2/IMG_20200608_111614.jpg" "two white dogs on grass in a park" c s256@1,0 s384@0.5,0.6 s768@0.66,0.34 s768@0.1,0.2 s1536@0.65,0.345
photo eval  F fx_dogs_park     FOR "$P/pic2/IMG_20200608_111614.jpg" "two white dogs on grass in a park" s768@0.37,0.32 s768@0.54,0.96 s384@0,1
photo eval  S sk_coffee        SK  "$SK/coffee.png"           "cup of espresso on wooden table"     c s400@0.35,0.3 s256@1,1 s256@0,0
photo eval  F sk_coffee        SK  "$SK/coffee.png"           "cup of espresso on wooden table"     s400@0.9,0.9
photo eval  S sk_rocket        SK  "$SK/rocket.jpg"           "rocket on launch pad at dusk (SpaceX)" c s427@0.55,0.4 s256@0,1 s256@1,0.3
photo eval  F sk_rocket        SK  "$SK/rocket.jpg"           "rocket on launch pad at dusk (SpaceX)" s427@0.1,0.9
photo eval  S jx_blossom       JXLCC0 "$JXL/external/wesaturate/500px/u76c0g_bliznaca_srgb8.png" "blossoming branch" c s256@0.5,0.5 s500@0.7,0.4 s500@0.2,0.8 s256@0,0
photo eval  F jx_blossom       JXLCC0 "$JXL/external/wesaturate/500px/u76c0g_bliznaca_srgb8.png" "blossoming branch" s500@0.9,0.9

# ============================================================ checks =========
# Stdlib-only PNG reader: checks 128x128 RGB 8-bit, drops blank frames/images
# (luma std < 4, or mean < 6 or > 249), and reports near-duplicate images.
python3 - "$OUT" <<'PY'
import os, sys, zlib, struct, shutil
out = sys.argv[1]
def read_png(path):
    b = open(path, 'rb').read()
    assert b[:8] == b'\x89PNG\r\n\x1a\n', path
    i, idat, hdr = 8, b'', None
    while i < len(b):
        n, t = struct.unpack('>I4s', b[i:i+8]); d = b[i+8:i+8+n]; i += 12 + n
        if t == b'IHDR': hdr = struct.unpack('>IIBBBBB', d)
        elif t == b'IDAT': idat += d
    w, h, depth, ctype = hdr[:4]
    if (w, h, depth, ctype) != (128, 128, 8, 2):
        raise SystemExit(f'{path}: not 128x128 RGB8 ({w}x{h} depth {depth} type {ctype})')
    raw = zlib.decompress(idat); bpp, stride = 3, w * 3
    prev = bytearray(stride); rows = []
    for y in range(h):
        f = raw[y*(stride+1)]; line = bytearray(raw[y*(stride+1)+1:(y+1)*(stride+1)])
        for x in range(stride):
            a = line[x-bpp] if x >= bpp else 0; up = prev[x]; c = prev[x-bpp] if x >= bpp else 0
            if f == 1: line[x] = (line[x] + a) & 255
            elif f == 2: line[x] = (line[x] + up) & 255
            elif f == 3: line[x] = (line[x] + ((a + up) >> 1)) & 255
            elif f == 4:
                p = a + up - c; pa, pb, pc = abs(p-a), abs(p-up), abs(p-c)
                line[x] = (line[x] + (a if pa <= pb and pa <= pc else (up if pb <= pc else c))) & 255
        rows.append(line); prev = line
    return rows
def stats(rows):
    ys = [(299*r[x] + 587*r[x+1] + 114*r[x+2]) / 1000 for r in rows for x in range(0, 384, 3)]
    m = sum(ys) / len(ys); s = (sum((v-m)**2 for v in ys) / len(ys)) ** 0.5
    thumb = [sum(ys[(by*8+yy)*128 + bx*8 + xx] for yy in range(8) for xx in range(8)) / 64
             for by in range(16) for bx in range(16)]
    return m, s, thumb
blank = lambda m, s: s < 4 or m < 6 or m > 249
dropped, thumbs, nimg, nfr = [], {}, 0, 0
for split in ('train', 'eval'):
    d = os.path.join(out, split, 'images')
    for f in sorted(os.listdir(d)) if os.path.isdir(d) else []:
        m, s, t = stats(read_png(os.path.join(d, f))); nimg += 1
        if blank(m, s): os.remove(os.path.join(d, f)); dropped.append(f'{split}/images/{f} mean {m:.1f} std {s:.1f}')
        else: thumbs[f'{split}/images/{f}'] = t
    d = os.path.join(out, split, 'clips')
    for c in sorted(os.listdir(d)) if os.path.isdir(d) else []:
        for f in sorted(os.listdir(os.path.join(d, c))):
            m, s, t = stats(read_png(os.path.join(d, c, f))); nfr += 1
            if blank(m, s):
                shutil.rmtree(os.path.join(d, c)); dropped.append(f'{split}/clips/{c} ({f}: mean {m:.1f} std {s:.1f})'); break
            if f == '0001.png': thumbs[f'{split}/clips/{c}'] = t
keys = sorted(thumbs); near = []
for i in range(len(keys)):
    for j in range(i+1, len(keys)):
        a, b = thumbs[keys[i]], thumbs[keys[j]]
        if sum(abs(x-y) for x, y in zip(a, b)) / len(a) < 3: near.append((keys[i], keys[j]))
print(f'checked {nimg} images and {nfr} clip frames: all 128x128 RGB8')
for x in dropped: print('DROPPED blank:', x)
for a, b in near: print('WARNING near-duplicate:', a, b)
PY

# ---------------------------------------------------------- manifest ---------
{
  printf 'split\tkind\tname\tsource_file\tdebian_package\tframes\tview\tlicense\tcontent\n'
  for row in "${MANIFEST_ROWS[@]}"; do
    split="${row%%	*}"; rest="${row#*	}"; kind="${rest%%	*}"; rest="${rest#*	}"; name="${rest%%	*}"
    if [ "$kind" = clip ]; then p="$split/clips/$name"; else p="$split/images/$name.png"; fi
    [ -e "$OUT/$p" ] && printf '%s\n' "$row"
  done
} > "$OUT/manifest.tsv"

# ----------------------------------------------------------- summary ---------
for split in train eval; do
  nc=$(find "$OUT/$split/clips" -mindepth 1 -maxdepth 1 -type d 2>/dev/null | wc -l)
  nf=$(find "$OUT/$split/clips" -name '*.png' 2>/dev/null | wc -l)
  ni=$(find "$OUT/$split/images" -name '*.png' 2>/dev/null | wc -l)
  echo "$split: $nc clips ($nf frames), $ni images, $(du -sh "$OUT/$split" | cut -f1)"
done
echo "total PNG bytes: $(find "$OUT/train" "$OUT/eval" -name '*.png' -printf '%s\n' | awk '{s+=$1} END {print s}')"
echo "done in $(( $(date +%s) - START )) s"
