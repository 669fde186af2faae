/* Multi-threaded stress test of csrc/dc_sendloop.h in block mode: the loop
 * thread draining two connections (unix socket pairs with small send
 * buffers and short queues) to two reader threads that sometimes pause, and
 * two publishers sharing one publisher mutex as SendLoop.publish does: one
 * pushes and waits on the condition (dc_sl_push), the other never waits
 * inside the loop (dc_sl_push_if_room) and sleeps on roomfd instead, the
 * way an asyncio asend does, including the poke a publisher gives roomfd
 * when it lets go of the mutex. The roomfd publisher runs alone for the
 * first half, where only the loop's own wake-ups can end its sleeps.
 *
 *   stress_sendloop [seconds]
 *
 * Exit status 0 when each reader got every message exactly once and in
 * order (block mode loses nothing), no roomfd sleeper missed a wake-up (a
 * sleep that ends by its timeout while there was room is a failure), and
 * both publishers made progress. */
#define _GNU_SOURCE
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "dc_sendloop.h"

#define N_CONNS 2
#define MSG_LEN 64

static dc_sendloop sl;
static pthread_mutex_t pub_mu = PTHREAD_MUTEX_INITIALIZER;   /* SendLoop.pub_mu */
static uint64_t next_seq;                                    /* under pub_mu */
static atomic_int stop_pushing, failed;
static atomic_ullong total = ~0ull;                          /* messages pushed, once known */
static atomic_ullong pushed_by[2];
static int peer_fd[N_CONNS];

static int64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000ll + ts.tv_nsec;
}

static void fail(const char *what) {
    fprintf(stderr, "stress_sendloop: %s\n", what);
    atomic_store(&failed, 1);
}

static dc_sl_msg *message(uint64_t seq) {
    dc_sl_msg *m = dc_sl_msg_new(1, MSG_LEN);
    if (!m) { fail("out of memory"); exit(1); }
    memset(dc_sl_msg_inline(m), 0, MSG_LEN);
    memcpy(dc_sl_msg_inline(m), &seq, sizeof seq);
    m->iov[0].iov_base = dc_sl_msg_inline(m);
    m->iov[0].iov_len = MSG_LEN;
    m->len = MSG_LEN;
    return m;
}

/* After a push: the caller owns m again when no queue took it. */
static void settle(dc_sl_msg *m, int taken) {
    if (!taken) free(m);
}

static void unlock_pub(void) {
    pthread_mutex_unlock(&pub_mu);
    dc_sl_room_poke(&sl);
}

static void *blocking_pusher(void *arg) {
    (void)arg;
    while (!atomic_load(&stop_pushing)) {
        int dropped, taken;
        pthread_mutex_lock(&pub_mu);
        dc_sl_msg *m = message(next_seq);
        int rc = dc_sl_push(&sl, -1, m, -1.0, &dropped, &taken);
        settle(m, taken);
        if (rc != DC_SL_OK || dropped) fail("a blocking push dropped or failed");
        next_seq++;
        unlock_pub();
        atomic_fetch_add(&pushed_by[0], 1);
    }
    return NULL;
}

/* publish_nowait: the message on every queue or on none; None (0 here) arms roomfd. */
static int publish_nowait(void) {
    if (pthread_mutex_trylock(&pub_mu) != 0) {
        dc_sl_arm_room(&sl);
        if (pthread_mutex_trylock(&pub_mu) != 0) return 0;
    }
    int dropped, taken;
    dc_sl_msg *m = message(next_seq);
    int rc = dc_sl_push_if_room(&sl, -1, m, &dropped, &taken);
    settle(m, taken);
    if (rc == DC_SL_FULL) {
        pthread_mutex_unlock(&pub_mu);   /* roomfd is armed for this caller: no poke */
        return 0;
    }
    if (rc != DC_SL_OK || dropped) fail("a push_if_room dropped or failed");
    next_seq++;
    unlock_pub();
    return 1;
}

static void drain(int fd) {
    uint64_t v;
    while (read(fd, &v, sizeof v) > 0) {}
}

/* After a sleep on roomfd ended by its timeout: whether what it waited for
 * happened without a wake-up. With the publisher mutex free and every queue
 * with room, a sleep that began on a full queue or a busy publisher should
 * have been woken, so roomfd must be readable (checked under sl.mu, which
 * every roomfd write holds). */
static int missed_wakeup(void) {
    int missed = 0;
    if (pthread_mutex_trylock(&pub_mu) != 0) return 0;   /* still busy: nothing owed yet */
    pthread_mutex_lock(&sl.mu);
    int room = 1;
    for (dc_sl_conn *c = sl.conns; c; c = c->next) if (dc_sl_full(c, MSG_LEN)) room = 0;
    struct pollfd p = {.fd = sl.roomfd, .events = POLLIN};
    if (room && poll(&p, 1, 0) == 0) missed = 1;
    pthread_mutex_unlock(&sl.mu);
    pthread_mutex_unlock(&pub_mu);
    return missed;
}

static void *room_pusher(void *arg) {
    (void)arg;
    while (!atomic_load(&stop_pushing)) {
        if (publish_nowait()) {
            atomic_fetch_add(&pushed_by[1], 1);
            continue;
        }
        struct pollfd p = {.fd = sl.roomfd, .events = POLLIN};
        if (poll(&p, 1, 200) == 0 && !atomic_load(&stop_pushing) && missed_wakeup()) {
            fail("room appeared without a roomfd wake-up");
            break;
        }
        drain(sl.roomfd);
    }
    return NULL;
}

static void *reader_main(void *arg) {
    int i = (int)(intptr_t)arg;
    unsigned char buf[MSG_LEN * 64];
    size_t have = 0;
    uint64_t expect = 0, k = 0;
    int64_t give_up = 0;
    for (;;) {
        uint64_t t = atomic_load(&total);
        if (expect == t) break;
        if (t != ~0ull && !give_up) give_up = now_ns() + 20000000000ll;
        if (give_up && now_ns() > give_up) { fail("a reader never got every message"); break; }
        if (++k % 97 == 0) usleep(1000);   /* a slow patch: queues fill, pushers wait */
        struct pollfd p = {.fd = peer_fd[i], .events = POLLIN};
        if (poll(&p, 1, 100) <= 0) continue;
        ssize_t r = read(peer_fd[i], buf + have, sizeof buf - have);
        if (r <= 0) { fail("a reader's socket closed or failed"); break; }
        have += (size_t)r;
        size_t off = 0;
        for (; have - off >= MSG_LEN; off += MSG_LEN) {
            uint64_t seq;
            memcpy(&seq, buf + off, sizeof seq);
            if (seq != expect) {
                fprintf(stderr, "stress_sendloop: connection %d got seq %llu, expected %llu\n", i,
                        (unsigned long long)seq, (unsigned long long)expect);
                fail("out of order, lost or duplicated");
                return NULL;
            }
            expect++;
        }
        memmove(buf, buf + off, have - off);
        have -= off;
    }
    return NULL;
}

static void *loop_main(void *arg) {
    (void)arg;
    dc_sl_run(&sl);
    return NULL;
}

int main(int argc, char **argv) {
    double secs = argc > 1 ? atof(argv[1]) : 2.0;
    pthread_t loop, readers[N_CONNS], pushers[2];
    int own_fd[N_CONNS];
    if (dc_sl_init(&sl) != 0) { perror("dc_sl_init"); return 1; }
    for (int i = 0; i < N_CONNS; i++) {
        int sv[2], small = 4096;
        if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) != 0) { perror("socketpair"); return 1; }
        setsockopt(sv[0], SOL_SOCKET, SO_SNDBUF, &small, sizeof small);
        own_fd[i] = sv[0];
        peer_fd[i] = sv[1];
        if (dc_sl_add(&sl, sv[0], 4, 1 << 20, 1) < 0) { perror("dc_sl_add"); return 1; }
    }
    {
        /* a publisher that finds another one holding the mutex, with nothing queued
         * anywhere (so no write will ever wake it), is woken when the holder lets go */
        struct pollfd p = {.fd = sl.roomfd, .events = POLLIN};
        pthread_mutex_lock(&pub_mu);
        if (publish_nowait()) fail("publish_nowait went past a held publisher mutex");
        if (poll(&p, 1, 0) != 0) fail("roomfd readable before the holder let go");
        unlock_pub();
        if (poll(&p, 1, 0) != 1) fail("the holder let go without waking the roomfd sleeper");
        drain(sl.roomfd);
    }
    pthread_create(&loop, NULL, loop_main, NULL);
    for (int i = 0; i < N_CONNS; i++) pthread_create(&readers[i], NULL, reader_main, (void *)(intptr_t)i);
    /* the first half alone: no other publisher's poke can hide a missed wake-up */
    pthread_create(&pushers[1], NULL, room_pusher, NULL);
    usleep((useconds_t)(secs * 0.5e6));
    if (atomic_load(&pushed_by[1]) == 0) fail("the roomfd publisher alone made no progress");
    pthread_create(&pushers[0], NULL, blocking_pusher, NULL);
    usleep((useconds_t)(secs * 0.5e6));
    atomic_store(&stop_pushing, 1);
    for (int i = 0; i < 2; i++) pthread_join(pushers[i], NULL);
    atomic_store(&total, next_seq);
    for (int i = 0; i < N_CONNS; i++) pthread_join(readers[i], NULL);
    dc_sl_stop(&sl);
    pthread_join(loop, NULL);
    dc_sl_destroy(&sl);
    for (int i = 0; i < N_CONNS; i++) { close(own_fd[i]); close(peer_fd[i]); }
    unsigned long long a = atomic_load(&pushed_by[0]), b = atomic_load(&pushed_by[1]);
    printf("sendloop: %llu messages to each of %d connections (%llu waiting on the condition, %llu on roomfd)\n",
           (unsigned long long)next_seq, N_CONNS, a, b);
    if (a == 0 || b == 0) fail("a publisher made no progress");
    if (a + b != next_seq) fail("pushes do not add up");
    return atomic_load(&failed) ? 1 : 0;
}
