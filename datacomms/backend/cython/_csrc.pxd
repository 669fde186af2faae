# Every C declaration the Cython backend uses, from the headers in csrc/.
from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t, int64_t

cdef extern from "dc_common.h" nogil:
    int DC_OK
    int DC_ERR_TRUNCATED
    int DC_ERR_MAGIC
    int DC_ERR_VERSION
    int DC_ERR_KIND
    int DC_ERR_LENGTH
    int DC_ERR_TOO_BIG
    int DC_ERR_RESERVED
    uint64_t dc_align64(uint64_t n)
    void dc_st64(uint8_t *p, uint64_t v)
    uint64_t dc_ld64(const uint8_t *p)
    uint32_t dc_ld32(const uint8_t *p)

cdef extern from "dc_frame.h" nogil:
    unsigned int DC_FRAME_HEADER_SIZE
    unsigned int DC_FRAME_VERSION
    unsigned int DC_KIND_RAW
    unsigned int DC_KIND_ARRAY
    unsigned int DC_KIND_JSON
    unsigned int DC_KIND_JSON_BUFFERS
    unsigned int DC_FLAG_CONTROL

    ctypedef struct dc_header:
        uint8_t kind
        uint16_t flags
        uint64_t seq
        int64_t timestamp_ns
        uint32_t meta_len
        uint32_t nbufs
        uint64_t payload_len
        uint64_t frame_len

    uint64_t dc_frame_len(uint32_t meta_len, uint64_t payload_len)
    void dc_header_pack(uint8_t *out, dc_header *h)
    int dc_header_unpack(const uint8_t *buf, size_t length, uint64_t max_frame, dc_header *h)

cdef extern from "<sys/uio.h>" nogil:
    struct iovec:
        void *iov_base
        size_t iov_len

cdef extern from "dc_sendloop.h" nogil:
    int DC_SL_OK
    int DC_SL_TIMEOUT
    int DC_SL_NOMEM
    int DC_SL_STOPPED
    int DC_SL_FULL

    ctypedef struct dc_sl_msg:
        int refs
        int niov
        size_t len
        void *owner
        dc_sl_msg *next
        iovec *iov

    ctypedef struct dc_sendloop:
        int nconns
        int roomfd
        dc_sl_msg *freed

    ctypedef struct dc_sl_info:
        size_t queued
        size_t qbytes
        uint64_t dropped
        uint64_t sent
        int dead
        int err

    int dc_sl_init(dc_sendloop *sl)
    dc_sl_msg *dc_sl_msg_new(int niov, size_t inline_bytes)
    uint8_t *dc_sl_msg_inline(dc_sl_msg *m)
    int dc_sl_add(dc_sendloop *sl, int fd, size_t max_msgs, size_t max_bytes, int block)
    void dc_sl_remove(dc_sendloop *sl, int id)
    int dc_sl_push(dc_sendloop *sl, int id, dc_sl_msg *m, double timeout, int *dropped, int *taken)
    int dc_sl_push_if_room(dc_sendloop *sl, int id, dc_sl_msg *m, int *dropped, int *taken)
    void dc_sl_arm_room(dc_sendloop *sl)
    void dc_sl_room_poke(dc_sendloop *sl)
    int dc_sl_flush(dc_sendloop *sl, int id, double timeout)
    int dc_sl_info_get(dc_sendloop *sl, int id, dc_sl_info *info)
    int dc_sl_dead(dc_sendloop *sl, int *ids, int max)
    dc_sl_msg *dc_sl_take_freed(dc_sendloop *sl)
    void dc_sl_run(dc_sendloop *sl)
    void dc_sl_stop(dc_sendloop *sl)
    void dc_sl_seal(dc_sendloop *sl)
    void dc_sl_destroy(dc_sendloop *sl)
cdef extern from "dc_seqlock.h" nogil:
    ctypedef uint64_t dc_au64
    ctypedef uint32_t dc_au32

cdef extern from "dc_ring.h" nogil:
    int DC_RING_EMPTY
    int DC_RING_LAPPED
    int DC_RING_FULL
    int DC_ERR_CORRUPT
    int DC_RING_OFF_DATA_WORD
    int DC_RING_OFF_DATA_SLEEPERS
    int DC_RING_OFF_ASYNC_SLEEPERS
    int DC_RING_OFF_SPACE_WORD
    int DC_RING_OFF_SPACE_SLEEPERS
    int DC_RING_OFF_SUBS_WORD
    int DC_RING_OFF_SPACE_ASYNC
    int DC_RING_OFF_SPACE_WAKE_ID
    int DC_RING_OFF_TAIL
    int DC_RING_OFF_INTENT
    int DC_RING_OFF_HEAD
    int DC_RING_OFF_CLOSED
    int DC_RING_OFF_LATEST_LOCK
    int DC_RING_OFF_LATEST_POS
    int DC_RING_OFF_LATEST_SEQ
    int DC_RING_OFF_SLOTS
    int DC_RING_OFF_MAX_SUBS
    int DC_RING_SLOT_SIZE
    int DC_RING_SLOT_CURSOR
    int DC_RING_SLOT_JOIN_SEQ
    int DC_RING_SLOT_WAKE
    int DC_RING_SLOT_WAKE_ID
    unsigned long long DC_RING_MAGIC

    ctypedef struct dc_writer:
        uint8_t *base
        uint8_t *ring
        uint64_t cap
        uint64_t mask
        uint32_t max_subs
        int block
        uint64_t tail
        uint64_t head
        uint64_t min_cursor
        uint64_t res_pos
        uint64_t res_len
        uint64_t res_end
        uint64_t intent
        int wake_fd

    ctypedef struct dc_reader:
        uint8_t *base
        uint8_t *ring
        uint64_t cap
        uint64_t mask
        int block
        uint64_t cursor
        int wake_fd

    void dc_cpu_relax()
    int64_t dc_realtime_ns()
    int64_t dc_monotonic_ns()
    int dc_futex_wait(dc_au32 *word, uint32_t expected, int64_t timeout_ns)
    uint32_t dc_sleep_prepare(dc_au32 *word, dc_au32 *flag)
    void dc_writer_init(dc_writer *w, uint8_t *base)
    int dc_writer_room(dc_writer *w, uint64_t t, uint64_t e)
    int dc_writer_reserve(dc_writer *w, uint64_t frame_len)
    uint8_t *dc_writer_ptr(const dc_writer *w)
    int dc_writer_commit(dc_writer *w, uint64_t seq, int64_t now_ns)
    void dc_writer_close(dc_writer *w)
    void dc_space_async_prepare(uint8_t *base, uint64_t id)
    int dc_async_prepare(uint8_t *base, uint32_t slot, uint64_t id, uint64_t cursor)
    void dc_reader_init(dc_reader *r, uint8_t *base, uint32_t slot)
    uint64_t dc_ring_tail(const uint8_t *base)
    int dc_ring_closed(const uint8_t *base)
    int dc_reader_valid(const dc_reader *r, uint64_t pos)
    int dc_reader_next(dc_reader *r, uint64_t *pos, dc_header *h)
    void dc_reader_advance(dc_reader *r, uint64_t to)
    void dc_reader_hold(dc_reader *r, uint64_t pos, uint64_t next)
    int dc_ring_latest(uint8_t *base, uint64_t *pos, uint64_t *length, uint64_t *seq)
    void dc_reader_resync(dc_reader *r, int newest)
    int dc_reader_check_at(const dc_reader *r, uint64_t pos, uint64_t length, dc_header *h)

cdef extern from "<sys/socket.h>" nogil:
    ssize_t recv(int fd, void *buf, size_t n, int flags)
    int setsockopt(int fd, int level, int name, const void *value, unsigned int length)
    int MSG_DONTWAIT
    int MSG_WAITALL
    int SOL_SOCKET
    int SO_RCVTIMEO

cdef extern from "<pthread.h>" nogil:
    ctypedef struct pthread_mutex_t:
        pass
    int pthread_mutex_init(pthread_mutex_t *m, const void *attr)
    int pthread_mutex_destroy(pthread_mutex_t *m)
    int pthread_mutex_lock(pthread_mutex_t *m)
    int pthread_mutex_trylock(pthread_mutex_t *m)
    int pthread_mutex_unlock(pthread_mutex_t *m)

cdef extern from "<poll.h>" nogil:
    struct pollfd:
        int fd
        short events
        short revents
    short POLLIN
    int poll(pollfd *fds, unsigned long nfds, int timeout)

cdef extern from "<sched.h>" nogil:
    int sched_yield()
