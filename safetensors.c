/*
 * safetensors.c: the safetensors reader and writer (SPEC 5), with the small
 * JSON parser its header needs. Plumbing, not the model: ivae.c's
 * ivae_load/ivae_save build on it.
 *
 * A file is: u64 little-endian header length n, n bytes of JSON, raw data.
 * The JSON maps each tensor name to {"dtype", "shape", "data_offsets": [begin,
 * end]} (offsets relative to the data section) and "__metadata__" to a map
 * of strings. The reader trusts nothing: every offset, size and shape is
 * checked against the file before any byte is read.
 */
#include "safetensors.h"
#include "ivae.h"
#include "util.h"

#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define ST_MAX_HEADER (100u << 20)

/* CRC-32 (IEEE 802.3, reflected, as zlib's crc32 and Python's zlib.crc32)
   of the data section, kept in the metadata as IVAE_ST_CRC_KEY (SPEC 5):
   crc = st_crc32(0, p, n) and st_crc32(crc, more, m) continue it */
static uint32_t st_crc32(uint32_t crc, const unsigned char *p, size_t n) {
    static uint32_t table[256];
    if (!table[1])
        for (uint32_t i = 0; i < 256; i++) {
            uint32_t c = i;
            for (int k = 0; k < 8; k++) c = c & 1 ? 0xEDB88320u ^ (c >> 1) : c >> 1;
            table[i] = c;
        }
    crc = ~crc;
    for (size_t i = 0; i < n; i++) crc = table[(crc ^ p[i]) & 255] ^ (crc >> 8);
    return ~crc;
}

static size_t dtype_size(IvaeDtype d) { return d == IVAE_F64 ? 8 : d == IVAE_F32 ? 4 : 2; }

/* a tiny JSON reader, just enough for a safetensors header */
typedef struct {
    const char *s, *end;
    const char *path;
    const char *start;
} Json;

static void js_ws(Json *j) {
    while (j->s < j->end && (*j->s == ' ' || *j->s == '\n' || *j->s == '\r' || *j->s == '\t')) j->s++;
}

static int js_fail(Json *j, const char *what) {
    ivae_set_error("%s: corrupt safetensors header: %s at byte %ld of the header", j->path, what, (long)(j->s - j->start));
    return -1;
}

static int js_expect(Json *j, char c) {
    js_ws(j);
    if (j->s >= j->end || *j->s != c) {
        char what[32];
        snprintf(what, sizeof what, "expected '%c'", c);
        return js_fail(j, what);
    }
    j->s++;
    return 0;
}

static int js_string(Json *j, char *out, size_t cap) {
    size_t n = 0;
    if (js_expect(j, '"') != 0) return -1;
    while (j->s < j->end && *j->s != '"') {
        char c = *j->s++;
        if ((unsigned char)c < 0x20) return js_fail(j, "control character in string");
        if (c == '\\') {
            if (j->s >= j->end) break;
            c = *j->s++;
            switch (c) {
            case 'n': c = '\n'; break;
            case 't': c = '\t'; break;
            case 'r': c = '\r'; break;
            case 'b': c = '\b'; break;
            case 'f': c = '\f'; break;
            case 'u': /* keep \uXXXX as '?' : names in ivae files are ASCII */
                if (j->end - j->s < 4) return js_fail(j, "bad \\u escape");
                j->s += 4;
                c = '?';
                break;
            case '"': case '\\': case '/': break;
            default: return js_fail(j, "bad escape");
            }
        }
        if (n + 1 >= cap) return js_fail(j, "string too long");
        out[n++] = c;
    }
    if (j->s >= j->end) return js_fail(j, "unterminated string");
    j->s++;
    out[n] = 0;
    return 0;
}

static int js_int(Json *j, int64_t *v) {
    js_ws(j);
    const char *st = j->s;
    int64_t x = 0;
    while (j->s < j->end && *j->s >= '0' && *j->s <= '9') {
        if (x > (INT64_MAX - 9) / 10) return js_fail(j, "integer too large");
        x = 10 * x + (*j->s++ - '0');
    }
    if (j->s == st) return js_fail(j, "expected a non-negative integer");
    *v = x;
    return 0;
}

/* skips any JSON value (for keys ivae does not use) */
static int js_skip(Json *j, int depth) {
    js_ws(j);
    if (j->s >= j->end) return js_fail(j, "unexpected end");
    if (depth > 32) return js_fail(j, "nesting too deep");
    char c = *j->s;
    if (c == '"') {
        char tmp[4096];
        return js_string(j, tmp, sizeof tmp);
    }
    if (c == '{' || c == '[') {
        char close = c == '{' ? '}' : ']';
        j->s++;
        js_ws(j);
        if (j->s < j->end && *j->s == close) {
            j->s++;
            return 0;
        }
        for (;;) {
            if (c == '{') {
                char tmp[4096];
                if (js_string(j, tmp, sizeof tmp) != 0 || js_expect(j, ':') != 0) return -1;
            }
            if (js_skip(j, depth + 1) != 0) return -1;
            js_ws(j);
            if (j->s < j->end && *j->s == ',') {
                j->s++;
                continue;
            }
            return js_expect(j, close);
        }
    }
    while (j->s < j->end && (strchr("+-.eE", *j->s) || (*j->s >= '0' && *j->s <= '9') || (*j->s >= 'a' && *j->s <= 'z'))) j->s++;
    return 0;
}

static int js_next(Json *j, char close) {
    /* after a member: ',' (returns 1: more) or the closing bracket (returns 0) */
    js_ws(j);
    if (j->s < j->end && *j->s == ',') {
        j->s++;
        return 1;
    }
    if (js_expect(j, close) != 0) return -1;
    return 0;
}

static int st_parse_tensor(Json *j, IvaeStTensor *t) {
    char key[64], val[64];
    int have_dtype = 0, have_shape = 0, have_off = 0;
    if (js_expect(j, '{') != 0) return -1;
    js_ws(j);
    if (j->s < j->end && *j->s == '}') return js_fail(j, "empty tensor entry");
    for (;;) {
        if (js_string(j, key, sizeof key) != 0 || js_expect(j, ':') != 0) return -1;
        if (strcmp(key, "dtype") == 0) {
            if (js_string(j, val, sizeof val) != 0) return -1;
            if (strcmp(val, "F32") == 0) t->dtype = IVAE_F32;
            else if (strcmp(val, "F16") == 0) t->dtype = IVAE_F16;
            else if (strcmp(val, "BF16") == 0) t->dtype = IVAE_BF16;
            else if (strcmp(val, "F64") == 0) t->dtype = IVAE_F64;
            else {
                ivae_set_error("%s: tensor '%s' has dtype %s (ivae reads F32, F16, BF16, F64)", j->path, t->name, val);
                return -1;
            }
            have_dtype = 1;
        } else if (strcmp(key, "shape") == 0 || strcmp(key, "data_offsets") == 0) {
            int is_shape = key[0] == 's', n = 0;
            int64_t v[8];
            if (js_expect(j, '[') != 0) return -1;
            js_ws(j);
            if (j->s < j->end && *j->s == ']') j->s++;
            else
                for (;;) {
                    if (n == 8) return js_fail(j, "more than 8 entries in a shape");
                    if (js_int(j, &v[n++]) != 0) return -1;
                    int more = js_next(j, ']');
                    if (more < 0) return -1;
                    if (!more) break;
                }
            if (is_shape) {
                t->ndim = n;
                memcpy(t->shape, v, n * sizeof(int64_t));
                have_shape = 1;
            } else {
                if (n != 2) return js_fail(j, "data_offsets must hold 2 numbers");
                t->begin = (size_t)v[0];
                t->end = (size_t)v[1];
                have_off = 1;
            }
        } else if (js_skip(j, 0) != 0)
            return -1;
        int more = js_next(j, '}');
        if (more < 0) return -1;
        if (!more) break;
    }
    if (!have_dtype || !have_shape || !have_off) {
        ivae_set_error("%s: tensor '%s' lacks %s", j->path, t->name, !have_dtype ? "a dtype" : !have_shape ? "a shape" : "data_offsets");
        return -1;
    }
    return 0;
}

static int st_parse_meta(Json *j, IvaeSt *st) {
    if (js_expect(j, '{') != 0) return -1;
    js_ws(j);
    if (j->s < j->end && *j->s == '}') {
        j->s++;
        return 0;
    }
    for (;;) {
        char key[64], val[256];
        if (js_string(j, key, sizeof key) != 0 || js_expect(j, ':') != 0 || js_string(j, val, sizeof val) != 0) return -1;
        st->meta_key = realloc(st->meta_key, (st->n_meta + 1) * sizeof *st->meta_key);
        st->meta_val = realloc(st->meta_val, (st->n_meta + 1) * sizeof *st->meta_val);
        if (!st->meta_key || !st->meta_val) return js_fail(j, "out of memory");
        memcpy(st->meta_key[st->n_meta], key, sizeof key);
        memcpy(st->meta_val[st->n_meta], val, sizeof val);
        st->n_meta++;
        int more = js_next(j, '}');
        if (more < 0) return -1;
        if (!more) return 0;
    }
}

static int st_check_tensor(const IvaeSt *st, IvaeStTensor *t) {
    size_t numel = 1;
    for (int d = 0; d < t->ndim; d++) {
        if (t->shape[d] < 0 || t->shape[d] > ((int64_t)1 << 40) ||
            (t->shape[d] > 0 && numel > ((size_t)1 << 40) / (size_t)t->shape[d])) {
            ivae_set_error("%s: tensor '%s' has an impossible shape", st->path, t->name);
            return -1;
        }
        numel *= (size_t)t->shape[d];
    }
    t->numel = numel;
    if (t->begin > t->end || t->end > st->data_len) {
        ivae_set_error("%s: tensor '%s' has data_offsets [%zu, %zu] outside the %zu data bytes (truncated or corrupt file)",
                       st->path, t->name, t->begin, t->end, st->data_len);
        return -1;
    }
    if (t->end - t->begin != numel * dtype_size(t->dtype)) {
        ivae_set_error("%s: tensor '%s' holds %zu bytes but its shape and dtype need %zu", st->path, t->name,
                       t->end - t->begin, numel * dtype_size(t->dtype));
        return -1;
    }
    return 0;
}

/* The tensors must tile the data section (the safetensors rule): taken in
   the order of their offsets, each begins where the one before ends, the
   first at 0 and the last at the end of the file, so that no byte is
   shared (a small file cannot declare a huge model) and none is unused. */
static int cmp_begin(const void *a, const void *b) {
    const IvaeStTensor *x = *(const IvaeStTensor *const *)a, *y = *(const IvaeStTensor *const *)b;
    if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
    return x->end < y->end ? -1 : x->end > y->end;
}

static int st_check_tiling(const IvaeSt *st) {
    const IvaeStTensor **by = xcalloc(st->n, sizeof *by);
    for (int k = 0; k < st->n; k++) by[k] = &st->t[k];
    qsort(by, st->n, sizeof *by, cmp_begin);
    size_t at = 0;
    for (int k = 0; k < st->n; k++) {
        if (by[k]->begin != at) {
            if (by[k]->begin < at)
                ivae_set_error("%s: tensor '%s' (data_offsets [%zu, %zu]) overlaps tensor '%s' (tensors may not share bytes)",
                               st->path, by[k]->name, by[k]->begin, by[k]->end, by[k - 1]->name);
            else
                ivae_set_error("%s: %zu unused data bytes before tensor '%s' (data_offsets must tile the data without gaps)",
                               st->path, by[k]->begin - at, by[k]->name);
            free(by);
            return -1;
        }
        at = by[k]->end;
    }
    free(by);
    if (at != st->data_len) {
        ivae_set_error("%s: %zu data bytes after the last tensor (data_offsets must tile the data; truncated header or corrupt file)",
                       st->path, st->data_len - at);
        return -1;
    }
    return 0;
}

/* the checksum of the data, where the metadata holds one (ivae writes it;
   files from elsewhere, without it, load as before) */
static int st_check_crc(const IvaeSt *st) {
    const char *v = ivae_st_meta(st, IVAE_ST_CRC_KEY);
    if (!v) return 0;
    unsigned long long want;
    char *end;
    if (strlen(v) != 8 || strspn(v, "0123456789abcdef") != 8 || (want = strtoull(v, &end, 16), *end)) {
        ivae_set_error("%s: metadata '%s' = '%s' is not 8 lowercase hex digits", st->path, IVAE_ST_CRC_KEY, v);
        return -1;
    }
    uint32_t got = st_crc32(0, st->data, st->data_len);
    if (got != (uint32_t)want) {
        ivae_set_error("%s: checksum mismatch: the data's CRC-32 is %08x, the metadata says %s (the file is corrupt)",
                       st->path, got, v);
        return -1;
    }
    return 0;
}

void ivae_st_close(IvaeSt *st) {
    if (!st) return;
    free(st->data);
    free(st->t);
    free(st->meta_key);
    free(st->meta_val);
    free(st);
}

IvaeSt *ivae_st_open(const char *path) {
    const uint16_t one = 1;
    if (*(const unsigned char *)&one != 1) {
        ivae_set_error("this build reads safetensors only on little-endian machines");
        return NULL;
    }
    FILE *f = fopen(path, "rb");
    if (!f) {
        ivae_set_error("%s: cannot open: %s", path, strerror(errno));
        return NULL;
    }
    IvaeSt *st = xcalloc(1, sizeof *st);
    snprintf(st->path, sizeof st->path, "%s", path);
    unsigned char len8[8];
    char *hdr = NULL;
    long fsize = -1;
    struct stat sb;
    if (fstat(fileno(f), &sb) != 0 || !S_ISREG(sb.st_mode)) {
        ivae_set_error("%s: not a regular file", path);
        goto fail;
    }
    if (fseek(f, 0, SEEK_END) == 0) fsize = ftell(f);
    if (fsize < 0 || fseek(f, 0, SEEK_SET) != 0) {
        ivae_set_error("%s: cannot read (not a regular file?)", path);
        goto fail;
    }
    if (fsize < 8 || fread(len8, 1, 8, f) != 8) {
        ivae_set_error("%s: too short to be a safetensors file (%ld bytes)", path, fsize);
        goto fail;
    }
    uint64_t hlen = 0;
    for (int b = 7; b >= 0; b--) hlen = (hlen << 8) | len8[b];
    if (hlen < 2 || hlen > ST_MAX_HEADER || hlen > (uint64_t)fsize - 8) {
        ivae_set_error("%s: header length %llu does not fit the %ld-byte file (truncated or not safetensors)",
                       path, (unsigned long long)hlen, fsize);
        goto fail;
    }
    hdr = xmalloc(hlen + 1);
    st->data_len = (size_t)fsize - 8 - hlen;
    st->data = xmalloc(st->data_len);
    if (fread(hdr, 1, hlen, f) != hlen || fread(st->data, 1, st->data_len, f) != st->data_len) {
        ivae_set_error("%s: read error", path);
        goto fail;
    }
    hdr[hlen] = 0;
    fclose(f);
    f = NULL;

    Json j = {hdr, hdr + hlen, path, hdr};
    int cap = 0;
    if (js_expect(&j, '{') != 0) goto fail;
    js_ws(&j);
    if (j.s < j.end && *j.s == '}') j.s++;
    else
        for (;;) {
            char name[128];
            if (js_string(&j, name, sizeof name) != 0 || js_expect(&j, ':') != 0) goto fail;
            if (strcmp(name, "__metadata__") == 0) {
                if (st_parse_meta(&j, st) != 0) goto fail;
            } else {
                if (ivae_st_find(st, name)) {
                    ivae_set_error("%s: tensor '%s' appears twice in the header", path, name);
                    goto fail;
                }
                if (st->n == cap) {
                    cap = cap ? 2 * cap : 64;
                    st->t = realloc(st->t, cap * sizeof *st->t);
                    if (!st->t) goto fail;
                }
                IvaeStTensor *t = &st->t[st->n];
                memset(t, 0, sizeof *t);
                snprintf(t->name, sizeof t->name, "%s", name);
                if (st_parse_tensor(&j, t) != 0 || st_check_tensor(st, t) != 0) goto fail;
                st->n++;
            }
            int more = js_next(&j, '}');
            if (more < 0) goto fail;
            if (!more) break;
        }
    js_ws(&j);
    if (j.s != j.end) {
        js_fail(&j, "trailing bytes after the header object");
        goto fail;
    }
    if (st_check_tiling(st) != 0 || st_check_crc(st) != 0) goto fail;
    free(hdr);
    return st;
fail:
    if (f) fclose(f);
    free(hdr);
    ivae_st_close(st);
    return NULL;
}

const IvaeStTensor *ivae_st_find(const IvaeSt *st, const char *name) {
    for (int k = 0; k < st->n; k++)
        if (strcmp(st->t[k].name, name) == 0) return &st->t[k];
    return NULL;
}

const char *ivae_st_meta(const IvaeSt *st, const char *key) {
    for (int k = 0; k < st->n_meta; k++)
        if (strcmp(st->meta_key[k], key) == 0) return st->meta_val[k];
    return NULL;
}

static float half_to_float(uint16_t h) {
    uint32_t sign = (uint32_t)(h >> 15) << 31, exp = (h >> 10) & 31, man = h & 1023, bits;
    if (exp == 31) bits = sign | 0x7f800000u | (man << 13); /* inf, NaN */
    else if (exp != 0) bits = sign | ((exp + 112) << 23) | (man << 13);
    else if (man == 0) bits = sign; /* zero */
    else { /* subnormal: renormalise */
        int e = -1;
        do {
            man <<= 1;
            e++;
        } while (!(man & 1024));
        bits = sign | ((uint32_t)(112 - e) << 23) | ((man & 1023) << 13);
    }
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

int ivae_st_read(const IvaeSt *st, const IvaeStTensor *t, real *dst) {
    const unsigned char *src = st->data + t->begin;
    for (size_t k = 0; k < t->numel; k++) {
        double v;
        if (t->dtype == IVAE_F32) {
            float f;
            memcpy(&f, src + 4 * k, 4);
            v = f;
        } else if (t->dtype == IVAE_F64) {
            memcpy(&v, src + 8 * k, 8);
        } else {
            uint16_t h;
            memcpy(&h, src + 2 * k, 2);
            if (t->dtype == IVAE_F16) v = half_to_float(h);
            else {
                uint32_t bits = (uint32_t)h << 16;
                float f;
                memcpy(&f, &bits, 4);
                v = f;
            }
        }
        if (!isfinite(v)) {
            ivae_set_error("%s: tensor '%s' holds %s at index %zu", st->path, t->name, isnan(v) ? "NaN" : "inf", k);
            return -1;
        }
        dst[k] = (real)v;
    }
    return 0;
}

/* a JSON string literal's body: quotes, backslashes and control characters escaped */
static size_t json_escape(char *out, size_t cap, const char *s) {
    size_t n = 0;
    for (; *s && n + 7 < cap; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\') out[n++] = '\\', out[n++] = (char)c;
        else if (c < 0x20) n += (size_t)snprintf(out + n, cap - n, "\\u%04x", c);
        else out[n++] = (char)c;
    }
    out[n] = 0;
    return n;
}

/* entry k's values as the F32 bytes the file holds, 4096 at a time:
   fn(ctx, bytes, count) for each piece, in order; stops when fn returns 0 */
static int st_each_piece(const IvaeStEntry *e, int n, int (*fn)(void *, const float *, size_t), void *ctx) {
    float buf[4096];
    for (int k = 0; k < n; k++) {
        size_t numel = 1;
        for (int d = 0; d < e[k].ndim; d++) numel *= (size_t)e[k].shape[d];
        for (size_t s = 0; s < numel; s += 4096) {
            size_t c = numel - s < 4096 ? numel - s : 4096;
            for (size_t q = 0; q < c; q++) buf[q] = (float)e[k].data[s + q];
            if (!fn(ctx, buf, c)) return 0;
        }
    }
    return 1;
}

static int piece_crc(void *ctx, const float *p, size_t c) {
    *(uint32_t *)ctx = st_crc32(*(uint32_t *)ctx, (const unsigned char *)p, 4 * c);
    return 1;
}

static int piece_write(void *ctx, const float *p, size_t c) { return fwrite(p, 4, c, (FILE *)ctx) == c; }

/* The temporaries of earlier writes of path that were killed before their
   rename (kill -9, power loss): path.tmp.PID where no process PID is alive
   any more. A live PID's file is left alone: that write may be under way. */
static void st_remove_stale(const char *path) {
    char dir[1024], prefix[512];
    const char *slash = strrchr(path, '/');
    if (slash) snprintf(dir, sizeof dir, "%.*s", (int)(slash - path), path);
    else snprintf(dir, sizeof dir, ".");
    if (slash && slash == path) snprintf(dir, sizeof dir, "/");
    snprintf(prefix, sizeof prefix, "%s.tmp.", slash ? slash + 1 : path);
    DIR *d = opendir(dir);
    if (!d) return;
    size_t np = strlen(prefix);
    struct dirent *e;
    while ((e = readdir(d))) {
        const char *pid_s = e->d_name + np;
        long long pid;
        if (strncmp(e->d_name, prefix, np) != 0 || parse_int(pid_s, 1, INT_MAX, &pid) != 0) continue;
        if (pid == (long long)getpid() || kill((pid_t)pid, 0) == 0 || errno != ESRCH) continue;
        char full[2048];
        snprintf(full, sizeof full, "%s/%s", dir, e->d_name);
        struct stat sb;
        if (lstat(full, &sb) == 0 && S_ISREG(sb.st_mode)) remove(full);
    }
    closedir(d);
}

int ivae_st_write(const char *path, const IvaeStEntry *e, int n, const char *const *meta_kv, int n_meta) {
    char k1[1200], v1[1200];
    /* the data's checksum goes in the metadata (SPEC 5): a first pass over
       the values, the same conversion the write does */
    uint32_t crc = 0;
    char crc_hex[16];
    st_each_piece(e, n, piece_crc, &crc);
    snprintf(crc_hex, sizeof crc_hex, "%08x", crc);
    /* the header: metadata first, then the tensors in the given order */
    size_t cap = 4096 + (size_t)n * 256 + (size_t)n_meta * 600, len = 0, off = 0;
    char *h = xmalloc(cap);
#define EMIT(...) len += (size_t)snprintf(h + len, cap - len, __VA_ARGS__)
    EMIT("{");
    EMIT("\"__metadata__\":{");
    for (int k = 0; k < n_meta; k++) {
        if (!strcmp(meta_kv[2 * k], IVAE_ST_CRC_KEY)) continue; /* ours is the one that counts */
        json_escape(k1, sizeof k1, meta_kv[2 * k]), json_escape(v1, sizeof v1, meta_kv[2 * k + 1]);
        EMIT("\"%s\":\"%s\",", k1, v1);
    }
    EMIT("\"%s\":\"%s\"}", IVAE_ST_CRC_KEY, crc_hex);
    for (int k = 0; k < n; k++) {
        size_t numel = 1;
        json_escape(k1, sizeof k1, e[k].name);
        EMIT(",\"%s\":{\"dtype\":\"F32\",\"shape\":[", k1);
        for (int d = 0; d < e[k].ndim; d++) {
            EMIT("%s%lld", d ? "," : "", (long long)e[k].shape[d]);
            numel *= (size_t)e[k].shape[d];
        }
        EMIT("],\"data_offsets\":[%zu,%zu]}", off, off + 4 * numel);
        off += 4 * numel;
    }
    EMIT("}");
#undef EMIT
    if (len + 8 >= cap) {
        free(h);
        ivae_set_error("%s: header too large", path);
        return -1;
    }
    while (len % 8) h[len++] = ' '; /* pad so the data starts 8-byte aligned */

    st_remove_stale(path);
    char tmp[1100];
    snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid());
    FILE *f = fopen(tmp, "wb");
    if (!f) {
        free(h);
        ivae_set_error("%s: cannot create: %s", tmp, strerror(errno));
        return -1;
    }
    unsigned char len8[8];
    for (int b = 0; b < 8; b++) len8[b] = (unsigned char)((uint64_t)len >> (8 * b));
    int ok = fwrite(len8, 1, 8, f) == 8 && fwrite(h, 1, len, f) == len;
    free(h);
    ok = ok && st_each_piece(e, n, piece_write, f);
    ok = ok && fflush(f) == 0 && fsync(fileno(f)) == 0;
    ok = (fclose(f) == 0) && ok;
    if (!ok || rename(tmp, path) != 0) {
        ivae_set_error("%s: write failed: %s", path, strerror(errno));
        remove(tmp);
        return -1;
    }
    return 0;
}

