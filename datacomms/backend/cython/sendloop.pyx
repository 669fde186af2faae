# cython: language_level=3
"""The send loop, compiled: csrc/dc_sendloop.h drains per-connection bounded
queues with sendmsg on nonblocking sockets from a thread that never holds the
GIL. The readable reference of the same API is backend/python/sendloop.py.

Ownership: frames up to COPY_MAX bytes are copied into the C message (the
loop frees them); larger frames are written straight from the parts the
caller passed (numpy buffers included), and the C message keeps a reference
to the parts list until every queue has written it. Those references are
dropped here, with the GIL, at the next send, flush or close.
"""

from cpython.buffer cimport PyObject_GetBuffer, PyBuffer_Release, PyBUF_SIMPLE
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_GET_SIZE
from cpython.time cimport time_ns
from cpython.ref cimport Py_INCREF, Py_DECREF, PyObject
from libc.stdint cimport uint8_t, uint32_t, uint64_t, int64_t
from libc.stdlib cimport free
from libc.string cimport memcpy, strerror

import os
import threading

from ...errors import Closed, NAN_TIMEOUT, DataCommsError, Timeout
from ._csrc cimport (
    DC_SL_OK, DC_SL_TIMEOUT, DC_SL_NOMEM, DC_SL_STOPPED, DC_SL_FULL, dc_sl_msg, dc_sl_info, dc_sl_init,
    dc_sl_msg_new, dc_sl_msg_inline, dc_sl_add, dc_sl_remove, dc_sl_push, dc_sl_push_if_room, dc_sl_arm_room,
    dc_sl_room_poke, dc_sl_flush, dc_sl_info_get,
    dc_sl_dead, dc_sl_take_freed, dc_sl_run, dc_sl_seal, dc_sl_stop, dc_sl_destroy, dc_align64,
    pthread_mutex_init, pthread_mutex_destroy, pthread_mutex_lock, pthread_mutex_trylock, pthread_mutex_unlock,
)
from .framing cimport dumps_json, encode, has_buffers, write_small

# Frames up to this size are copied: cheaper than holding Python references
# the loop thread could not release without the GIL.
COPY_MAX = 16384
# what publish() waits when told not to wait: nothing, but a full block-mode queue is a Timeout
_JUST_LOOK = 1e-9

cdef int _MAX_DEAD = 256


cdef class SendLoop:
    """Per-connection bounded queues drained by one background thread.

    ``add(sock, max_msgs, max_bytes, block)`` registers a connected socket
    (the loop writes to its own duplicate of the descriptor);
    ``send(parts, cid=-1, timeout=None)`` queues one frame on one connection
    or all of them and returns how many connections dropped it.
    """

    def __cinit__(self):
        self.started = False
        self.closed = False
        self.socks = {}
        self.next_seq = 0
        self.sealed = False
        pthread_mutex_init(&self.pub_mu, NULL)
        rc = dc_sl_init(&self.sl)
        if rc < 0:
            raise OSError(-rc, os.strerror(-rc))
        self.started = True
        self.thread = threading.Thread(target=self._run, name="datacomms-sendloop", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        with nogil:
            dc_sl_run(&self.sl)

    def add(self, sock, size_t max_msgs=1024, size_t max_bytes=64 << 20, bint block=False, start=None) -> int:
        """Registers a connected stream socket; returns its connection id. With
        start, start(next_seq) gives a frame queued first on the new connection,
        before any frame publish() numbers next_seq or later."""
        if self.closed:
            raise Closed("send loop is closed")
        if hasattr(sock, "cipher"):
            raise TypeError("the compiled send loop writes raw sockets; TLS sockets use the python send loop")
        cdef int fd = sock.fileno()
        cdef int cid
        if start is not None:
            self._lock_pub()
        try:
            with nogil:
                cid = dc_sl_add(&self.sl, fd, max_msgs, max_bytes, block)
            if cid < 0:
                raise OSError(-cid, os.strerror(-cid))
            if start is not None:
                self.send(start(self.next_seq), cid, 0)
        finally:
            if start is not None:
                self._unlock_pub()
        return cid

    cdef void _lock_pub(self) noexcept:
        # the holder may be waiting for queue room with the GIL released, or
        # encoding with it held: wait for the mutex without the GIL
        if pthread_mutex_trylock(&self.pub_mu) != 0:
            with nogil:
                pthread_mutex_lock(&self.pub_mu)

    cdef void _unlock_pub(self) noexcept:
        pthread_mutex_unlock(&self.pub_mu)
        # an asend that found the publisher busy sleeps on room_fd until it is free
        dc_sl_room_poke(&self.sl)

    @property
    def room_fd(self) -> int:
        """An eventfd that turns readable once room may have appeared after a
        publish_nowait that returned None; whoever sleeps on it reads it empty."""
        if self.closed:
            raise Closed("send loop is closed")
        return self.sl.roomfd

    def publish_nowait(self, data):
        """publish without waiting, all or nothing: its seq when every block-mode
        queue had room, else None with nothing queued and no seq used, and
        room_fd armed to become readable once there may be room (or once the
        publisher another thread held is free)."""
        cdef uint64_t seq
        cdef bint refused = False
        if pthread_mutex_trylock(&self.pub_mu) != 0:
            dc_sl_arm_room(&self.sl)
            if pthread_mutex_trylock(&self.pub_mu) != 0:
                return None
        try:
            if self.sealed:
                raise Closed("publisher is closed")
            seq = self.next_seq
            if self._send_data(data, seq, 0, True) == -2:
                refused = True
                return None
            self.next_seq = seq + 1
        finally:
            if refused:   # room_fd is armed for this caller: a poke now would wake it at once
                pthread_mutex_unlock(&self.pub_mu)
            else:
                self._unlock_pub()
        return seq

    def publish(self, data, timeout=None) -> int:
        """Numbers data with next_seq, queues it on every connection (send_data)
        and returns its seq. A Timeout still uses the seq (the other
        connections have the frame); an encoding error does not."""
        if timeout is not None and timeout != timeout:
            raise ValueError(NAN_TIMEOUT)
        cdef uint64_t seq
        self._lock_pub()
        try:
            if self.sealed:
                raise Closed("publisher is closed")
            seq = self.next_seq
            # timeout 0 waits for nothing, and a full block-mode queue is still a
            # Timeout (send()'s 0 drops quietly: that is for control frames)
            wait = _JUST_LOOK if timeout is not None and timeout <= 0 else timeout
            try:
                self._send_data(data, seq, wait)
            except Timeout:
                self.next_seq = seq + 1
                if self.sealed:
                    raise Closed("publisher is closed") from None   # seal() ended the wait
                if wait is not timeout:
                    raise Timeout(f"send: a subscriber's queue was full (timeout={timeout}: no waiting)") from None
                raise
            self.next_seq = seq + 1
        finally:
            self._unlock_pub()
        return seq

    def seal(self) -> None:
        """publish() raises Closed from now on, a publish waiting for room
        included (send and send_data still work, without waiting for room)."""
        self.sealed = True
        if not self.closed:
            dc_sl_seal(&self.sl)

    def remove(self, int cid) -> None:
        """Forgets connection cid: its queue is dropped and the loop closes its descriptor."""
        if not self.closed:
            dc_sl_remove(&self.sl, cid)

    cdef dc_sl_msg *build(self, list parts) except NULL:
        cdef Py_buffer view
        cdef Py_ssize_t total = 0, off = 0
        cdef int i, n = len(parts)
        cdef dc_sl_msg *m
        cdef list owned
        for p in parts:
            total += len(p) if type(p) is bytes else memoryview(p).nbytes
        if total <= COPY_MAX:
            m = dc_sl_msg_new(1, total)
            if m == NULL:
                raise MemoryError()
            for p in parts:
                PyObject_GetBuffer(p, &view, PyBUF_SIMPLE)
                memcpy(dc_sl_msg_inline(m) + off, view.buf, view.len)
                off += view.len
                PyBuffer_Release(&view)
            m.iov[0].iov_base = dc_sl_msg_inline(m)
            m.iov[0].iov_len = total
            m.len = total
            return m
        # bytes and memoryviews keep their memory where it is while referenced;
        # anything else (a bytearray could be resized) is pinned by a memoryview
        owned = [p if type(p) is bytes or type(p) is memoryview else memoryview(p) for p in parts]
        m = dc_sl_msg_new(n, 0)
        if m == NULL:
            raise MemoryError()
        for i in range(n):
            PyObject_GetBuffer(owned[i], &view, PyBUF_SIMPLE)
            m.iov[i].iov_base = view.buf
            m.iov[i].iov_len = view.len
            PyBuffer_Release(&view)
        m.len = total
        Py_INCREF(owned)
        m.owner = <void *>owned
        return m

    cdef void release_freed(self):
        cdef dc_sl_msg *m
        if self.sl.freed == NULL:
            # unlocked peek: a list filled meanwhile is taken at the next call
            return
        m = dc_sl_take_freed(&self.sl)
        cdef dc_sl_msg *nxt
        while m != NULL:
            nxt = m.next
            Py_DECREF(<object>m.owner)
            free(m)
            m = nxt

    def send(self, list parts, int cid=-1, timeout=None) -> int:
        """Queues one frame (its parts, in order) on connection cid, or on every
        connection when cid is -1. Returns how many connections dropped it
        because their queue was full; raises Timeout when a block-mode queue
        stayed full for timeout seconds (None: wait for ever)."""
        if self.closed:
            raise Closed("send loop is closed")
        self.release_freed()
        return self.push(self.build(parts), cid, timeout)

    def send_data(self, data, uint64_t seq, timeout=None) -> int:
        """Encodes data as data frame seq, stamped now, and queues it on every
        connection (as send). Small bytes and JSON dicts are framed straight
        into the queued message: no intermediate objects."""
        return self._send_data(data, seq, timeout)

    cdef int _send_data(self, object data, uint64_t seq, object timeout, bint if_room=False) except -1:
        cdef int64_t ts = time_ns()
        cdef type t = type(data)
        cdef object body
        cdef int kind
        cdef Py_ssize_t n
        cdef uint32_t meta_len = 0
        cdef dc_sl_msg *m
        if self.closed:
            raise Closed("send loop is closed")
        if t is bytes and PyBytes_GET_SIZE(data) <= COPY_MAX - 64:
            body, kind = data, 0
        elif t is dict and not has_buffers(data):
            body, kind = dumps_json(data), 2
            meta_len = <uint32_t>PyBytes_GET_SIZE(body)
            if PyBytes_GET_SIZE(body) > COPY_MAX - 64:
                body = None
        else:
            body = None
        self.release_freed()
        if body is None:
            return self.push(self.build(encode(data, seq, ts)[0]), -1, timeout, if_room)
        n = PyBytes_GET_SIZE(body)
        m = dc_sl_msg_new(1, 64 + dc_align64(n))
        if m == NULL:
            raise MemoryError()
        write_small(dc_sl_msg_inline(m), kind, 0, seq, ts, PyBytes_AS_STRING(body), n, meta_len,
                    1 if kind == 0 else 0, n if kind == 0 else 0)
        m.iov[0].iov_base = dc_sl_msg_inline(m)
        m.iov[0].iov_len = m.len = 64 + dc_align64(n)
        return self.push(m, -1, timeout, if_room)

    cdef int push(self, dc_sl_msg *m, int cid, timeout, bint if_room=False) except -1:
        """Queues m (which this call owns until a queue takes it). if_room: all or
        nothing, without waiting (dc_sl_push_if_room); -2 when nothing was queued."""
        cdef double t = -1.0 if timeout is None else max(<double>timeout, 0.0)
        cdef int dropped = 0, taken = 0, rc
        with nogil:
            if if_room:
                rc = dc_sl_push_if_room(&self.sl, cid, m, &dropped, &taken)
            else:
                rc = dc_sl_push(&self.sl, cid, m, t, &dropped, &taken)
        if not taken:
            # no queue took it, so nobody else can see it (once taken, m belongs to the loop)
            if m.owner != NULL:
                Py_DECREF(<object>m.owner)
            free(m)
        if rc == DC_SL_TIMEOUT:
            raise Timeout(f"send: a subscriber's queue stayed full for {timeout} s")
        if rc == DC_SL_STOPPED:
            raise Closed("send loop is closed")
        if rc == DC_SL_FULL:
            return -2
        return dropped

    def flush(self, int cid=-1, timeout=None) -> bool:
        """Waits until the queues (or cid's) are written; False on timeout."""
        cdef double t = -1.0 if timeout is None else max(<double>timeout, 0.0)
        cdef int rc
        if self.closed:
            return True
        with nogil:
            rc = dc_sl_flush(&self.sl, cid, t)
        self.release_freed()
        return rc == DC_SL_OK

    def info(self, int cid):
        """(queued messages, queued bytes, dropped, sent, dead, errno) of cid, or None."""
        cdef dc_sl_info inf
        if self.closed or dc_sl_info_get(&self.sl, cid, &inf) < 0:
            return None
        return (inf.queued, inf.qbytes, inf.dropped, inf.sent, bool(inf.dead), inf.err)

    def dead(self) -> list:
        """Ids of connections whose peer hung up or whose write failed (not yet removed)."""
        cdef int ids[256]
        cdef int n, i
        if self.closed:
            return []
        n = dc_sl_dead(&self.sl, ids, _MAX_DEAD)
        return [ids[i] for i in range(n)]

    @property
    def connections(self) -> int:
        return self.sl.nconns if not self.closed else 0

    def close(self) -> None:
        """Stops the thread and closes every connection (queued frames are dropped)."""
        if self.closed or not self.started:
            return
        self.closed = True
        dc_sl_stop(&self.sl)
        self.thread.join()
        with nogil:
            dc_sl_destroy(&self.sl)
        self.release_freed()

    def __dealloc__(self):
        if self.started and not self.closed:
            # the thread holds a reference to self while it runs, so reaching
            # here means it never started or already returned
            self.closed = True
            dc_sl_destroy(&self.sl)
            self.release_freed()
        pthread_mutex_destroy(&self.pub_mu)
