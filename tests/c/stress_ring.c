/* Multi-threaded stress test of csrc/dc_ring.h, in one process, no Python:
 * one writer thread and several reader threads over a segment in memory.
 * Built and run under ThreadSanitizer (and ASan/UBSan) by .ci/run; see
 * tests/c/README.md.
 *
 *   stress_ring block|drop [seconds]
 *
 * The writer publishes raw frames whose length and payload bytes are a
 * function of their seq. Every reader checks every record it accepts
 * (header, length, each payload word), that seqs only go up, and at the end
 * that received + lost == sent with loss counted from seq gaps: exactly what
 * the Python readers report as stats.lost. In block mode nothing may be lost.
 * In drop mode some readers are slow on purpose so they are lapped, and one
 * more thread follows the latest-value descriptor, checking that the record
 * it names holds that seq. Exit status 0 only when every check passed. */
#define _GNU_SOURCE
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <errno.h>

#include "dc_ring.h"

#define MAX_SUBS 8
#define N_READERS 4
#define CAPACITY (1u << 16)
#define PAGE 4096u

static uint8_t *seg;
static int block_mode;
static int64_t stop_at_ns;
static atomic_uint_fast64_t sent;     /* final count, valid once the ring is closed */
static atomic_int failed;

#define FAIL(...) do { fprintf(stderr, "FAIL: " __VA_ARGS__); fputc('\n', stderr); atomic_store(&failed, 1); } while (0)

static uint64_t mix(uint64_t x) {       /* splitmix64 finaliser */
    x += 0x9E3779B97F4A7C15ull;
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
    x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
    return x ^ (x >> 31);
}

/* Mostly small records, now and then one of up to half the ring, so the
 * writer pads the end of the ring in every position. */
static uint64_t payload_len(uint64_t seq) {
    uint64_t m = mix(seq);
    return (m & 31u) == 0 ? (m >> 8) % (CAPACITY / 2 - 64) : (m >> 8) % 1500;
}

static void fill(uint8_t *p, uint64_t seq, uint64_t n) {
    for (uint64_t i = 0; i < n; i += 8) {
        uint64_t w = mix(seq * 0x100000001B3ull + i);
        memcpy(p + i, &w, n - i < 8 ? n - i : 8);
    }
}

static int intact(const uint8_t *p, uint64_t seq, uint64_t n) {
    for (uint64_t i = 0; i < n; i += 8) {
        uint64_t w = mix(seq * 0x100000001B3ull + i);
        if (memcmp(p + i, &w, n - i < 8 ? n - i : 8) != 0) return 0;
    }
    return 1;
}

static uint64_t data_offset(void) {
    return (DC_RING_OFF_SLOTS + MAX_SUBS * DC_RING_SLOT_SIZE + PAGE - 1) / PAGE * PAGE;
}

static void init_segment(void) {
    uint64_t data = data_offset(), size = data + CAPACITY;
    seg = aligned_alloc(PAGE, size);
    if (!seg) { perror("aligned_alloc"); exit(2); }
    memset(seg, 0, size);
    dc_st64(seg + DC_RING_OFF_MAGIC, DC_RING_MAGIC);
    dc_st32(seg + DC_RING_OFF_VERSION, DC_RING_VERSION);
    dc_st32(seg + DC_RING_OFF_DATA, (uint32_t)data);
    dc_st64(seg + DC_RING_OFF_CAPACITY, CAPACITY);
    dc_st32(seg + DC_RING_OFF_MAX_SUBS, MAX_SUBS);
    dc_st32(seg + DC_RING_OFF_FLAGS, block_mode ? DC_RING_FLAG_BLOCK : 0);
    dc_st64(seg + DC_RING_OFF_SIZE, size);
    /* every reader joins before the first record, at cursor 0, seq 0 */
    for (uint32_t i = 0; i < N_READERS; i++)
        atomic_store(DC_AU32(seg, DC_RING_OFF_SLOTS + i * DC_RING_SLOT_SIZE + DC_RING_SLOT_STATE), DC_SLOT_ACTIVE);
}

static void *writer_main(void *arg) {
    (void)arg;
    dc_writer w;
    dc_writer_init(&w, seg);
    uint64_t seq = 0;
    while (dc_monotonic_ns() < stop_at_ns) {
        uint64_t n = payload_len(seq), flen = 64 + dc_align64(n);
        int64_t full_since = 0;
        while (dc_writer_reserve(&w, flen) == DC_RING_FULL) {
            /* block mode: a reader has not read far enough; it must get there */
            if (!full_since) full_since = dc_monotonic_ns();
            else if (dc_monotonic_ns() - full_since > 20000000000ll) { FAIL("writer blocked for 20 s"); goto out; }
            sched_yield();
        }
        uint8_t *p = dc_writer_ptr(&w);
        dc_header h = {.kind = DC_KIND_RAW, .flags = 0, .seq = seq, .timestamp_ns = dc_realtime_ns(),
                       .meta_len = 0, .nbufs = 1, .payload_len = n};
        dc_header_pack(p, &h);
        fill(p + 64, seq, n);
        memset(p + 64 + n, 0, flen - 64 - n);
        dc_writer_commit(&w, seq, h.timestamp_ns);
        seq++;
    }
out:
    atomic_store(&sent, seq);
    dc_writer_close(&w);
    return NULL;
}

typedef struct {
    uint32_t slot;
    int slow;               /* sleeps now and then, to be lapped (drop) or to stall the writer (block) */
    uint64_t received, lost, laps, waits;
} reader_arg;

/* Drop mode: the writer may overwrite a record while a lapped reader reads
 * it. Those reads are speculative by design (csrc/dc_ring.h, opening
 * comment): the reader validates the header against the ring bounds, copies,
 * and only then re-reads INTENT after an acquire fence; a copy the writer may
 * have touched is thrown away. ThreadSanitizer does not model that check, so
 * in drop mode, and only around the three speculative steps (reading the
 * header at the cursor, checking the record the latest descriptor names,
 * copying a record), the plain reads are not reported. Atomic loads in them
 * still synchronise. The block-mode run, where no record can be overwritten
 * under a reader, ignores nothing: there any unordered read is reported. */
#if defined(__SANITIZE_THREAD__)
void AnnotateIgnoreReadsBegin(const char *file, int line);
void AnnotateIgnoreReadsEnd(const char *file, int line);
#define SPECULATIVE(stmt) do { if (!block_mode) AnnotateIgnoreReadsBegin(__FILE__, __LINE__); \
                               stmt; \
                               if (!block_mode) AnnotateIgnoreReadsEnd(__FILE__, __LINE__); } while (0)
#else
#define SPECULATIVE(stmt) do { stmt; } while (0)
#endif

/* Sleeps until the writer publishes or closes (the futex path of the Python readers). */
static void wait_for_news(dc_reader *r) {
    dc_au32 *word = DC_AU32(r->base, DC_RING_OFF_DATA_WORD), *flag = DC_AU32(r->base, DC_RING_OFF_DATA_SLEEPERS);
    uint32_t v = dc_sleep_prepare(word, flag);
    if (dc_ring_tail(r->base) != r->cursor || dc_ring_closed(r->base)) return;
    dc_futex_wait(word, v, 50000000);
}

static void *reader_main(void *arg) {
    reader_arg *a = arg;
    dc_reader r;
    dc_reader_init(&r, seg, a->slot);
    uint8_t *copy = malloc(CAPACITY);
    uint64_t expect = 0, pos = 0, tick = 0;
    int laps = 0;
    dc_header h, h2;
    for (;;) {
        int rc;
        SPECULATIVE(rc = dc_reader_next(&r, &pos, &h));
        if (rc == DC_OK) {
            uint64_t flen = h.frame_len;
            SPECULATIVE(memcpy(copy, r.ring + (pos & r.mask), flen));
            if (!dc_reader_valid(&r, pos)) rc = DC_RING_LAPPED;
            else {
                dc_reader_advance(&r, pos + flen);
                laps = 0;
                if (dc_header_unpack(copy, flen, flen, &h2) != DC_OK || h2.seq != h.seq || h2.frame_len != flen
                    || h2.kind != DC_KIND_RAW || h2.payload_len != payload_len(h2.seq)) {
                    FAIL("reader %u: bad header for seq %llu", a->slot, (unsigned long long)h.seq);
                    break;
                }
                if (!intact(copy + 64, h2.seq, h2.payload_len)) {
                    FAIL("reader %u: torn payload, seq %llu", a->slot, (unsigned long long)h2.seq);
                    break;
                }
                if (h2.seq < expect) {
                    FAIL("reader %u: seq went back from %llu to %llu", a->slot,
                         (unsigned long long)expect - 1, (unsigned long long)h2.seq);
                    break;
                }
                a->lost += h2.seq - expect;
                expect = h2.seq + 1;
                a->received++;
                if (a->slow && (++tick & 255u) == 0) {
                    struct timespec ts = {0, 200000};
                    nanosleep(&ts, NULL);
                }
                continue;
            }
        }
        if (rc == DC_RING_LAPPED) {
            a->laps++;
            if (block_mode) { FAIL("reader %u lapped in block mode", a->slot); break; }
            /* the Python readers' policy: the oldest intact record, then the newest, then TAIL */
            if (++laps > 3) dc_reader_advance(&r, dc_ring_tail(r.base));
            else dc_reader_resync(&r, laps > 1);
        } else if (rc == DC_RING_EMPTY) {
            if (dc_ring_closed(r.base) && dc_ring_tail(r.base) == r.cursor) break;
            a->waits++;
            wait_for_news(&r);
        } else {
            FAIL("reader %u: status %d at %llu", a->slot, rc, (unsigned long long)r.cursor);
            break;
        }
    }
    uint64_t total = atomic_load(&sent);
    if (!atomic_load(&failed) && expect != total)
        FAIL("reader %u: last seq %llu, writer sent %llu", a->slot, (unsigned long long)expect - 1,
             (unsigned long long)total);
    if (!atomic_load(&failed) && a->received + a->lost != total)
        FAIL("reader %u: received %llu + lost %llu != sent %llu", a->slot, (unsigned long long)a->received,
             (unsigned long long)a->lost, (unsigned long long)total);
    if (block_mode && a->lost)
        FAIL("reader %u lost %llu in block mode", a->slot, (unsigned long long)a->lost);
    free(copy);
    return NULL;
}

/* Follows the latest-value descriptor like Subscriber.latest(): the record it
 * names, when still intact after the copy, must be that seq, and the seqs it
 * sees never go back. Holds no slot, so drop mode only. */
static void *latest_main(void *arg) {
    uint64_t *seen = arg;
    dc_reader r;
    dc_reader_init(&r, seg, MAX_SUBS - 1);
    uint8_t *copy = malloc(CAPACITY);
    uint64_t last = 0, pos, len, seq;
    int have = 0;
    dc_header h;
    while (!dc_ring_closed(seg)) {
        if (dc_ring_latest(seg, &pos, &len, &seq) != DC_OK) { sched_yield(); continue; }
        int rc;
        SPECULATIVE(rc = dc_reader_check_at(&r, pos, len, &h));
        if (rc == DC_RING_LAPPED) continue;
        if (rc != DC_OK) { FAIL("latest: status %d for seq %llu", rc, (unsigned long long)seq); break; }
        SPECULATIVE(memcpy(copy, r.ring + (pos & r.mask), len));
        if (!dc_reader_valid(&r, pos)) continue;
        if (h.seq != seq || !intact(copy + 64, seq, payload_len(seq))) {
            FAIL("latest: descriptor seq %llu names a record of seq %llu", (unsigned long long)seq,
                 (unsigned long long)h.seq);
            break;
        }
        if (have && seq < last) { FAIL("latest: seq went back"); break; }
        last = seq;
        have = 1;
        (*seen)++;
        sched_yield();  /* a few reads per write are plenty */
    }
    free(copy);
    return NULL;
}

int main(int argc, char **argv) {
    if (argc < 2 || (strcmp(argv[1], "block") && strcmp(argv[1], "drop"))) {
        fprintf(stderr, "usage: %s block|drop [seconds]\n", argv[0]);
        return 2;
    }
    block_mode = strcmp(argv[1], "block") == 0;
    double seconds = argc > 2 ? atof(argv[2]) : 2.0;
    init_segment();
    stop_at_ns = dc_monotonic_ns() + (int64_t)(seconds * 1e9);

    pthread_t w, rd[N_READERS], lt;
    reader_arg args[N_READERS];
    uint64_t latest_seen = 0;
    for (int i = 0; i < N_READERS; i++) {
        args[i] = (reader_arg){.slot = (uint32_t)i, .slow = i >= N_READERS / 2};
        pthread_create(&rd[i], NULL, reader_main, &args[i]);
    }
    if (!block_mode) pthread_create(&lt, NULL, latest_main, &latest_seen);
    pthread_create(&w, NULL, writer_main, NULL);
    pthread_join(w, NULL);
    for (int i = 0; i < N_READERS; i++) pthread_join(rd[i], NULL);
    if (!block_mode) pthread_join(lt, NULL);

    uint64_t total = atomic_load(&sent), lost = 0;
    printf("ring %s: %llu records sent in %.1f s", argv[1], (unsigned long long)total, seconds);
    for (int i = 0; i < N_READERS; i++) {
        printf("; reader %d%s: %llu received, %llu lost, %llu laps", i, args[i].slow ? " (slow)" : "",
               (unsigned long long)args[i].received, (unsigned long long)args[i].lost,
               (unsigned long long)args[i].laps);
        lost += args[i].lost;
    }
    if (!block_mode) printf("; latest: %llu reads", (unsigned long long)latest_seen);
    printf("\n");
    if (total == 0) FAIL("nothing was sent");
    /* the drop run must actually exercise laps, or it proves nothing about loss counting */
    if (!block_mode && lost == 0) FAIL("no reader was lapped in drop mode");
    free(seg);
    return atomic_load(&failed) ? 1 : 0;
}
