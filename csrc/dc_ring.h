/* The shm:// segment: a single-producer, many-consumer broadcast ring of
 * variable-size records, a latest-value descriptor under a seqlock, futex
 * words for sleeping, and a table of subscriber cursors.
 *
 * The readable reference of the same layout and algorithm is
 * datacomms/backend/python/ring.py; datacomms/backend/_segment.py creates
 * and validates the header (cold path). Python owns the mapping; these
 * functions interpret (base, offsets) that Python has already checked.
 *
 * Positions are absolute byte counts (u64, never wrap in practice); the ring
 * offset of position p is p & (capacity - 1). Every record is a frame of the
 * framing layer (dc_frame.h), written in place, or a padding record that
 * fills the end of the ring when a frame does not fit there. Both are
 * multiples of 64 bytes, so every frame and payload stays 64-byte aligned.
 *
 * Publishing a record [s, e):
 *   1. HEAD moves past every old record that [s, e) will overwrite, and
 *      INTENT = e (it stays higher after a reservation never published),
 *      both before any byte of the record is written (release fence: a
 *      reader that sees a new byte sees the new INTENT).
 *   2. the frame is written in place;
 *   3. TAIL = e (release: a reader that sees TAIL sees the whole record);
 *   4. the latest-value descriptor (pos, len, seq) is updated under a seqlock;
 *   5. a full fence, then a futex wake only when a reader set the sleepers flag,
 *      and a datagram to each reader that sleeps in an event loop (below).
 * Reading a record at cursor c: TAIL (acquire) says it exists, its header is
 * validated against what can be in the ring, the bytes are copied out, then
 * (acquire fence) INTENT is re-read: when INTENT - c > capacity the writer may
 * have overwritten the record while it was copied, so the copy is dropped and
 * the reader resynchronises on HEAD (the Aeron broadcast-buffer check). Loss
 * is then counted exactly from the frames' seq numbers.
 *
 * The record bytes themselves are copied with plain memcpy while the writer
 * may be storing into them; that race is benign because no copy is used
 * until the INTENT re-check proves it was not overwritten.
 *
 * Readers in an event loop (asyncio) cannot sleep on a futex; each one owns
 * a unix datagram socket bound to the abstract name "dc-wake-<16 hex>" and
 * writes that id into its slot. To sleep it sets its slot's WAKE flag, then
 * ASYNC_SLEEPERS, then (full fence) re-checks TAIL and waits for its socket
 * to become readable. The publisher, after its fence, sees ASYNC_SLEEPERS,
 * clears it, and sends one byte to every active slot whose WAKE flag it
 * clears. All these are seq_cst operations: either the reader's re-check
 * sees the new TAIL or the publisher's scan sees its WAKE flag. The
 * common case (no async reader asleep) costs the publisher one load.
 * A block-mode publisher waiting for room in an event loop does the same
 * with SPACE_ASYNC and SPACE_WAKE_ID; a reader that advances wakes it. */
#ifndef DC_RING_H
#define DC_RING_H

#include <stdatomic.h>
#include <stdint.h>
#include <string.h>
#include <errno.h>
#include <limits.h>
#include <time.h>
#include <unistd.h>
#include <stddef.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <linux/futex.h>

#include "dc_common.h"
#include "dc_frame.h"
#include "dc_seqlock.h"

/* Status codes beyond dc_common.h's. Positive ones are not errors. */
#define DC_RING_EMPTY    1   /* nothing new at the cursor */
#define DC_RING_LAPPED   2   /* the cursor was overwritten: resynchronise */
#define DC_RING_FULL     3   /* block mode: a live subscriber has not read far enough */
#define DC_ERR_CORRUPT  -8   /* a record that is neither valid nor overwritten */

#define DC_RING_MAGIC 0x474E495248534344ull  /* "DCSHRING" little-endian */
#define DC_RING_VERSION 1u

/* Header layout (byte offsets). Lines 0..5 are 64-byte cache lines. */
/* line 0: configuration, written once before the segment is linked into /dev/shm */
#define DC_RING_OFF_MAGIC        0    /* u64 */
#define DC_RING_OFF_VERSION      8    /* u32 */
#define DC_RING_OFF_DATA         12   /* u32: offset of the ring bytes */
#define DC_RING_OFF_CAPACITY     16   /* u64: ring bytes, a power of two */
#define DC_RING_OFF_MAX_SUBS     24   /* u32 */
#define DC_RING_OFF_FLAGS        28   /* u32: DC_RING_FLAG_* */
#define DC_RING_OFF_OWNER_PID    32   /* u64 */
#define DC_RING_OFF_OWNER_START  40   /* u64: process start time, clock ticks after boot */
#define DC_RING_OFF_SIZE         48   /* u64: whole segment size */
/* line 1: the writer's indices; only the publisher stores here */
#define DC_RING_OFF_TAIL         64   /* u64: end of the last published record */
#define DC_RING_OFF_INTENT       72   /* u64: end of the record being written */
#define DC_RING_OFF_HEAD         80   /* u64: start of the oldest intact record */
#define DC_RING_OFF_HEARTBEAT    88   /* u64: time_ns of the last publish (diagnostics) */
#define DC_RING_OFF_CLOSED       96   /* u32: the publisher closed cleanly */
/* line 2: readers sleep here when the ring is empty */
#define DC_RING_OFF_DATA_WORD    128  /* u32 futex word */
#define DC_RING_OFF_DATA_SLEEPERS 132 /* u32: set by a reader about to sleep, cleared by the waker */
#define DC_RING_OFF_ASYNC_SLEEPERS 136 /* u32: some reader sleeps on its wake socket (its slot's WAKE says which) */
/* line 3: the publisher sleeps here in block mode; subscribers attaching bump SUBS_WORD */
#define DC_RING_OFF_SPACE_WORD   192
#define DC_RING_OFF_SPACE_SLEEPERS 196
#define DC_RING_OFF_SUBS_WORD    200
#define DC_RING_OFF_SPACE_ASYNC  204  /* u32: the publisher sleeps on its wake socket (block mode) */
#define DC_RING_OFF_SPACE_WAKE_ID 208 /* u64: names that socket, as DC_RING_SLOT_WAKE_ID does */
/* line 4: the latest-value descriptor under a seqlock */
#define DC_RING_OFF_LATEST_LOCK  256  /* u64 seqlock counter; 0: nothing published yet */
#define DC_RING_OFF_LATEST_POS   264
#define DC_RING_OFF_LATEST_LEN   272
#define DC_RING_OFF_LATEST_SEQ   280
/* subscriber slots, one cache line each so cursors never share a line */
#define DC_RING_OFF_SLOTS        512
#define DC_RING_SLOT_SIZE        64
#define DC_RING_SLOT_STATE       0    /* u32: DC_SLOT_* */
#define DC_RING_SLOT_PID         4    /* u32 (diagnostics; liveness is a lock on the slot's byte) */
#define DC_RING_SLOT_CURSOR      16   /* u64 */
#define DC_RING_SLOT_JOIN_SEQ    24   /* u64: seq of the record at the cursor the subscriber joined at */
#define DC_RING_SLOT_WAKE        32   /* u32: the subscriber sleeps on its wake socket */
#define DC_RING_SLOT_WAKE_ID     40   /* u64: names that socket: abstract unix address "dc-wake-<id in hex>" */

#define DC_SLOT_FREE    0u
#define DC_SLOT_ACTIVE  1u
#define DC_RING_FLAG_BLOCK 1u

static const uint8_t DC_PAD_MAGIC[4] = {'D', 'C', 'P', 'D'};

#define DC_AU64(base, off) ((dc_au64 *)((base) + (off)))
#define DC_AU32(base, off) ((dc_au32 *)((base) + (off)))

static inline void dc_cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}

static inline int64_t dc_realtime_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000000ll + ts.tv_nsec;
}

static inline int64_t dc_monotonic_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000ll + ts.tv_nsec;
}

/* Shared (not FUTEX_PRIVATE) futex calls: the word lives in a mapping other
 * processes share. Wait returns 0 when woken or when the word had already
 * moved, ETIMEDOUT, or EINTR (a signal: the caller checks it). */
static inline int dc_futex_wait(dc_au32 *word, uint32_t expected, int64_t timeout_ns) {
    struct timespec ts;
    ts.tv_sec = (time_t)(timeout_ns / 1000000000ll);
    ts.tv_nsec = (long)(timeout_ns % 1000000000ll);
    if (syscall(SYS_futex, (uint32_t *)word, FUTEX_WAIT, expected, &ts, NULL, 0) == 0) return 0;
    if (errno == EAGAIN) return 0;
    return errno;
}

static inline void dc_futex_wake_all(dc_au32 *word) {
    syscall(SYS_futex, (uint32_t *)word, FUTEX_WAKE, INT_MAX, NULL, NULL, 0);
}

/* Wakes the sleepers of word if one announced itself through flag. The
 * caller has made its news visible and issued a full fence first, so either
 * the sleeper's re-check sees the news or this load sees its flag. */
static inline int dc_wake_if_sleeping(dc_au32 *word, dc_au32 *flag) {
    if (!atomic_load_explicit(flag, memory_order_relaxed)) return 0;
    atomic_store_explicit(flag, 0, memory_order_relaxed);
    atomic_fetch_add_explicit(word, 1, memory_order_release);
    dc_futex_wake_all(word);
    return 1;
}

/* The futex value to sleep on. Take it before the last re-check of the
 * condition: the flag store and the full fence pair with the waker's fence. */
static inline uint32_t dc_sleep_prepare(dc_au32 *word, dc_au32 *flag) {
    uint32_t v = atomic_load_explicit(word, memory_order_acquire);
    atomic_store_explicit(flag, 1, memory_order_relaxed);
    atomic_thread_fence(memory_order_seq_cst);
    return v;
}

/* One byte to the wake socket named by id. Errors are ignored on purpose:
 * nobody bound (the subscriber went away) or a full socket buffer (a wake
 * is already pending) both need nothing more. */
static inline void dc_wake_send(int fd, uint64_t id) {
    static const char hex[] = "0123456789abcdef";
    struct sockaddr_un a;
    char b = 0;
    if (fd < 0) return;
    memset(&a, 0, sizeof a);
    a.sun_family = AF_UNIX;
    memcpy(a.sun_path + 1, "dc-wake-", 8);   /* sun_path[0] = 0: the abstract namespace */
    for (int i = 0; i < 16; i++) a.sun_path[9 + i] = hex[(id >> (60 - 4 * i)) & 15];
    sendto(fd, &b, 1, MSG_DONTWAIT | MSG_NOSIGNAL, (struct sockaddr *)&a,
           (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 25));
}

/* Wakes the readers sleeping on their wake sockets, if one announced itself.
 * The caller made its news visible and issued a full fence. Returns how many. */
static inline int dc_wake_async(uint8_t *base, uint32_t max_subs, int fd) {
    dc_au32 *any = DC_AU32(base, DC_RING_OFF_ASYNC_SLEEPERS);
    int n = 0;
    if (!atomic_load_explicit(any, memory_order_relaxed)) return 0;
    if (!atomic_exchange_explicit(any, 0, memory_order_seq_cst)) return 0;
    for (uint32_t i = 0; i < max_subs; i++) {
        uint8_t *slot = base + DC_RING_OFF_SLOTS + (uint64_t)i * DC_RING_SLOT_SIZE;
        if (atomic_load_explicit(DC_AU32(slot, DC_RING_SLOT_STATE), memory_order_seq_cst) != DC_SLOT_ACTIVE)
            continue;
        if (!atomic_load_explicit(DC_AU32(slot, DC_RING_SLOT_WAKE), memory_order_seq_cst))
            continue;
        if (!atomic_exchange_explicit(DC_AU32(slot, DC_RING_SLOT_WAKE), 0, memory_order_seq_cst))
            continue;
        dc_wake_send(fd, atomic_load_explicit(DC_AU64(slot, DC_RING_SLOT_WAKE_ID), memory_order_relaxed));
        n++;
    }
    return n;
}

/* Wakes a block-mode publisher sleeping on its wake socket, if it announced itself. */
static inline void dc_wake_space_async(uint8_t *base, int fd) {
    dc_au32 *flag = DC_AU32(base, DC_RING_OFF_SPACE_ASYNC);
    if (!atomic_load_explicit(flag, memory_order_relaxed)) return;
    if (!atomic_exchange_explicit(flag, 0, memory_order_seq_cst)) return;
    dc_wake_send(fd, atomic_load_explicit(DC_AU64(base, DC_RING_OFF_SPACE_WAKE_ID), memory_order_relaxed));
}

/* A block-mode publisher about to sleep on its wake socket for room; it tries
 * to reserve once more after this (the re-check of the handshake). */
static inline void dc_space_async_prepare(uint8_t *base, uint64_t id) {
    atomic_store_explicit(DC_AU64(base, DC_RING_OFF_SPACE_WAKE_ID), id, memory_order_relaxed);
    atomic_store_explicit(DC_AU32(base, DC_RING_OFF_SPACE_ASYNC), 1, memory_order_seq_cst);
    atomic_thread_fence(memory_order_seq_cst);
}

/* A reader about to sleep on its wake socket: announces itself and returns
 * 1 when it may sleep, 0 when the ring already holds something past the
 * cursor or is closed (then it reads instead; the flags it left cost at most
 * one spurious wake). */
static inline int dc_async_prepare(uint8_t *base, uint32_t slot, uint64_t id, uint64_t cursor) {
    uint8_t *s = base + DC_RING_OFF_SLOTS + (uint64_t)slot * DC_RING_SLOT_SIZE;
    atomic_store_explicit(DC_AU64(s, DC_RING_SLOT_WAKE_ID), id, memory_order_relaxed);
    atomic_store_explicit(DC_AU32(s, DC_RING_SLOT_WAKE), 1, memory_order_seq_cst);
    atomic_store_explicit(DC_AU32(base, DC_RING_OFF_ASYNC_SLEEPERS), 1, memory_order_seq_cst);
    atomic_thread_fence(memory_order_seq_cst);
    if (atomic_load_explicit(DC_AU64(base, DC_RING_OFF_TAIL), memory_order_seq_cst) != cursor) return 0;
    return !atomic_load_explicit(DC_AU32(base, DC_RING_OFF_CLOSED), memory_order_acquire);
}

/* Length of the record at p (frame or pad) when it is plausible, else 0.
 * room is the number of bytes up to the end of the ring. */
static inline uint64_t dc_record_len(const uint8_t *p, uint64_t room) {
    uint64_t len = dc_ld64(p + 40);
    if (len < 64 || (len & 63u) || len > room) return 0;
    return len;
}

static inline void dc_write_pad(uint8_t *p, uint64_t len) {
    memset(p, 0, 64);
    memcpy(p, DC_PAD_MAGIC, 4);
    dc_st64(p + 40, len);
}

/* ---------------------------------------------------------------- writer */

typedef struct {
    uint8_t *base;
    uint8_t *ring;
    uint64_t cap;
    uint64_t mask;
    uint32_t max_subs;
    int block;
    uint64_t tail;        /* the publisher's own copy of TAIL (it is the only writer) */
    uint64_t head;
    uint64_t min_cursor;  /* block mode: a lower bound of every live cursor */
    uint64_t res_pos;     /* the reservation being filled: [res_pos, res_end) */
    uint64_t res_len;
    uint64_t res_end;
    uint64_t intent;      /* the highest INTENT stored: it never goes back (see dc_writer_reserve) */
    uint64_t latest_lock; /* the seqlock count of the latest-value descriptor, even */
    int wake_fd;          /* an unbound unix datagram socket for dc_wake_async, or -1 */
} dc_writer;

static inline void dc_writer_init(dc_writer *w, uint8_t *base) {
    w->base = base;
    w->ring = base + dc_ld32(base + DC_RING_OFF_DATA);
    w->cap = dc_ld64(base + DC_RING_OFF_CAPACITY);
    w->mask = w->cap - 1;
    w->max_subs = dc_ld32(base + DC_RING_OFF_MAX_SUBS);
    w->block = (dc_ld32(base + DC_RING_OFF_FLAGS) & DC_RING_FLAG_BLOCK) != 0;
    w->tail = atomic_load_explicit(DC_AU64(base, DC_RING_OFF_TAIL), memory_order_relaxed);
    w->head = atomic_load_explicit(DC_AU64(base, DC_RING_OFF_HEAD), memory_order_relaxed);
    w->min_cursor = w->tail;
    w->intent = atomic_load_explicit(DC_AU64(base, DC_RING_OFF_INTENT), memory_order_relaxed);
    if (w->intent - w->tail > w->cap) w->intent = w->tail;   /* not one this ring's writer could store */
    w->res_pos = w->res_len = w->res_end = 0;
    w->latest_lock = atomic_load_explicit(DC_AU64(base, DC_RING_OFF_LATEST_LOCK), memory_order_relaxed) & ~(uint64_t)1;
    w->wake_fd = -1;
}

/* Block mode: whether every live cursor leaves room for [t, e), refreshing
 * the cached lower bound. A subscriber at t has read everything; the only
 * thing [t, e) can overwrite that it would read next is the pad at t, and it
 * resynchronises onto the new record without missing a message. */
static inline int dc_writer_room(dc_writer *w, uint64_t t, uint64_t e) {
    uint64_t lowest = t;
    int ok = 1;
    for (uint32_t i = 0; i < w->max_subs; i++) {
        uint8_t *slot = w->base + DC_RING_OFF_SLOTS + (uint64_t)i * DC_RING_SLOT_SIZE;
        if (atomic_load_explicit(DC_AU32(slot, DC_RING_SLOT_STATE), memory_order_acquire) != DC_SLOT_ACTIVE)
            continue;
        /* acquire: the subscriber's copy of the bytes it passed is done before we overwrite them */
        uint64_t c = atomic_load_explicit(DC_AU64(slot, DC_RING_SLOT_CURSOR), memory_order_acquire);
        if (c >= t) continue;
        if (e - c > w->cap) ok = 0;
        if (c < lowest) lowest = c;
    }
    w->min_cursor = lowest;
    return ok;
}

/* Reserves frame_len bytes (a multiple of 64, at most the capacity) for the
 * next record: DC_OK with res_pos set, or DC_RING_FULL in block mode. */
static inline int dc_writer_reserve(dc_writer *w, uint64_t frame_len) {
    uint64_t t = w->tail, off = t & w->mask, pad = 0;
    /* After a reservation here that was never published, INTENT stays at its end (below);
     * when that one had a pad, this record goes past the pad too, so that INTENT - pos
     * stays within the capacity for every record written from now on. */
    if (frame_len > w->cap - off || (off && w->intent - t > w->cap)) pad = w->cap - off;
    uint64_t s = t + pad, e = s + frame_len;
    if (w->block && e - w->min_cursor > w->cap && !dc_writer_room(w, t, e)) return DC_RING_FULL;
    uint64_t h = w->head;
    while (h + w->cap < e) {
        if (h >= t) { h = s; break; }            /* every old record goes, and the pad too */
        uint64_t hoff = h & w->mask;
        uint64_t len = dc_record_len(w->ring + hoff, w->cap - hoff);
        if (len == 0) { h = s; break; }          /* scribbled on: give up on the old records */
        h += len;
    }
    w->head = h;
    /* A reservation that was never published (an aborted loan, a send that failed while
     * filling) may have written up to its end: INTENT stays there, or a smaller record at
     * the same place would make the old records it clobbered look intact again. */
    if (e > w->intent) w->intent = e;
    atomic_store_explicit(DC_AU64(w->base, DC_RING_OFF_HEAD), h, memory_order_relaxed);
    atomic_store_explicit(DC_AU64(w->base, DC_RING_OFF_INTENT), w->intent, memory_order_relaxed);
    /* HEAD and INTENT are visible before any byte of the new record */
    atomic_thread_fence(memory_order_release);
    if (pad) dc_write_pad(w->ring + off, pad);
    w->res_pos = s;
    w->res_len = frame_len;
    w->res_end = e;
    return DC_OK;
}

static inline uint8_t *dc_writer_ptr(const dc_writer *w) { return w->ring + (w->res_pos & w->mask); }

/* Publishes the reserved record (its frame header already holds seq). Returns 1 when it woke someone. */
static inline int dc_writer_commit(dc_writer *w, uint64_t seq, int64_t now_ns) {
    uint8_t *b = w->base;
    w->tail = w->res_end;
    atomic_store_explicit(DC_AU64(b, DC_RING_OFF_TAIL), w->res_end, memory_order_release);
    dc_seqlock_write_begin(DC_AU64(b, DC_RING_OFF_LATEST_LOCK), w->latest_lock);
    atomic_store_explicit(DC_AU64(b, DC_RING_OFF_LATEST_POS), w->res_pos, memory_order_relaxed);
    atomic_store_explicit(DC_AU64(b, DC_RING_OFF_LATEST_LEN), w->res_len, memory_order_relaxed);
    atomic_store_explicit(DC_AU64(b, DC_RING_OFF_LATEST_SEQ), seq, memory_order_relaxed);
    dc_seqlock_write_end(DC_AU64(b, DC_RING_OFF_LATEST_LOCK), w->latest_lock);
    w->latest_lock += 2;
    atomic_store_explicit(DC_AU64(b, DC_RING_OFF_HEARTBEAT), (uint64_t)now_ns, memory_order_relaxed);
    atomic_thread_fence(memory_order_seq_cst);
    int woke = dc_wake_if_sleeping(DC_AU32(b, DC_RING_OFF_DATA_WORD), DC_AU32(b, DC_RING_OFF_DATA_SLEEPERS));
    return dc_wake_async(b, w->max_subs, w->wake_fd) + woke > 0;
}

/* Marks the segment closed and wakes every sleeper. */
static inline void dc_writer_close(dc_writer *w) {
    uint8_t *b = w->base;
    atomic_store_explicit(DC_AU32(b, DC_RING_OFF_CLOSED), 1, memory_order_release);
    atomic_fetch_add_explicit(DC_AU32(b, DC_RING_OFF_DATA_WORD), 1, memory_order_seq_cst);
    dc_futex_wake_all(DC_AU32(b, DC_RING_OFF_DATA_WORD));
    dc_wake_async(b, w->max_subs, w->wake_fd);
}

/* ---------------------------------------------------------------- reader */

typedef struct {
    uint8_t *base;
    uint8_t *ring;
    uint64_t cap;
    uint64_t mask;
    int block;
    uint64_t cursor;      /* next position to read; published in the slot by dc_reader_advance */
    uint64_t tail_seen;   /* the last TAIL loaded: records before it need no new load of the shared line */
    dc_au64 *slot_cursor;
    int wake_fd;          /* block mode: an unbound unix datagram socket for dc_wake_space_async, or -1 */
} dc_reader;

static inline void dc_reader_init(dc_reader *r, uint8_t *base, uint32_t slot) {
    r->base = base;
    r->ring = base + dc_ld32(base + DC_RING_OFF_DATA);
    r->cap = dc_ld64(base + DC_RING_OFF_CAPACITY);
    r->mask = r->cap - 1;
    r->block = (dc_ld32(base + DC_RING_OFF_FLAGS) & DC_RING_FLAG_BLOCK) != 0;
    r->slot_cursor = DC_AU64(base, DC_RING_OFF_SLOTS + (uint64_t)slot * DC_RING_SLOT_SIZE + DC_RING_SLOT_CURSOR);
    r->cursor = atomic_load_explicit(r->slot_cursor, memory_order_relaxed);
    r->tail_seen = r->cursor;
    r->wake_fd = -1;
}

static inline uint64_t dc_ring_tail(const uint8_t *base) {
    return atomic_load_explicit(DC_AU64(base, DC_RING_OFF_TAIL), memory_order_acquire);
}

static inline int dc_ring_closed(const uint8_t *base) {
    return atomic_load_explicit(DC_AU32(base, DC_RING_OFF_CLOSED), memory_order_acquire) != 0;
}

/* Whether the bytes from pos on, copied before this call, were intact: the
 * writer has not begun a record reaching past pos + capacity. */
static inline int dc_reader_valid(const dc_reader *r, uint64_t pos) {
    atomic_thread_fence(memory_order_acquire);
    return atomic_load_explicit(DC_AU64(r->base, DC_RING_OFF_INTENT), memory_order_relaxed) - pos <= r->cap;
}

/* The frame at the cursor, pads skipped: DC_OK with its position and
 * validated header (the whole frame lies in [pos, TAIL) and before the end
 * of the ring), DC_RING_EMPTY, DC_RING_LAPPED, or a DC_ERR_* code. */
static inline int dc_reader_next(dc_reader *r, uint64_t *pos, dc_header *h) {
    for (;;) {
        uint64_t c = r->cursor;
        uint64_t tail = r->tail_seen;
        /* A reader behind the writer reads a batch of records per load of TAIL (the
         * acquire of that load covers them all). A stale value only understates what
         * exists; overwrites are caught by the INTENT check after the copy. */
        if (tail - c - 1 >= r->cap) {
            tail = r->tail_seen = dc_ring_tail(r->base);
            if (c == tail) return DC_RING_EMPTY;
        }
        if (tail - c > r->cap) return DC_RING_LAPPED;   /* also a cursor past TAIL */
        uint64_t off = c & r->mask;
        uint64_t avail = tail - c;
        if (avail > r->cap - off) avail = r->cap - off;
        const uint8_t *p = r->ring + off;
        if (memcmp(p, DC_PAD_MAGIC, 4) == 0) {
            uint64_t len = dc_ld64(p + 40);
            if (!dc_reader_valid(r, c)) return DC_RING_LAPPED;
            if (len != r->cap - off || len > tail - c) return DC_ERR_CORRUPT;
            r->cursor = c + len;
            continue;
        }
        int rc = dc_header_unpack(p, (size_t)avail, avail, h);
        if (rc != DC_OK) return dc_reader_valid(r, c) ? rc : DC_RING_LAPPED;
        *pos = c;
        return DC_OK;
    }
}

/* Moves the cursor and publishes it; in block mode wakes a publisher waiting for room. */
static inline void dc_reader_advance(dc_reader *r, uint64_t to) {
    r->cursor = to;
    atomic_store_explicit(r->slot_cursor, to, memory_order_release);
    if (r->block) {
        atomic_thread_fence(memory_order_seq_cst);
        dc_wake_if_sleeping(DC_AU32(r->base, DC_RING_OFF_SPACE_WORD), DC_AU32(r->base, DC_RING_OFF_SPACE_SLEEPERS));
        dc_wake_space_async(r->base, r->wake_fd);
    }
}

/* Zero-copy receive: the local cursor moves past the record at pos, but the
 * published cursor stays at pos, so a block-mode publisher cannot overwrite
 * the record while the caller holds views of it. dc_reader_advance ends it. */
static inline void dc_reader_hold(dc_reader *r, uint64_t pos, uint64_t next) {
    r->cursor = next;
    atomic_store_explicit(r->slot_cursor, pos, memory_order_release);
}

/* The latest-value descriptor: DC_OK with the newest record's position,
 * length and seq, or DC_RING_EMPTY when nothing was ever published. The
 * writer holds the lock for a few stores; a lock that stays odd means it died
 * in between (or the header was scribbled on), so the retries are bounded. */
static inline int dc_ring_latest(uint8_t *base, uint64_t *pos, uint64_t *len, uint64_t *seq) {
    dc_au64 *lock = DC_AU64(base, DC_RING_OFF_LATEST_LOCK);
    for (int tries = 0; tries < (1 << 16); tries++) {
        uint64_t s = dc_seqlock_read_begin(lock);
        if (s == 0) return DC_RING_EMPTY;
        *pos = atomic_load_explicit(DC_AU64(base, DC_RING_OFF_LATEST_POS), memory_order_relaxed);
        *len = atomic_load_explicit(DC_AU64(base, DC_RING_OFF_LATEST_LEN), memory_order_relaxed);
        *seq = atomic_load_explicit(DC_AU64(base, DC_RING_OFF_LATEST_SEQ), memory_order_relaxed);
        if (!dc_seqlock_read_retry(lock, s)) return DC_OK;
        dc_cpu_relax();
    }
    return DC_RING_EMPTY;
}

/* After a lap: the cursor goes to the oldest intact record, or with newest
 * set to the newest one (a reader lapped again and again stops chasing). */
static inline void dc_reader_resync(dc_reader *r, int newest) {
    uint64_t to = atomic_load_explicit(DC_AU64(r->base, DC_RING_OFF_HEAD), memory_order_acquire);
    uint64_t pos, len, seq;
    if (newest && dc_ring_latest(r->base, &pos, &len, &seq) == DC_OK && pos > to) to = pos;
    dc_reader_advance(r, to);
}

/* Validates the record the latest descriptor names, [pos, pos + len): DC_OK
 * with its header, DC_RING_LAPPED when it was overwritten, else DC_ERR_*. */
static inline int dc_reader_check_at(const dc_reader *r, uint64_t pos, uint64_t len, dc_header *h) {
    uint64_t off = pos & r->mask;
    uint64_t room = r->cap - off;
    if (len > room) return dc_reader_valid(r, pos) ? DC_ERR_CORRUPT : DC_RING_LAPPED;
    int rc = dc_header_unpack(r->ring + off, (size_t)len, len, h);
    if (rc == DC_OK && h->frame_len != len) rc = DC_ERR_LENGTH;
    if (rc != DC_OK) return dc_reader_valid(r, pos) ? rc : DC_RING_LAPPED;
    return DC_OK;
}

#endif
