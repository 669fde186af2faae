/* Multi-threaded stress test of csrc/dc_seqlock.h: one writer updating a
 * record of several words as fast as it can, several readers taking
 * snapshots. Every word of a record is a function of one counter, so a
 * snapshot mixing two writes is caught. The fields are relaxed atomics, as
 * in the ring's latest-value descriptor, so the program has no data race
 * for ThreadSanitizer to suppress.
 *
 *   stress_seqlock [seconds]
 *
 * Exit status 0 when no reader saw a torn or backwards value and every
 * reader completed reads while the writer was busy. */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "dc_seqlock.h"

#define N_READERS 3
#define N_FIELDS 6

static struct {
    dc_au64 lock;
    dc_au64 field[N_FIELDS];
} slot;

static atomic_int done;
static atomic_int failed;

static uint64_t field_of(uint64_t v, int i) { return (v * 0x9E3779B97F4A7C15ull) ^ ((uint64_t)i << 56) ^ ~v; }

static int64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000ll + ts.tv_nsec;
}

static void *writer_main(void *arg) {
    int64_t stop = *(int64_t *)arg;
    uint64_t s = 0, v = 0;
    while (now_ns() < stop) {
        for (int k = 0; k < 1000; k++) {
            v++;
            dc_seqlock_write_begin(&slot.lock, s);
            for (int i = 0; i < N_FIELDS; i++)
                atomic_store_explicit(&slot.field[i], field_of(v, i), memory_order_relaxed);
            dc_seqlock_write_end(&slot.lock, s);
            s += 2;
        }
    }
    atomic_store(&done, 1);
    printf("seqlock: %llu writes", (unsigned long long)v);
    return NULL;
}

typedef struct { uint64_t reads, retries; } reader_arg;

static void *reader_main(void *arg) {
    reader_arg *a = arg;
    uint64_t last = 0, f[N_FIELDS];
    while (!atomic_load(&done)) {
        uint64_t s = dc_seqlock_read_begin(&slot.lock);
        for (int i = 0; i < N_FIELDS; i++)
            f[i] = atomic_load_explicit(&slot.field[i], memory_order_relaxed);
        if (dc_seqlock_read_retry(&slot.lock, s)) { a->retries++; continue; }
        if (s == 0) continue;  /* nothing written yet */
        /* field 0 names the write (field_of is a bijection in v for a fixed i) */
        uint64_t v = s / 2;
        for (int i = 0; i < N_FIELDS; i++) {
            if (f[i] != field_of(v, i)) {
                fprintf(stderr, "FAIL: torn read at count %llu, field %d\n", (unsigned long long)s, i);
                atomic_store(&failed, 1);
                return NULL;
            }
        }
        if (v < last) {
            fprintf(stderr, "FAIL: value went back from %llu to %llu\n", (unsigned long long)last,
                    (unsigned long long)v);
            atomic_store(&failed, 1);
            return NULL;
        }
        last = v;
        a->reads++;
    }
    return NULL;
}

int main(int argc, char **argv) {
    double seconds = argc > 1 ? atof(argv[1]) : 2.0;
    int64_t stop = now_ns() + (int64_t)(seconds * 1e9);
    pthread_t w, r[N_READERS];
    reader_arg args[N_READERS];
    memset(args, 0, sizeof args);
    for (int i = 0; i < N_READERS; i++) pthread_create(&r[i], NULL, reader_main, &args[i]);
    pthread_create(&w, NULL, writer_main, &stop);
    pthread_join(w, NULL);
    for (int i = 0; i < N_READERS; i++) {
        pthread_join(r[i], NULL);
        printf("; reader %d: %llu reads, %llu retries", i, (unsigned long long)args[i].reads,
               (unsigned long long)args[i].retries);
        if (args[i].reads == 0) {
            fprintf(stderr, "FAIL: reader %d completed no read\n", i);
            atomic_store(&failed, 1);
        }
    }
    printf("\n");
    return atomic_load(&failed) ? 1 : 0;
}
