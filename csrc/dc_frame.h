/* The datacomms frame header (docs/frame-format.md is the specification).
 *
 *  off size field
 *    0    4 magic "DCMF"
 *    4    1 version (1)
 *    5    1 kind (0 raw, 1 array, 2 json, 3 json with buffers)
 *    6    2 flags (bit 0: transport control frame; others reserved, zero)
 *    8    8 seq (u64)
 *   16    8 timestamp_ns (i64)
 *   24    4 meta_len (u32): exact byte length of the JSON meta
 *   28    4 nbufs (u32): number of raw buffers after the meta
 *   32    8 payload_len (u64): end of the last buffer, from the payload start
 *   40    8 frame_len (u64): 64 + align64(meta_len) + align64(payload_len)
 *   48   16 reserved, zero
 *
 * Every frame length is a multiple of 64, so frames laid end to end in a
 * 64-aligned buffer (a ring, a receive buffer) keep every payload aligned. */
#ifndef DC_FRAME_H
#define DC_FRAME_H

#include "dc_common.h"

#define DC_FRAME_HEADER_SIZE 64u
#define DC_FRAME_VERSION 1u
#define DC_KIND_RAW 0u
#define DC_KIND_ARRAY 1u
#define DC_KIND_JSON 2u
#define DC_KIND_JSON_BUFFERS 3u
#define DC_KIND_MAX 3u
#define DC_FLAG_CONTROL 1u
#define DC_FLAGS_KNOWN 1u

static const uint8_t DC_FRAME_MAGIC[4] = {'D', 'C', 'M', 'F'};

typedef struct {
    uint8_t kind;
    uint16_t flags;
    uint64_t seq;
    int64_t timestamp_ns;
    uint32_t meta_len;
    uint32_t nbufs;
    uint64_t payload_len;
    uint64_t frame_len;
} dc_header;

/* The frame length implied by the two section lengths. Callers bound
 * payload_len first (see dc_header_unpack), so the sum cannot overflow. */
static inline uint64_t dc_frame_len(uint32_t meta_len, uint64_t payload_len) {
    return DC_FRAME_HEADER_SIZE + dc_align64(meta_len) + dc_align64(payload_len);
}

/* Writes exactly 64 bytes at out; fills h->frame_len. */
static inline void dc_header_pack(uint8_t *out, dc_header *h) {
    h->frame_len = dc_frame_len(h->meta_len, h->payload_len);
    memcpy(out, DC_FRAME_MAGIC, 4);
    out[4] = (uint8_t)DC_FRAME_VERSION;
    out[5] = h->kind;
    dc_st16(out + 6, h->flags);
    dc_st64(out + 8, h->seq);
    dc_st64(out + 16, (uint64_t)h->timestamp_ns);
    dc_st32(out + 24, h->meta_len);
    dc_st32(out + 28, h->nbufs);
    dc_st64(out + 32, h->payload_len);
    dc_st64(out + 40, h->frame_len);
    memset(out + 48, 0, 16);
}

/* Reads and validates a header from len bytes at buf. Checks, in order:
 * enough bytes for a header, magic, version, kind and flags, reserved bytes,
 * the frame length against max_frame (before any other arithmetic, so
 * nothing overflows), and that the stored frame_len matches the sections.
 * It does not require the whole frame to be present: the caller compares
 * h->frame_len with what it holds. */
static inline int dc_header_unpack(const uint8_t *buf, size_t len, uint64_t max_frame, dc_header *h) {
    if (len < DC_FRAME_HEADER_SIZE) return DC_ERR_TRUNCATED;
    if (memcmp(buf, DC_FRAME_MAGIC, 4) != 0) return DC_ERR_MAGIC;
    if (buf[4] != DC_FRAME_VERSION) return DC_ERR_VERSION;
    h->kind = buf[5];
    h->flags = dc_ld16(buf + 6);
    if (h->kind > DC_KIND_MAX || (h->flags & ~DC_FLAGS_KNOWN) != 0) return DC_ERR_KIND;
    for (int i = 48; i < 64; i++) if (buf[i] != 0) return DC_ERR_RESERVED;
    h->seq = dc_ld64(buf + 8);
    h->timestamp_ns = (int64_t)dc_ld64(buf + 16);
    h->meta_len = dc_ld32(buf + 24);
    h->nbufs = dc_ld32(buf + 28);
    h->payload_len = dc_ld64(buf + 32);
    h->frame_len = dc_ld64(buf + 40);
    if (h->frame_len > max_frame || h->payload_len > max_frame) return DC_ERR_TOO_BIG;
    if (h->frame_len != dc_frame_len(h->meta_len, h->payload_len)) return DC_ERR_LENGTH;
    if ((h->kind == DC_KIND_RAW || h->kind == DC_KIND_ARRAY) && h->nbufs != 1) return DC_ERR_LENGTH;
    if (h->kind == DC_KIND_RAW && h->meta_len != 0) return DC_ERR_LENGTH;
    if (h->kind == DC_KIND_JSON && (h->nbufs != 0 || h->payload_len != 0)) return DC_ERR_LENGTH;
    /* every buffer has an entry of several bytes in the meta table, so a
     * count larger than the meta is a lie told before anything is parsed */
    if (h->kind == DC_KIND_JSON_BUFFERS && (h->nbufs == 0 || h->nbufs > h->meta_len)) return DC_ERR_LENGTH;
    return DC_OK;
}

#endif
