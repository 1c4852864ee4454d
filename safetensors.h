/*
 * safetensors.h: reading and writing safetensors files (SPEC 5): an 8-byte
 * little-endian header length, a JSON header, the raw little-endian data.
 */
#ifndef IVAE_SAFETENSORS_H
#define IVAE_SAFETENSORS_H
#include "ivae.h"


typedef enum { IVAE_F32, IVAE_F16, IVAE_BF16, IVAE_F64 } IvaeDtype;

typedef struct {
    char name[128];
    IvaeDtype dtype;
    int ndim;
    int64_t shape[8];
    size_t numel;
    size_t begin, end;      /* byte offsets in the data section */
} IvaeStTensor;

typedef struct {
    char path[512];
    unsigned char *data;    /* the data section */
    size_t data_len;
    int n;
    IvaeStTensor *t;
    int n_meta;
    char (*meta_key)[64];
    char (*meta_val)[256];
} IvaeSt;

/* the metadata key of the data's checksum: the CRC-32 (zlib's) of every
   byte after the header, 8 lowercase hex digits. ivae_st_write adds it;
   ivae_st_open verifies it where present (SPEC 5). */
#define IVAE_ST_CRC_KEY "data_crc32"

/* reads and validates a whole safetensors file (header, offsets that tile
   the data, sizes, the checksum where there is one) */
IvaeSt *ivae_st_open(const char *path);
void ivae_st_close(IvaeSt *st);
const IvaeStTensor *ivae_st_find(const IvaeSt *st, const char *name);
const char *ivae_st_meta(const IvaeSt *st, const char *key);
/* converts a tensor (F32, F16, BF16 or F64) to real; rejects NaN and inf */
int ivae_st_read(const IvaeSt *st, const IvaeStTensor *t, real *dst);

typedef struct {
    const char *name;
    int ndim;
    int64_t shape[8];
    const real *data;       /* written as F32 */
} IvaeStEntry;

/* writes entries as F32 with the metadata pairs and the data's checksum,
   to a temporary file that is then renamed over path: a crash never leaves
   a half-written file */
int ivae_st_write(const char *path, const IvaeStEntry *e, int n, const char *const *meta_kv, int n_meta);

#endif
