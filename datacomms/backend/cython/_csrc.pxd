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
