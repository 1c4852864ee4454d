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
#                   python3-skimage libjxl-testdata plasma-workspace-wallpapers \
#                   lomiri-wallpapers-16.04 lomiri-wallpapers-20.04 mate-backgrounds \
#                   ukui-wallpapers python3-pil
# (python3-pil draws the synthetic camera clips of camera.py, next to this script)
# python3-skimage is only needed for its bundled sample photos
# (/usr/lib/python3/dist-packages/skimage/data). To avoid installing packages,
# unpack them instead and point SRC_ROOT at the tree:
#   apt-get download python-kivy-examples forensics-samples-files python3-skimage libjxl-testdata
#   for d in *.deb; do dpkg-deb -x "$d" /tmp/srcroot; done
#   SRC_ROOT=/tmp/srcroot bash data/make_data.sh
#
# FULL=1 additionally makes extra clips and image crops (the F rows: same
# sources, same rules and split). That larger set is not shipped (the shipped
# one is about 31 MB, within the repository's budget of about 40 MB).
#
# The held-out split (eval/) is disjoint by scene: no photo, video or place
# is in both. Clips named cam_* are synthetic: camera.py moves a virtual
# camera over one photo (no motion blur).
#
# Layout written under OUTDIR:
#   train/clips/<name>/0001.png ...   eval/clips/<name>/0001.png ...
#   train/images/<name>.png           eval/images/<name>.png
#   manifest.tsv  (one row per clip/image: split, source, package, frames, crop, license)
# All PNGs are 128x128, RGB, 8 bits per channel, zlib level 9 (the drop of
# blank crops below keeps a few views of a wallpaper out: flat sky).
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
KDE="$SRC_ROOT/usr/share/wallpapers"
BG="$SRC_ROOT/usr/share/backgrounds"

# short id -> "debian-package|license"
declare -A PKG=(
  [CITY]="python-kivy-examples|CC0-1.0 (per upstream file name; Debian copyright: Expat)"
  [FOR]="forensics-samples-files|CC-BY-SA-4.0 (c) 2019-2020 Joao Eriberto Mota Filho"
  [SK]="python3-skimage|see skimage/data/_fetchers.py: CC0 / public domain (per image)"
  [JXLCC0]="libjxl-testdata|CC0-1.0 (wesaturate.com photos)"
  [JXL]="libjxl-testdata|BSD-3-clause (c) the JPEG XL Project Authors"
  [KDEL]="plasma-workspace-wallpapers|LGPL-3 (the wallpaper's metadata.json; Debian copyright: GPL-2+, KDE Visual Design Group)"
  [KDES]="plasma-workspace-wallpapers|CC-BY-SA-4.0 (the wallpaper's metadata.json names the author)"
  [LOMBY]="lomiri-wallpapers-16.04|CC-BY-4.0 (photographer in the file name and in the Debian copyright)"
  [LOMSA]="lomiri-wallpapers-16.04|CC-BY-SA-4.0 (photographer in the file name and in the Debian copyright)"
  [LOM0]="lomiri-wallpapers-16.04|CC0-1.0 (Clemens Engelhardt)"
  [LOM20]="lomiri-wallpapers-20.04|CC-BY-SA-3.0 (photographer in the file name and in the Debian copyright)"
  [MATE]="mate-backgrounds|GPL-2+ (photographer in the Debian copyright)"
  [UKUI]="ukui-wallpapers|CC-BY-SA-3.0 (c) 2013-2020 Ubuntu Kylin community contributors"
)

need=()
for f in "$CITY" "$DOG" "$HELLO" "$SK/astronaut.png" "$JXL/jxl/flower/flower.png" \
         "$KDE/Path/contents/images/2560x1600.jpg" "$BG/Bridge_by_Sander_Klootwijk.jpg" \
         "$BG/Kleiber_by_Lukas_Baubkus.jpg" "$BG/mate/nature/Aqua.jpg" "$BG/calla.png"; do
  [ -e "$f" ] || need+=("$f")
done
if [ ${#need[@]} -gt 0 ]; then
  echo "make_data.sh: missing source files:" >&2
  printf '  %s\n' "${need[@]}" >&2
  echo "install them with:" >&2
  echo "  apt-get update && apt-get install ffmpeg python3 python-kivy-examples forensics-samples-files python3-skimage libjxl-testdata \\" >&2
  echo "      plasma-workspace-wallpapers lomiri-wallpapers-16.04 lomiri-wallpapers-20.04 mate-backgrounds ukui-wallpapers python3-pil" >&2
  echo "(or unpack those .deb files and set SRC_ROOT, see the header of this script)" >&2
  exit 1
fi
command -v ffmpeg >/dev/null || { echo "make_data.sh: ffmpeg missing: apt-get install ffmpeg" >&2; exit 1; }
# Debian's python3 (a python3 earlier on PATH may lack PIL)
PY=python3; [ -x /usr/bin/python3 ] && PY=/usr/bin/python3
command -v "$PY" >/dev/null || { echo "make_data.sh: python3 missing: apt-get install python3" >&2; exit 1; }
"$PY" -c 'import PIL' 2>/dev/null || { echo "make_data.sh: PIL missing: apt-get install python3-pil" >&2; exit 1; }

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
  fps=$("$PY" -c "from fractions import Fraction as F; print(round(float(F('$fps'))/$step, 2))")
  MANIFEST_ROWS+=("$split	clip	$name	${src#$SRC_ROOT}	${PKG[$sid]%%|*}	frames $first-$last step $step (${fps} fps, $count frames)	$view	${PKG[$sid]#*|}	$note")
}

# cam SPLIT TIER NAME SRCID SRCFILE MOTION NOTE
#   a synthetic 17-frame clip: a virtual camera moving over one photo (camera.py;
#   MOTION as described there: start/end centre, zoom, rotation, easing, shake)
cam() {
  local split="$1" tier="$2" name="$3" sid="$4" src="$5" motion="$6" note="$7"
  [ "$tier" = F ] && [ "$FULL" != 1 ] && return 0
  local dir="$OUT/$split/clips/$name"
  "$PY" "$HERE/camera.py" "$src" "$dir" 17 "$motion"
  MANIFEST_ROWS+=("$split	clip	$name	${src#$SRC_ROOT}	${PKG[$sid]%%|*}	synthetic camera: $motion (17 frames)	cam	${PKG[$sid]#*|}	$note")
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
# frames 82-114 (end of shot A) and 156-188 (end of shot B). The whole video
# is training material (the held-out clips come from other scenes).
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
clip train S city_a_full_f082   CITY "$CITY" c             82 17 2 "night city towers, end of shot A"
clip train S city_b_full_f156   CITY "$CITY" c             156 17 2 "night city towers, end of shot B"
clip train S city_a_z2tr_f082   CITY "$CITY" s256@1,0      82 17 2 "night city towers, end of shot A, 2x zoom top-right"
clip train S city_b_z2bl_f156   CITY "$CITY" s256@0,1      156 17 2 "night city towers, end of shot B, 2x zoom bottom-left"

# VID_20191220_170832.mp4: 1920x1080, 29.97 fps, 41 frames, a white dog lying
# on a floor, hand-held phone. Native frame rate (too short to subsample).
# Held out entirely (the only real video of its scene), with the photo of the
# same dog on the same floor (fx_dog_floor, below).
clip eval  S dog_full_f000      FOR "$DOG" c               0  17 1 "white dog on floor, first 17 frames (held out)"
clip eval  S dog_full_f024      FOR "$DOG" c               24 17 1 "white dog on floor, last 17 frames (held out)"

# movie-hello.mp4: 1280x720, 30 fps, 250 frames: a slide with a webcam inset
# of a man with a headset (the author) and a terminal where "ls /usr" is typed.
# Subsampled to 10 fps. All training: frames 0-150 and 195-243 (face) and
# 93-141 (terminal).
clip train S hello_face_f000    FOR "$HELLO" r188x188+146+84  0   17 3 "webcam: man with headset, talking"
clip train S hello_face_f051    FOR "$HELLO" r188x188+146+84  51  17 3 "webcam: man with headset, talking"
clip train S hello_face_f102    FOR "$HELLO" r188x188+146+84  102 17 3 "webcam: man with headset, looking down"
clip train S hello_term_f093    FOR "$HELLO" r256x256+406+84  93  17 3 "screen: terminal, typing 'ls /usr'"
clip train F hello_facez_f000   FOR "$HELLO" r128x128+172+96  0   17 3 "webcam: man with headset, native-res face"
clip train F hello_facez_f051   FOR "$HELLO" r128x128+172+96  51  17 3 "webcam: man with headset, native-res face"
clip train F hello_facez_f102   FOR "$HELLO" r128x128+172+96  102 17 3 "webcam: man with headset, native-res face"
clip train F hello_slide_f000   FOR "$HELLO" r448x448+0+0     0   17 3 "screen: slide title and webcam inset"
clip train S hello_face_f195    FOR "$HELLO" r188x188+146+84  195 17 3 "webcam: man with headset, talking"
clip train F hello_facez_f195   FOR "$HELLO" r128x128+172+96  195 17 3 "webcam: native-res face"

# ======================================================= SYNTHETIC CLIPS =====
# A virtual camera over one large photo (camera.py: no motion blur, no noise):
# pans, zooms, small rotations, hand-held wobble, at 1 to 6 output pixels per
# frame. Documented as synthetic in manifest.tsv (frames column). The held-out
# ones move over held-out photos only.
K="$KDE"; L="$BG"; M="$BG/mate/nature"
cam train S cam_bythewater_pan   KDEL  "$K/BytheWater/contents/images/2560x1600.jpg"   "x0=0.35,y0=0.55,x1=0.6,y1=0.55,z0=2"                       "lake shore at dusk, pan right"
cam train S cam_coldripple_zin   KDEL  "$K/ColdRipple/contents/images/2560x1600.jpg"   "x0=0.5,y0=0.5,z0=1.2,z1=2.2,ease=inout"                   "pier over still water, zoom in"
cam train S cam_darkest_tilt     KDEL  "$K/DarkestHour/contents/images/2560x1600.jpg"  "x0=0.5,y0=0.35,y1=0.65,z0=2.5"                           "dark lake and hills, tilt down"
cam train S cam_fallenleaf_rot   KDEL  "$K/FallenLeaf/contents/images/2560x1600.jpg"   "x0=0.45,y0=0.5,z0=2,r0=-4,r1=4"                           "autumn leaf, bokeh, slow rotation"
cam train S cam_grey_diag        KDEL  "$K/Grey/contents/images/2560x1600.jpg"         "x0=0.3,y0=0.3,x1=0.6,y1=0.6,z0=3,ease=out"                 "curved concrete architecture, diagonal pan, stopping"
cam train S cam_kite_shake       KDEL  "$K/Kite/contents/images/2560x1600.jpg"         "x0=0.5,y0=0.4,z0=2,shake=2"                               "kite in a blue sky, hand-held wobble"
cam train S cam_moss_zout        KDEL  "$K/OneStandsOut/contents/images/2560x1600.jpg" "x0=0.5,y0=0.5,z0=3,z1=1.6,ease=in"                        "moss close-up, zoom out"
cam train S cam_path_push        KDEL  "$K/Path/contents/images/2560x1600.jpg"         "x0=0.5,y0=0.6,y1=0.55,z0=1.4,z1=2.4"                      "forest path, push in"
cam train S cam_summer_pan       KDEL  "$K/summer_1am/contents/images/2560x1600.jpg"   "x0=0.65,y0=0.5,x1=0.35,z0=1.8"                            "lake at night, pan left"
cam train S cam_volna_pan        KDES  "$K/Volna/contents/images/5120x2880.jpg"        "x0=0.3,y0=0.5,x1=0.7,y1=0.45,z0=2.5,shake=1"              "waves on a beach from above, pan"
cam train S cam_altai_pan        KDES  "$K/Altai/contents/images/5120x2880.png"        "x0=0.3,y0=0.6,x1=0.5,z0=2.2,r0=1,r1=-2"                   "mountains and lake (drawn), pan"
cam train S cam_canopee_zin      KDEL  "$K/Canopee/contents/images/3840x2160.png"      "x0=0.5,y0=0.5,x1=0.55,y1=0.45,z0=1.5,z1=3"               "abstract drawn forms, zoom in"
cam train S cam_bridge_pan       LOMSA "$L/Bridge_by_Sander_Klootwijk.jpg"             "x0=0.35,y0=0.45,x1=0.65,y1=0.5,z0=2"                      "suspension bridge cables and sky, pan"
cam train S cam_dragonfly_zin    LOMSA "$L/Dragonfly_by_Bolly.jpg"                     "x0=0.5,y0=0.45,z0=1.3,z1=2.6,ease=out"                    "dragonfly on leaves, zoom in"
cam train S cam_sea_rot          LOM20 "$L/Infinite-Sea_by_Aury88.jpg"                 "x0=0.5,y0=0.5,z0=1.6,r0=-5,r1=3,ease=inout"                "starry night over the sea, rotation"
cam train S cam_fig_shake        LOMBY "$L/Picture_0B_by_freespace.jpg"                "x0=0.52,y0=0.5,z0=2.2,shake=3"                            "fig on a red plate, hand-held wobble"
cam train S cam_brushes_pan      LOMBY "$L/Picture_1A_by_freespace.jpg"                "x0=0.35,y0=0.5,x1=0.6,z0=1.6"                            "paint brushes and colours, pan right"
cam train S cam_wine_tilt        LOMBY "$L/Wine_by_Jakkub_Mede.jpg"                    "x0=0.5,y0=0.65,y1=0.45,z0=1.5,ease=inout"                 "person with a glass in a cafe, tilt up"
cam train S cam_analog_diag      LOMSA "$L/analogpattern_by_Peter_Nerlich.jpg"         "x0=0.3,y0=0.6,x1=0.6,y1=0.4,z0=2.5"                      "pattern photo, diagonal pan"
cam train S cam_bulbs_zout       LOMSA "$L/free_by_Peter_Nerlich.jpg"                  "x0=0.45,y0=0.45,z0=3,z1=1.5,ease=inout"                   "light bulbs and a bird, zoom out"
cam train S cam_friends_shake    LOMBY "$L/friends_by_Aitzol_Berasategi.jpg"           "x0=0.5,y0=0.55,z0=1.4,shake=2"                            "dog looking out of a door, wobble"
cam train S cam_clock_rot        LOMSA "$L/greentock_by_Peter_Nerlich.jpg"             "x0=0.5,y0=0.5,z0=1.8,r0=3,r1=-3,z1=2.2"                  "clock face, rotation and zoom"
cam train S cam_picos_pan        LOMBY "$L/picosdeeuropa_by_Aitzol_Berasategi.jpg"     "x0=0.6,y0=0.45,x1=0.4,y1=0.5,z0=1.8,ease=in"              "mountain trail, pan left"
cam train S cam_seeding_zin      LOM0  "$L/seeding_by_Clements_Engelhardt.jpg"         "x0=0.45,y0=0.55,z0=1.5,z1=3.5,ease=in"                   "dandelions against the sun, zoom in"
cam train S cam_sunset_pan       LOMBY "$L/sunset_by_Aitzol_Berasategi.jpg"            "x0=0.35,y0=0.5,x1=0.65,z0=1.6"                           "sunset over a stone circle, pan right"
cam train S cam_aqua_zin         MATE  "$M/Aqua.jpg"                                   "x0=0.5,y0=0.5,z0=1.3,z1=2.3"                             "water drop splash, zoom in"
cam train S cam_blinds_pan       MATE  "$M/Blinds.jpg"                                 "x0=0.35,y0=0.4,x1=0.6,y1=0.6,z0=2.2,ease=inout"           "green leaf veins, diagonal pan"
cam train S cam_dune_pan         MATE  "$M/Dune.jpg"                                   "x0=0.35,y0=0.5,x1=0.65,z0=1.5,shake=1"                   "grass on a dune and the sea, pan"
cam train S cam_garden_zout      MATE  "$M/Garden.jpg"                                 "x0=0.55,y0=0.45,z0=3,z1=1.4,ease=out"                    "red flower in a garden, zoom out"
cam train S cam_rain_rot         MATE  "$M/RainDrops.jpg"                              "x0=0.5,y0=0.5,z0=1.7,r0=-3,r1=5"                          "rain drops on a leaf, rotation"
cam train S cam_storm_pan        MATE  "$M/Storm.jpg"                                  "x0=0.65,y0=0.45,x1=0.35,z0=1.5"                          "storm clouds over a plain, pan left"
cam train S cam_yellow_shake     MATE  "$M/YellowFlower.jpg"                           "x0=0.55,y0=0.45,z0=2,shake=2.5,z1=2.4"                   "yellow flower, wobble and push in"
cam train S cam_goldfish_pan     UKUI  "$L/goldfish.png"                               "x0=0.4,y0=0.5,x1=0.6,y1=0.45,z0=2"                       "goldfish (drawn), pan"
cam train S cam_rhythm_zin       UKUI  "$L/rhythm.jpg"                                 "x0=0.5,y0=0.5,z0=1.2,z1=2.5,ease=inout"                  "coloured ribbons (drawn), zoom in"
# held out: photos used nowhere in training
cam eval  S cam_evening_pan      KDEL  "$K/EveningGlow/contents/images/2560x1600.jpg"  "x0=0.35,y0=0.6,x1=0.6,y1=0.55,z0=2"                      "rowing boats at sunset, pan (held out)"
cam eval  S cam_kleiber_zin      LOM20 "$L/Kleiber_by_Lukas_Baubkus.jpg"               "x0=0.55,y0=0.45,z0=1.4,z1=2.6,ease=inout"                 "bird on a tree trunk, zoom in (held out)"
cam eval  S cam_aitzgorri_rot    LOMBY "$L/aitzgorri_by_Aitzol_Berasategi.jpg"         "x0=0.45,y0=0.5,x1=0.55,z0=1.6,r0=-3,r1=2"                 "mountain meadow, pan and rotation (held out)"
cam eval  S cam_ladybird_shake   MATE  "$M/LadyBird.jpg"                               "x0=0.6,y0=0.5,z0=2.5,shake=2"                             "ladybird on a flower, wobble (held out)"
cam eval  S cam_life_zout        LOMBY "$L/life_by_Aitzol_Berasategi.jpg"              "x0=0.5,y0=0.5,z0=2.6,z1=1.3,ease=out"                    "forest stream, zoom out (held out)"

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
# --- wallpaper photos and drawings (Debian desktop packages): the whole picture
# and three crops at 3x, 6x and 8x less downscaling (short side 384, 768, 1024)
WV=(c s384@0.25,0.35 s768@0.7,0.6 s1024@0.4,0.7)
kde() { photo train S "wp_$(echo "$2" | tr 'A-Z' 'a-z')" "$1" "$K/$2/contents/images/$3" "$4" "${WV[@]}"; }
bgp() { photo train S "wp_$2" "$1" "$3" "$4" "${WV[@]}"; }
kde KDEL BytheWater   2560x1600.jpg "lake shore at dusk"
kde KDEL ColdRipple   2560x1600.jpg "pier over still water"
kde KDEL DarkestHour  2560x1600.jpg "dark lake and hills"
kde KDEL FallenLeaf   2560x1600.jpg "autumn leaf, bokeh"
kde KDEL Grey         2560x1600.jpg "curved concrete architecture"
kde KDEL Kite         2560x1600.jpg "kite in a blue sky"
kde KDEL OneStandsOut 2560x1600.jpg "moss close-up"
kde KDEL Path         2560x1600.jpg "forest path"
kde KDEL summer_1am   2560x1600.jpg "lake at night"
kde KDES Volna        5120x2880.jpg "waves on a beach from above"
kde KDES Altai        5120x2880.png "mountains and lake (drawn)"
kde KDEL Canopee      3840x2160.png "abstract drawn forms"
kde KDEL Autumn       2560x1600.jpg "tree in autumn (painted)"
kde KDEL Cascade      3840x2160.png "abstract drawn cascade"
kde KDEL Cluster      3840x2160.png "abstract hexagon cluster"
kde KDEL Elarun       2560x1600.png "abstract blue curves"
kde KDES Flow         5120x2880.jpg "abstract flowing hexagons"
kde KDES Honeywave    5120x2880.jpg "abstract waves and bubbles"
kde KDES IceCold      5120x2880.png "abstract ice floes"
kde KDES Kay          5120x2880.png "abstract pastel triangles"
kde KDEL Kokkini      3840x2160.png "abstract red forms"
kde KDES MilkyWay     5120x2880.png "abstract night glow"
kde KDEL Opal         3840x2160.png "abstract opal bands"
kde KDEL PastelHills  3200x2000.jpg "abstract pastel hills"
kde KDES Patak        5120x2880.png "paper plane over water (drawn)"
kde KDES SafeLanding  5120x2880.jpg "landscape with a balloon (drawn)"
kde KDES Shell        5120x2880.jpg "abstract shell"
bgp LOMSA bridge     "$L/Bridge_by_Sander_Klootwijk.jpg"        "suspension bridge cables and sky"
bgp LOMSA dragonfly  "$L/Dragonfly_by_Bolly.jpg"                "dragonfly on leaves"
bgp LOM20 sea        "$L/Infinite-Sea_by_Aury88.jpg"            "starry night over the sea"
bgp LOMBY fig        "$L/Picture_0B_by_freespace.jpg"           "fig on a red plate"
bgp LOMBY brushes    "$L/Picture_1A_by_freespace.jpg"           "paint brushes and colours"
bgp LOMBY wine       "$L/Wine_by_Jakkub_Mede.jpg"               "person with a glass in a cafe"
bgp LOMSA analog     "$L/analogpattern_by_Peter_Nerlich.jpg"    "pattern photo"
bgp LOMSA bulbs      "$L/free_by_Peter_Nerlich.jpg"             "light bulbs and a bird"
bgp LOMBY friends    "$L/friends_by_Aitzol_Berasategi.jpg"      "dog looking out of a door"
bgp LOMSA clock      "$L/greentock_by_Peter_Nerlich.jpg"        "clock face"
bgp LOMBY picos      "$L/picosdeeuropa_by_Aitzol_Berasategi.jpg" "mountain trail"
bgp LOM0  seeding    "$L/seeding_by_Clements_Engelhardt.jpg"    "dandelions against the sun"
bgp LOMBY sunset     "$L/sunset_by_Aitzol_Berasategi.jpg"       "sunset over a stone circle"
bgp LOMBY umang      "$L/umang_by_Abhishek_Mudgal.jpg"          "abstract colour gradient"
bgp LOM20 fossa      "$L/Fossa_by_Jasper_Roks.jpg"              "abstract fossa (drawn)"
bgp LOM20 painting   "$L/Painting-Colors_by__herobrine7gamer.jpg" "paint stripes"
bgp MATE  aqua       "$M/Aqua.jpg"                              "water drop splash"
bgp MATE  blinds     "$M/Blinds.jpg"                            "green leaf veins"
bgp MATE  dune       "$M/Dune.jpg"                              "grass on a dune and the sea"
bgp MATE  freshflower "$M/FreshFlower.jpg"                      "orange flower"
bgp MATE  garden     "$M/Garden.jpg"                            "red flower in a garden"
bgp MATE  meadow     "$M/GreenMeadow.jpg"                       "green grass"
bgp MATE  rain       "$M/RainDrops.jpg"                         "rain drops on a leaf"
bgp MATE  storm      "$M/Storm.jpg"                             "storm clouds over a plain"
bgp MATE  twowings   "$M/TwoWings.jpg"                          "dandelion seed, bokeh"
bgp MATE  wood       "$M/Wood.jpg"                              "pale wood grain"
bgp MATE  yellow     "$M/YellowFlower.jpg"                      "yellow flower"
bgp UKUI  goldfish   "$L/goldfish.png"                          "goldfish (drawn)"
bgp UKUI  rhythm     "$L/rhythm.jpg"                            "coloured ribbons (drawn)"
bgp UKUI  calla      "$L/calla.png"                             "calla flower (drawn)"
bgp UKUI  firstgen   "$L/firstgeneration.jpg"                   "drawn figure on blue"
bgp UKUI  string     "$L/string.jpg"                            "coloured strings (drawn)"
bgp UKUI  mouse      "$L/the-mouse.jpg"                         "glowing creature (drawn)"
# --- evaluation photos (not used anywhere in training)
WE=(c s384@0.6,0.5 s768@0.3,0.4 s1024@0.65,0.6)
photo eval  S wp_eveningglow   KDEL  "$K/EveningGlow/contents/images/2560x1600.jpg" "rowing boats at sunset"  "${WE[@]}"
photo eval  S wp_colorfulcups  KDEL  "$K/ColorfulCups/contents/images/2560x1600.jpg" "stacked colourful cups" "${WE[@]}"
photo eval  S wp_kleiber       LOM20 "$L/Kleiber_by_Lukas_Baubkus.jpg"              "bird on a tree trunk"    "${WE[@]}"
photo eval  S wp_aitzgorri     LOMBY "$L/aitzgorri_by_Aitzol_Berasategi.jpg"        "mountain meadow"         "${WE[@]}"
photo eval  S wp_ladybird      MATE  "$M/LadyBird.jpg"                              "ladybird on a flower"    "${WE[@]}"
photo eval  S wp_life          LOMBY "$L/life_by_Aitzol_Berasategi.jpg"             "forest stream"           "${WE[@]}"
photo eval  S fx_dog_floor     FOR "$P/pic2/IMG_20200124_231153.jpg" "white dog lying on a tiled floor (the held-out dog video's scene)" c s384@0.6,0.4 s768@0.7,0.3
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
"$PY" - "$OUT" <<'PY'
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
