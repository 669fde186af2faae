/* The send loop: per-connection bounded queues of frames drained by one
 * thread with sendmsg on nonblocking sockets and poll.
 *
 * Threads: producers call dc_sl_push (any thread, without the GIL); one
 * thread runs dc_sl_run until dc_sl_stop. Everything shared is guarded by
 * sl->mu; the loop drops the mutex only around poll and sendmsg/recv, and only
 * the loop thread frees a connection, so the pointers it holds across those
 * calls stay valid.
 *
 * Ownership: a message (dc_sl_msg) is shared by every connection that queued
 * it (refs). Small frames are copied into the message itself (owner NULL) and
 * the loop frees them; large ones point into buffers a Python object keeps
 * alive (owner), so the loop only moves them to sl->freed and the Python side
 * drops the owner with the GIL held (dc_sl_take_freed). The loop never
 * touches a Python object.
 *
 * Each connection holds its own dup() of the socket, closed by the loop after
 * dc_sl_remove: the caller may close its socket at once without the loop ever
 * writing into a reused descriptor. */
#ifndef DC_SENDLOOP_H
#define DC_SENDLOOP_H

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include "dc_common.h"

/* dc_sl_push results */
#define DC_SL_OK        0
#define DC_SL_TIMEOUT   1   /* a block-mode queue stayed full past the timeout */
#define DC_SL_NOMEM    -1
#define DC_SL_STOPPED  -2
#define DC_SL_FULL      2   /* dc_sl_push_if_room: a block-mode queue is full, nothing queued */

#define DC_SL_IOV 512        /* iovecs per sendmsg: coalesces up to this many parts */
#define DC_SL_POLL 256       /* poll entries on the loop's stack; more connections get a heap array */
/* A frame up to this size, sent when its connection's queue is empty and no
 * write is in flight, is written at once by the caller (under sl->mu, so
 * nothing can overtake it): no wake-up of the loop thread, which costs more
 * than the write on a lightly loaded link. Larger frames always go through
 * the queue so send() returns without copying megabytes into the kernel. */
#define DC_SL_INLINE_MAX 65536
/* ...unless the previous frame to that connection went out less than this
 * long ago: a burst is queued instead, so the loop coalesces it into few
 * sendmsg calls (one wake-up per burst, not one syscall per frame). */
#define DC_SL_BURST_NS 15000

typedef struct dc_sl_msg {
    int refs;                  /* queues still holding it (sl->mu) */
    int niov;
    size_t len;
    void *owner;               /* Python object keeping iov bases alive, or NULL */
    struct dc_sl_msg *next;    /* link in sl->freed */
    struct iovec iov[];        /* niov entries, then inline bytes when owner is NULL */
} dc_sl_msg;

typedef struct dc_sl_conn {
    int id;
    int fd;                    /* our own dup */
    int block;                 /* on_full="block" */
    size_t max_msgs, max_bytes;
    dc_sl_msg **q;             /* ring of max_msgs entries */
    size_t head, count, qbytes;
    size_t head_off;           /* bytes of q[head] already written */
    int want_out, busy, writing, dead, err, closing;
    uint64_t dropped, sent;
    int64_t last_push_ns;
    struct dc_sl_conn *next;
} dc_sl_conn;

typedef struct {
    pthread_mutex_t mu;
    pthread_cond_t changed;    /* room in a queue, a queue drained, a conn died */
    int wakefd;
    int roomfd;                /* eventfd written once room may have appeared, when room_armed */
    int room_armed;            /* someone sleeps on roomfd; written under mu, read atomically */
    int sleeping, wake_pending, stop, next_id, nconns;
    int sealed;                /* dc_sl_seal: pushers no longer wait for room */
    int users;                 /* threads inside push or flush (dc_sl_destroy waits for them) */
    unsigned long pushes;      /* frames queued so far; read without the mutex by dc_sl_linger */
    dc_sl_conn *conns;
    dc_sl_msg *freed;
} dc_sendloop;

typedef struct {
    size_t queued, qbytes;
    uint64_t dropped, sent;
    int dead, err;
} dc_sl_info;

static inline int dc_sl_init(dc_sendloop *sl) {
    pthread_condattr_t ca;
    memset(sl, 0, sizeof(*sl));
    sl->wakefd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (sl->wakefd < 0) return -errno;
    sl->roomfd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (sl->roomfd < 0) { int e = errno; close(sl->wakefd); return -e; }
    pthread_mutex_init(&sl->mu, NULL);
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&sl->changed, &ca);
    pthread_condattr_destroy(&ca);
    sl->next_id = 1;
    return 0;
}

/* A message with room for niov iovecs and inline bytes of storage. */
static inline dc_sl_msg *dc_sl_msg_new(int niov, size_t inline_bytes) {
    dc_sl_msg *m = (dc_sl_msg *)malloc(sizeof(dc_sl_msg) + (size_t)niov * sizeof(struct iovec) + inline_bytes);
    if (m) { m->refs = 0; m->niov = niov; m->len = 0; m->owner = NULL; m->next = NULL; }
    return m;
}

static inline uint8_t *dc_sl_msg_inline(dc_sl_msg *m) { return (uint8_t *)(m->iov + m->niov); }

/* sl->mu held */
static inline void dc_sl_release(dc_sendloop *sl, dc_sl_msg *m) {
    if (--m->refs > 0) return;
    if (m->owner) { m->next = sl->freed; sl->freed = m; }
    else free(m);
}

/* sl->mu held: forget everything queued on c. */
static inline void dc_sl_clear(dc_sendloop *sl, dc_sl_conn *c) {
    while (c->count) {
        dc_sl_release(sl, c->q[c->head]);
        c->head = (c->head + 1) % c->max_msgs;
        c->count--;
    }
    c->qbytes = 0;
    c->head_off = 0;
}

/* sl->mu held: room may have appeared in a queue (a write, a death, a removal,
 * closing). Wakes the pushers waiting on the condition, and whoever sleeps on
 * roomfd (an event loop's asend) if it said so. */
static inline void dc_sl_changed(dc_sendloop *sl) {
    pthread_cond_broadcast(&sl->changed);
    if (__atomic_load_n(&sl->room_armed, __ATOMIC_RELAXED)) {
        uint64_t one = 1;
        __atomic_store_n(&sl->room_armed, 0, __ATOMIC_RELAXED);
        if (write(sl->roomfd, &one, 8) < 0) { /* a wake-up is pending already */ }
    }
}

/* Asks for a roomfd wake-up at the next dc_sl_changed or dc_sl_room_poke. */
static inline void dc_sl_arm_room(dc_sendloop *sl) {
    pthread_mutex_lock(&sl->mu);
    __atomic_store_n(&sl->room_armed, 1, __ATOMIC_SEQ_CST);
    pthread_mutex_unlock(&sl->mu);
}

/* Wakes a roomfd sleeper, if armed, for a reason of the caller's (a publisher
 * the sleeper found busy is done). */
static inline void dc_sl_room_poke(dc_sendloop *sl) {
    if (!__atomic_load_n(&sl->room_armed, __ATOMIC_SEQ_CST)) return;
    pthread_mutex_lock(&sl->mu);
    dc_sl_changed(sl);
    pthread_mutex_unlock(&sl->mu);
}

static inline void dc_sl_wake(dc_sendloop *sl) {
    if (sl->sleeping && !sl->wake_pending) {
        uint64_t one = 1;
        sl->wake_pending = 1;
        if (write(sl->wakefd, &one, 8) < 0) { /* the counter cannot overflow here; nothing to do */ }
    }
}

static inline dc_sl_conn *dc_sl_find(dc_sendloop *sl, int id) {
    for (dc_sl_conn *c = sl->conns; c; c = c->next) if (c->id == id && !c->closing) return c;
    return NULL;
}

/* Registers a connected socket; returns its id (> 0) or -errno. */
static inline int dc_sl_add(dc_sendloop *sl, int fd, size_t max_msgs, size_t max_bytes, int block) {
    dc_sl_conn *c = (dc_sl_conn *)calloc(1, sizeof(dc_sl_conn));
    if (!c) return -ENOMEM;
    if (max_msgs < 1) max_msgs = 1;
    c->q = (dc_sl_msg **)calloc(max_msgs, sizeof(dc_sl_msg *));
    c->fd = fcntl(fd, F_DUPFD_CLOEXEC, 0);
    if (!c->q || c->fd < 0) {
        int e = c->fd < 0 ? errno : ENOMEM;
        if (c->fd >= 0) close(c->fd);
        free(c->q); free(c);
        return -e;
    }
    c->max_msgs = max_msgs;
    c->max_bytes = max_bytes;
    c->block = block;
    pthread_mutex_lock(&sl->mu);
    c->id = sl->next_id++;
    c->next = sl->conns;
    sl->conns = c;
    sl->nconns++;
    dc_sl_wake(sl);
    pthread_mutex_unlock(&sl->mu);
    return c->id;
}

/* Hands connection id to the loop, which drops its queue and closes its
 * descriptor when no write is in flight; never blocks. */
static inline void dc_sl_remove(dc_sendloop *sl, int id) {
    pthread_mutex_lock(&sl->mu);
    dc_sl_conn *c = dc_sl_find(sl, id);
    if (c) {
        c->closing = 1;
        dc_sl_changed(sl);
        /* A lingering loop is not sleeping (no eventfd write) and watches only
         * this counter; without the bump it would go to sleep with c unreaped,
         * its descriptor open, until some later push is queued. */
        __atomic_store_n(&sl->pushes, sl->pushes + 1, __ATOMIC_RELAXED);
        dc_sl_wake(sl);
    }
    pthread_mutex_unlock(&sl->mu);
}

static inline int64_t dc_sl_now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static inline int dc_sl_full(const dc_sl_conn *c, size_t len) {
    return c->count >= c->max_msgs || (c->count > 0 && c->qbytes + len > c->max_bytes);
}

static inline void dc_sl_deadline(struct timespec *ts, double timeout) {
    clock_gettime(CLOCK_MONOTONIC, ts);
    time_t s = (time_t)timeout;
    long ns = (long)((timeout - (double)s) * 1e9);
    ts->tv_sec += s;
    ts->tv_nsec += ns;
    if (ts->tv_nsec >= 1000000000L) { ts->tv_sec++; ts->tv_nsec -= 1000000000L; }
}

/* (sl->mu held) Queues m on connection id (or on every connection when id < 0). A full
 * drop-mode queue, or a block-mode one with timeout 0, skips m and counts it
 * in *dropped; a block-mode queue waits up to timeout seconds (< 0: forever).
 * *taken says whether a queue still holds m; when none does (all dropped, all
 * written at once, or all queues done already) the caller owns it again;
 * otherwise m may be written and
 * freed by the loop at any moment. */
static inline int dc_sl_push_locked(dc_sendloop *sl, int id, dc_sl_msg *m, double timeout, int *dropped,
                                    int *taken) {
    struct timespec dl;
    int rc = DC_SL_OK, have_dl = 0;
    if (sl->stop) return DC_SL_STOPPED;
    /* The pusher's own reference: while it waits for room on one queue, the
     * loop may finish writing m on every other queue; m must outlive that. */
    m->refs++;
    sl->users++;
    for (dc_sl_conn *c = sl->conns; c && !sl->stop; c = c->next) {
        if (c->closing || c->dead || (id >= 0 && c->id != id)) continue;
        while (dc_sl_full(c, m->len) && c->block && timeout != 0 && !c->dead && !c->closing && !sl->stop &&
               !sl->sealed) {
            if (timeout < 0) { pthread_cond_wait(&sl->changed, &sl->mu); continue; }
            if (!have_dl) { dc_sl_deadline(&dl, timeout); have_dl = 1; }
            if (pthread_cond_timedwait(&sl->changed, &sl->mu, &dl) == ETIMEDOUT) break;
        }
        /* conns are only unlinked by the loop after closing, so c is still valid here */
        if (c->closing || c->dead || sl->stop) continue;
        if (dc_sl_full(c, m->len)) {
            c->dropped++;
            (*dropped)++;
            if (c->block && timeout != 0) rc = DC_SL_TIMEOUT;
            continue;
        }
        size_t done = 0;
        int64_t now = dc_sl_now_ns(), since = now - c->last_push_ns;
        c->last_push_ns = now;
        if (c->count == 0 && !c->writing && !c->want_out && m->len <= DC_SL_INLINE_MAX && since > DC_SL_BURST_NS) {
            struct msghdr mh;
            memset(&mh, 0, sizeof(mh));
            mh.msg_iov = m->iov;
            mh.msg_iovlen = (size_t)m->niov;
            ssize_t r = sendmsg(c->fd, &mh, MSG_DONTWAIT | MSG_NOSIGNAL);
            if (r == (ssize_t)m->len) { c->sent++; continue; }
            if (r > 0) done = (size_t)r;
            else if (errno == EAGAIN || errno == EWOULDBLOCK) c->want_out = 1;
            /* any other error: queue it; the loop's own write reports the failure */
        }
        c->q[(c->head + c->count) % c->max_msgs] = m;
        __atomic_store_n(&sl->pushes, sl->pushes + 1, __ATOMIC_RELAXED);
        c->count++;
        c->qbytes += m->len;
        if (done) c->head_off = done;   /* only an empty queue gets an inline write */
        m->refs++;
        *taken = 1;
    }
    if (*taken) dc_sl_wake(sl);
    /* when that was the last reference, every queue is done with m: it is the caller's again */
    if (--m->refs == 0) *taken = 0;
    if (--sl->users == 0 && sl->stop) pthread_cond_broadcast(&sl->changed);
    return rc;
}

static inline int dc_sl_push(dc_sendloop *sl, int id, dc_sl_msg *m, double timeout, int *dropped, int *taken) {
    *dropped = 0;
    *taken = 0;
    pthread_mutex_lock(&sl->mu);
    int rc = dc_sl_push_locked(sl, id, m, timeout, dropped, taken);
    pthread_mutex_unlock(&sl->mu);
    return rc;
}

/* dc_sl_push without waiting and all or nothing: when a block-mode queue it
 * would go to has no room for m, queues m nowhere, arms roomfd and returns
 * DC_SL_FULL (the caller owns m again). Drop-mode queues drop as usual. */
static inline int dc_sl_push_if_room(dc_sendloop *sl, int id, dc_sl_msg *m, int *dropped, int *taken) {
    int rc;
    *dropped = 0;
    *taken = 0;
    pthread_mutex_lock(&sl->mu);
    for (dc_sl_conn *c = sl->conns; c && !sl->stop; c = c->next) {
        if (c->closing || c->dead || (id >= 0 && c->id != id) || !c->block || !dc_sl_full(c, m->len)) continue;
        __atomic_store_n(&sl->room_armed, 1, __ATOMIC_SEQ_CST);
        pthread_mutex_unlock(&sl->mu);
        return DC_SL_FULL;
    }
    rc = dc_sl_push_locked(sl, id, m, 0, dropped, taken);
    pthread_mutex_unlock(&sl->mu);
    return rc;
}

/* Waits until every queue (or connection id's) is empty or dead; 0, or DC_SL_TIMEOUT. */
static inline int dc_sl_flush(dc_sendloop *sl, int id, double timeout) {
    struct timespec dl;
    int rc = DC_SL_OK;
    if (timeout >= 0) dc_sl_deadline(&dl, timeout);
    pthread_mutex_lock(&sl->mu);
    sl->users++;
    for (;;) {
        int busy = 0;
        for (dc_sl_conn *c = sl->conns; c; c = c->next)
            if (!c->closing && !c->dead && c->count && (id < 0 || c->id == id)) busy = 1;
        if (!busy || sl->stop) break;
        if (timeout < 0) pthread_cond_wait(&sl->changed, &sl->mu);
        else if (pthread_cond_timedwait(&sl->changed, &sl->mu, &dl) == ETIMEDOUT) { rc = DC_SL_TIMEOUT; break; }
    }
    if (--sl->users == 0 && sl->stop) pthread_cond_broadcast(&sl->changed);
    pthread_mutex_unlock(&sl->mu);
    return rc;
}

/* Connection id's counters; -1 when there is no such connection. */
static inline int dc_sl_info_get(dc_sendloop *sl, int id, dc_sl_info *info) {
    int rc = -1;
    pthread_mutex_lock(&sl->mu);
    dc_sl_conn *c = dc_sl_find(sl, id);
    if (c) {
        info->queued = c->count; info->qbytes = c->qbytes; info->dropped = c->dropped;
        info->sent = c->sent; info->dead = c->dead; info->err = c->err;
        rc = 0;
    }
    pthread_mutex_unlock(&sl->mu);
    return rc;
}

/* Up to max ids of connections that died (peer gone or a write failed). */
static inline int dc_sl_dead(dc_sendloop *sl, int *ids, int max) {
    int n = 0;
    pthread_mutex_lock(&sl->mu);
    for (dc_sl_conn *c = sl->conns; c && n < max; c = c->next) if (c->dead && !c->closing) ids[n++] = c->id;
    pthread_mutex_unlock(&sl->mu);
    return n;
}

/* The messages whose owners the Python side must now release (it frees them). */
static inline dc_sl_msg *dc_sl_take_freed(dc_sendloop *sl) {
    pthread_mutex_lock(&sl->mu);
    dc_sl_msg *m = sl->freed;
    sl->freed = NULL;
    pthread_mutex_unlock(&sl->mu);
    return m;
}

/* sl->mu held: a connection failed; its queue is dropped and waiters told. */
static inline void dc_sl_kill(dc_sendloop *sl, dc_sl_conn *c, int err) {
    c->dead = 1;
    c->err = err;
    dc_sl_clear(sl, c);
    dc_sl_changed(sl);
}

/* sl->mu held: one sendmsg of as much of c's queue as fits in DC_SL_IOV iovecs. */
static inline void dc_sl_write(dc_sendloop *sl, dc_sl_conn *c) {
    struct iovec iov[DC_SL_IOV];
    int n = 0;
    size_t skip = c->head_off;
    for (size_t i = 0; i < c->count && n < DC_SL_IOV; i++) {
        dc_sl_msg *m = c->q[(c->head + i) % c->max_msgs];
        for (int k = 0; k < m->niov && n < DC_SL_IOV; k++) {
            size_t l = m->iov[k].iov_len;
            if (skip >= l) { skip -= l; continue; }
            iov[n].iov_base = (uint8_t *)m->iov[k].iov_base + skip;
            iov[n].iov_len = l - skip;
            skip = 0;
            n++;
        }
    }
    struct msghdr mh;
    memset(&mh, 0, sizeof(mh));
    mh.msg_iov = iov;
    mh.msg_iovlen = (size_t)n;
    int fd = c->fd;
    c->busy++;
    c->writing = 1;
    /* The queued messages stay referenced by c->q while the mutex is dropped:
     * producers only append, and only this thread pops or clears a queue. */
    pthread_mutex_unlock(&sl->mu);
    ssize_t r = sendmsg(fd, &mh, MSG_DONTWAIT | MSG_NOSIGNAL);
    int e = errno;
    pthread_mutex_lock(&sl->mu);
    c->busy--;
    c->writing = 0;
    if (r < 0) {
        if (e == EAGAIN || e == EWOULDBLOCK) c->want_out = 1;
        else if (e != EINTR) dc_sl_kill(sl, c, e);
        return;
    }
    if (c->closing || c->dead) return;
    size_t left = (size_t)r;
    int popped = 0;
    while (left && c->count) {
        dc_sl_msg *m = c->q[c->head];
        size_t rem = m->len - c->head_off;
        if (left < rem) { c->head_off += left; break; }
        left -= rem;
        c->head_off = 0;
        c->head = (c->head + 1) % c->max_msgs;
        c->count--;
        c->qbytes -= m->len;
        c->sent++;
        dc_sl_release(sl, m);
        popped = 1;
    }
    if (popped) dc_sl_changed(sl);
}

/* sl->mu held: close and free connections marked closing (only this thread frees). */
static inline void dc_sl_reap(dc_sendloop *sl) {
    dc_sl_conn **pp = &sl->conns;
    while (*pp) {
        dc_sl_conn *c = *pp;
        if (c->closing && !c->busy) {
            *pp = c->next;
            dc_sl_clear(sl, c);
            close(c->fd);
            free(c->q);
            free(c);
            sl->nconns--;
        } else {
            pp = &c->next;
        }
    }
}

/* sl->mu held. Before sleeping, the loop stays awake for up to
 * DC_SL_LINGER_NS, yielding the CPU between looks: a producer sending a
 * steady stream then finds it awake and never pays for a wake-up (an eventfd
 * write, and a thread scheduled again) per frame. Returns 1 when work came. */
#define DC_SL_LINGER_NS 50000
static inline int dc_sl_linger(dc_sendloop *sl) {
    int64_t end = dc_sl_now_ns() + DC_SL_LINGER_NS;
    unsigned long seen = sl->pushes;
    /* Watch the push counter without the mutex (a relaxed atomic read: only a
     * hint, the queues are looked at under the mutex again), so producers
     * never wait for the lingering loop. */
    pthread_mutex_unlock(&sl->mu);
    int more = 0;
    while (dc_sl_now_ns() < end) {
        if (__atomic_load_n(&sl->pushes, __ATOMIC_RELAXED) != seen || __atomic_load_n(&sl->stop, __ATOMIC_RELAXED)) {
            more = 1;
            break;
        }
        sched_yield();
    }
    pthread_mutex_lock(&sl->mu);
    /* exact now, under the mutex: a push that came after the last look must
     * not be missed, or the loop would sleep with work queued */
    return more || sl->pushes != seen || sl->stop;
}

/* The loop; runs until dc_sl_stop. Call without the GIL. */
static inline void dc_sl_run(dc_sendloop *sl) {
    struct pollfd spfd[DC_SL_POLL + 1];
    int sids[DC_SL_POLL + 1];
    /* every connection must be watched: one left out never has its want_out
     * cleared (it is only cleared by POLLOUT), so once its socket was full it
     * was never written again, and its hang-up was never seen */
    struct pollfd *pfd = spfd;
    int *ids = sids;
    int cap = DC_SL_POLL + 1;
    uint8_t sink[4096];
    pthread_mutex_lock(&sl->mu);
    while (!sl->stop) {
        dc_sl_reap(sl);
        if (sl->nconns + 1 > cap) {
            int want = 2 * (sl->nconns + 1);
            struct pollfd *np = (struct pollfd *)malloc((size_t)want * sizeof(*np));
            int *ni = (int *)malloc((size_t)want * sizeof(*ni));
            if (np && ni) {
                if (pfd != spfd) { free(pfd); free(ids); }
                pfd = np; ids = ni; cap = want;
            } else {   /* out of memory: watch the first cap - 1 this round, try again next */
                free(np); free(ni);
            }
        }
        int work = 0, waiting = 0;
        for (dc_sl_conn *c = sl->conns; c && !sl->stop; c = c->next) {
            if (c->closing || c->dead) continue;
            if (c->count && !c->want_out) dc_sl_write(sl, c);
            if (c->want_out) waiting = 1;
            else if (c->count && !c->closing && !c->dead) work = 1;
        }
        if (sl->stop) break;
        /* With work left and nobody stalled, go round again at once; otherwise
         * poll: the wake eventfd, POLLOUT for stalled sockets, and POLLIN so a
         * peer that hangs up is noticed even when nothing is being sent. */
        int n = 1;
        pfd[0].fd = sl->wakefd; pfd[0].events = POLLIN; pfd[0].revents = 0; ids[0] = 0;
        for (dc_sl_conn *c = sl->conns; c && n < cap; c = c->next) {
            if (c->closing || c->dead) continue;
            pfd[n].fd = c->fd;
            pfd[n].events = (short)(POLLIN | (c->want_out ? POLLOUT : 0));
            pfd[n].revents = 0;
            ids[n++] = c->id;
        }
        if (work && !waiting) continue;
        if (!work && dc_sl_linger(sl)) continue;
        sl->sleeping = !work;
        pthread_mutex_unlock(&sl->mu);
        int r = poll(pfd, (nfds_t)n, work ? 0 : -1);
        pthread_mutex_lock(&sl->mu);
        sl->sleeping = 0;
        if (r <= 0) continue;
        if (pfd[0].revents) {
            uint64_t v;
            if (read(sl->wakefd, &v, 8) < 0) { /* already drained */ }
            sl->wake_pending = 0;
        }
        for (int i = 1; i < n; i++) {
            if (!pfd[i].revents) continue;
            dc_sl_conn *c = dc_sl_find(sl, ids[i]);
            if (!c || c->dead) continue;
            if (pfd[i].revents & (POLLOUT | POLLERR | POLLHUP)) c->want_out = 0;
            if (pfd[i].revents & (POLLIN | POLLERR | POLLHUP)) {
                /* peers send nothing after the handshake; read to see EOF or an error */
                int fd = c->fd;
                c->busy++;
                pthread_mutex_unlock(&sl->mu);
                ssize_t got = recv(fd, sink, sizeof(sink), MSG_DONTWAIT);
                int e = errno;
                pthread_mutex_lock(&sl->mu);
                c->busy--;
                if (!c->closing && !c->dead) {
                    if (got == 0) dc_sl_kill(sl, c, 0);
                    else if (got < 0 && e != EAGAIN && e != EWOULDBLOCK && e != EINTR) dc_sl_kill(sl, c, e);
                }
            }
        }
    }
    pthread_mutex_unlock(&sl->mu);
    if (pfd != spfd) { free(pfd); free(ids); }
}

/* Closing: a push waiting for room gives up (DC_SL_TIMEOUT) and no push
 * waits from now on; queued frames are still written. A waiting pusher may
 * hold what a thread attaching a connection needs, so closing releases it
 * before anything else. */
static inline void dc_sl_seal(dc_sendloop *sl) {
    pthread_mutex_lock(&sl->mu);
    sl->sealed = 1;
    dc_sl_changed(sl);
    pthread_mutex_unlock(&sl->mu);
}

static inline void dc_sl_stop(dc_sendloop *sl) {
    pthread_mutex_lock(&sl->mu);
    __atomic_store_n(&sl->stop, 1, __ATOMIC_RELAXED);
    sl->sleeping = 1;          /* force the eventfd write even if the loop is mid-round */
    sl->wake_pending = 0;
    dc_sl_wake(sl);
    dc_sl_changed(sl);
    pthread_mutex_unlock(&sl->mu);
}

/* After the loop thread returned: close every connection; messages whose
 * owners need releasing are left on sl->freed. */
static inline void dc_sl_destroy(dc_sendloop *sl) {
    pthread_mutex_lock(&sl->mu);
    /* a pusher woken by dc_sl_stop may still be walking the connection list */
    while (sl->users) pthread_cond_wait(&sl->changed, &sl->mu);
    for (dc_sl_conn *c = sl->conns; c; c = c->next) c->closing = 1;
    dc_sl_reap(sl);
    pthread_mutex_unlock(&sl->mu);
    if (sl->wakefd >= 0) close(sl->wakefd);
    if (sl->roomfd >= 0) close(sl->roomfd);
    sl->wakefd = sl->roomfd = -1;
}

#endif
