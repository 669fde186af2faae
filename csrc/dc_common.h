/* Shared helpers for the datacomms C headers: status codes, alignment and
 * little-endian loads/stores. Python owns every buffer; these functions only
 * interpret (base, len) pairs they are given. */
#ifndef DC_COMMON_H
#define DC_COMMON_H

#include <stdint.h>
#include <stddef.h>
#include <string.h>

/* Status codes. Each Cython module turns them into dc.* exceptions in one place. */
#define DC_OK               0
#define DC_ERR_TRUNCATED   -1   /* fewer bytes than the header or the frame needs */
#define DC_ERR_MAGIC       -2   /* not a datacomms frame */
#define DC_ERR_VERSION     -3   /* a frame version this build does not read */
#define DC_ERR_KIND        -4   /* unknown kind or reserved flag bits set */
#define DC_ERR_LENGTH      -5   /* lengths in the header disagree with each other */
#define DC_ERR_TOO_BIG     -6   /* frame larger than the caller's max_frame_size */
#define DC_ERR_RESERVED    -7   /* reserved header bytes are not zero */

#define DC_ALIGN 64u

static inline uint64_t dc_align64(uint64_t n) { return (n + (DC_ALIGN - 1u)) & ~(uint64_t)(DC_ALIGN - 1u); }

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
#define DC_BSWAP16(x) __builtin_bswap16(x)
#define DC_BSWAP32(x) __builtin_bswap32(x)
#define DC_BSWAP64(x) __builtin_bswap64(x)
#else
#define DC_BSWAP16(x) (x)
#define DC_BSWAP32(x) (x)
#define DC_BSWAP64(x) (x)
#endif

/* memcpy keeps these safe on unaligned addresses; compilers turn them into single moves. */
static inline uint16_t dc_ld16(const uint8_t *p) { uint16_t v; memcpy(&v, p, 2); return DC_BSWAP16(v); }
static inline uint32_t dc_ld32(const uint8_t *p) { uint32_t v; memcpy(&v, p, 4); return DC_BSWAP32(v); }
static inline uint64_t dc_ld64(const uint8_t *p) { uint64_t v; memcpy(&v, p, 8); return DC_BSWAP64(v); }
static inline void dc_st16(uint8_t *p, uint16_t v) { v = DC_BSWAP16(v); memcpy(p, &v, 2); }
static inline void dc_st32(uint8_t *p, uint32_t v) { v = DC_BSWAP32(v); memcpy(p, &v, 4); }
static inline void dc_st64(uint8_t *p, uint64_t v) { v = DC_BSWAP64(v); memcpy(p, &v, 8); }

#endif
