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

    ctypedef struct dc_sl_msg:
        int refs
        int niov
        size_t len
        void *owner
        dc_sl_msg *next
        iovec *iov

    ctypedef struct dc_sendloop:
        int nconns
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
    int dc_sl_flush(dc_sendloop *sl, int id, double timeout)
    int dc_sl_info_get(dc_sendloop *sl, int id, dc_sl_info *info)
    int dc_sl_dead(dc_sendloop *sl, int *ids, int max)
    dc_sl_msg *dc_sl_take_freed(dc_sendloop *sl)
    void dc_sl_run(dc_sendloop *sl)
    void dc_sl_stop(dc_sendloop *sl)
    void dc_sl_destroy(dc_sendloop *sl)
