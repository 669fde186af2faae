/* A sequence lock for one writer and any number of readers, in memory shared
 * between processes. The writer never waits: it makes the counter odd, stores
 * the fields, makes it even again. A reader reads the counter, the fields and
 * the counter again, and retries when the counter was odd or moved.
 *
 * Ordering: the fields are relaxed atomics. The writer's release fence after
 * the odd store pairs with the reader's acquire fence before its second
 * counter load, so a reader that saw any new field also sees the counter move
 * (the classic fence-based seqlock; see Boehm, "Can seqlocks get along with
 * programming language memory models?"). */
#ifndef DC_SEQLOCK_H
#define DC_SEQLOCK_H

#include <stdatomic.h>
#include <stdint.h>

typedef _Atomic uint64_t dc_au64;
typedef _Atomic uint32_t dc_au32;

/* The writer keeps the count itself (s, even): it is the only writer, and a
 * count read back from shared memory could have been scribbled on. */
static inline void dc_seqlock_write_begin(dc_au64 *lock, uint64_t s) {
    atomic_store_explicit(lock, s + 1, memory_order_relaxed);
    atomic_thread_fence(memory_order_release);
}

static inline void dc_seqlock_write_end(dc_au64 *lock, uint64_t s) {
    atomic_store_explicit(lock, s + 2, memory_order_release);
}

/* The counter to hand to dc_seqlock_read_retry; odd means a write is under way. */
static inline uint64_t dc_seqlock_read_begin(dc_au64 *lock) {
    return atomic_load_explicit(lock, memory_order_acquire);
}

/* Nonzero when the fields read since read_begin may be torn. */
static inline int dc_seqlock_read_retry(dc_au64 *lock, uint64_t s) {
    atomic_thread_fence(memory_order_acquire);
    return (s & 1u) || atomic_load_explicit(lock, memory_order_relaxed) != s;
}

#endif
