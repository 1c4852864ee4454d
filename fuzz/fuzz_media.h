/*
 * fuzz/fuzz_media.h: what the media harnesses (fuzz_image.c, fuzz_y4m.c,
 * fuzz_frames.c) share besides fuzz.h.
 */
#ifndef IVAE_FUZZ_MEDIA_H
#define IVAE_FUZZ_MEDIA_H

#include "fuzz.h"
#include "../media.h"

/* media_probe's promise, checked on every input: where media_load gives a
   clip, the probe gave its shape (so a probe that refuses means a load that
   refuses); a mismatch aborts, a finding */
static void probe_agrees(int probe_rc, int T, int H, int W, const Clip *c) {
    if (probe_rc != 0 || T != c->T || H != c->H || W != c->W) abort();
}

#endif
