"""The shm:// segment header, shared by both ring backends: layout constants,
creation and validation of the header, subscriber slots, and the locks that
say who is alive. Everything here is cold path (once per publisher,
subscriber, or wait slice); the per-message work is in ring.py / ring.pyx.

The byte layout is the one csrc/dc_ring.h documents; the offsets below must
match its DC_RING_OFF_* macros (a test checks them through the compiled module).

Liveness uses open-file-description (OFD) byte-range locks on the segment
file, not pids: the publisher holds a write lock on byte 0 for its lifetime
and each subscriber one on the first byte of its slot. The kernel drops them
when the process dies however it dies, they survive pid reuse and pid
namespaces, and OFD locks (unlike classic fcntl locks) belong to one open of
the file, so two subscribers in one process do not share or drop each other's.
"""

from __future__ import annotations

import ctypes
import fcntl
import os
import socket
import struct
import time
from typing import Any

from ..errors import DataCommsError

MAGIC = 0x474E495248534344  # "DCSHRING"
VERSION = 1

OFF_MAGIC = 0
OFF_VERSION = 8
OFF_DATA = 12
OFF_CAPACITY = 16
OFF_MAX_SUBS = 24
OFF_FLAGS = 28
OFF_OWNER_PID = 32
OFF_OWNER_START = 40
OFF_SIZE = 48
OFF_TAIL = 64
OFF_INTENT = 72
OFF_HEAD = 80
OFF_HEARTBEAT = 88
OFF_CLOSED = 96
OFF_DATA_WORD = 128
OFF_DATA_SLEEPERS = 132
OFF_ASYNC_SLEEPERS = 136
OFF_SPACE_WORD = 192
OFF_SPACE_SLEEPERS = 196
OFF_SUBS_WORD = 200
OFF_SPACE_ASYNC = 204
OFF_SPACE_WAKE_ID = 208
OFF_LATEST_LOCK = 256
OFF_LATEST_POS = 264
OFF_LATEST_LEN = 272
OFF_LATEST_SEQ = 280
OFF_SLOTS = 512
SLOT_SIZE = 64
SLOT_STATE = 0
SLOT_PID = 4
SLOT_CURSOR = 16
SLOT_JOIN_SEQ = 24
SLOT_WAKE = 32
SLOT_WAKE_ID = 40
SLOT_FREE = 0
SLOT_ACTIVE = 1
FLAG_BLOCK = 1

PAGE = 4096
MIN_CAPACITY = 1 << 12
MAX_CAPACITY = 1 << 40
DEFAULT_CAPACITY = 32 << 20
DEFAULT_MAX_SUBS = 64
MAX_SUBS_LIMIT = 1024

JOIN_WAIT_S = 1.0   # how long a joining subscriber waits for TAIL and the latest descriptor to agree

_CONFIG = struct.Struct("<QIIQIIQQQ")  # magic .. size, line 0


def capacity_for(requested: int) -> int:
    """The ring capacity used for a requested size: the next power of two, at least MIN_CAPACITY."""
    if not isinstance(requested, int) or requested <= 0 or requested > MAX_CAPACITY:
        raise ValueError(f"capacity must be a positive int up to {MAX_CAPACITY} bytes, not {requested!r}")
    return max(MIN_CAPACITY, 1 << (requested - 1).bit_length())


def data_offset(max_subs: int) -> int:
    return (OFF_SLOTS + max_subs * SLOT_SIZE + PAGE - 1) // PAGE * PAGE


def segment_size(capacity: int, max_subs: int = DEFAULT_MAX_SUBS) -> int:
    return data_offset(max_subs) + capacity


def wake_address(wake_id: int) -> bytes:
    """The abstract unix address of a subscriber's wake socket: "dc-wake-" and the id in
    16 hex digits (csrc/dc_ring.h, dc_wake_send). Abstract names leave no file behind."""
    return b"\0dc-wake-%016x" % (wake_id & 0xFFFFFFFFFFFFFFFF)


def init_segment(buf: Any, capacity: int, max_subs: int, block: bool, pid: int, start: int) -> None:
    """Writes the header of a fresh, zero-filled segment (before anyone else can see it)."""
    size = segment_size(capacity, max_subs)
    _CONFIG.pack_into(buf, 0, MAGIC, VERSION, data_offset(max_subs), capacity, max_subs,
                      FLAG_BLOCK if block else 0, pid, start, size)


class Config:
    """The validated line 0 of a segment."""

    __slots__ = ("capacity", "max_subs", "block", "owner_pid", "owner_start", "size", "data")

    def __init__(self, capacity: int, max_subs: int, block: bool, owner_pid: int, owner_start: int,
                 size: int, data: int) -> None:
        self.capacity = capacity
        self.max_subs = max_subs
        self.block = block
        self.owner_pid = owner_pid
        self.owner_start = owner_start
        self.size = size
        self.data = data


def read_config(buf: Any, file_size: int) -> Config:
    """Reads and checks line 0 against the file's real size; every later access is bounded by it."""
    if file_size < OFF_SLOTS:
        raise DataCommsError(f"shared-memory segment of {file_size} bytes is too small to be a datacomms ring")
    magic, version, data, cap, max_subs, flags, pid, start, size = _CONFIG.unpack_from(buf, 0)
    if magic != MAGIC:
        raise DataCommsError("shared-memory segment is not a datacomms ring (bad magic)")
    if version != VERSION:
        raise DataCommsError(f"shared-memory ring version {version} is not supported (this build reads {VERSION})")
    if (not 1 <= max_subs <= MAX_SUBS_LIMIT or cap < MIN_CAPACITY or cap > MAX_CAPACITY or cap & (cap - 1)
            or data != data_offset(max_subs) or size != data + cap or size != file_size):
        raise DataCommsError("shared-memory ring header is inconsistent with its size")
    return Config(cap, max_subs, bool(flags & FLAG_BLOCK), pid, start, size, data)


# ------------------------------------------------------------------ liveness


def _lock(fd: int, start: int, cmd: int, kind: int) -> bytes:
    # struct flock: l_type, l_whence (shorts), l_start, l_len (off_t), l_pid (int), padded
    req = struct.pack("hhqqi4x", kind, os.SEEK_SET, start, 1, 0)
    return fcntl.fcntl(fd, cmd, req)


def try_lock(fd: int, start: int) -> bool:
    """Takes the write lock on byte start for this open of the file; False if another holds it."""
    try:
        _lock(fd, start, fcntl.F_OFD_SETLK, fcntl.F_WRLCK)
        return True
    except OSError:
        return False


def unlock(fd: int, start: int) -> None:
    try:
        _lock(fd, start, fcntl.F_OFD_SETLK, fcntl.F_UNLCK)
    except OSError:
        pass


def held_by_other(fd: int, start: int) -> bool:
    """Whether some other open of the file holds a lock on byte start."""
    res = _lock(fd, start, fcntl.F_OFD_GETLK, fcntl.F_WRLCK)
    return struct.unpack("hhqqi4x", res)[0] != fcntl.F_UNLCK


def publisher_alive(fd: int) -> bool:
    return held_by_other(fd, 0)


def process_start_time(pid: int) -> int:
    """A process's start time in clock ticks after boot (0 if unknown): with the pid, an identity."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
        return int(stat[stat.rindex(b")") + 2:].split()[19])
    except (OSError, ValueError, IndexError):
        return 0


# ------------------------------------------------------------------ slots


def _slot(config: Config, i: int) -> int:
    return OFF_SLOTS + i * SLOT_SIZE


def _join_point(u64: memoryview, from_oldest: bool) -> tuple[int, int]:
    """(cursor, seq of the record that will be found there) for a new subscriber.

    From TAIL: the latest-value descriptor and TAIL are read until they agree
    (the writer stores TAIL, then the descriptor), so the next record at TAIL
    is the descriptor's seq + 1. From the oldest record: the cursor goes to
    HEAD with join seq 0, as the subscriber was there before seq 0 was sent;
    the records HEAD has passed (a wrapped ring) are then counted as lost,
    from the seq of the first record the reader finds.
    The reader counts a lap before its first message as exact loss from here.
    A live writer makes the two agree within a few stores; a header where they
    never do (scribbled on, or a writer that died between them) is an error
    after JOIN_WAIT_S, not an endless loop.
    """
    if from_oldest:
        return u64[OFF_HEAD // 8], 0
    deadline = None
    tries = 0
    while True:
        lock = u64[OFF_LATEST_LOCK // 8]
        pos, length, seq = u64[OFF_LATEST_POS // 8], u64[OFF_LATEST_LEN // 8], u64[OFF_LATEST_SEQ // 8]
        tail = u64[OFF_TAIL // 8]
        if not lock & 1 and u64[OFF_LATEST_LOCK // 8] == lock:
            if lock == 0 and tail == 0:
                return 0, 0
            if lock and pos + length == tail:
                return tail, seq + 1
        tries += 1
        if tries > 1000:   # the writer is not between two stores: it was preempted, or never will agree
            now = time.monotonic()
            if deadline is None:
                deadline = now + JOIN_WAIT_S
            elif now >= deadline:
                raise DataCommsError("shared-memory ring header is inconsistent: its TAIL and latest-value "
                                     "descriptor disagree (was the segment written by another program?)")
            time.sleep(0.001)


def claim_slot(fd: int, buf: Any, config: Config, pid: int, from_oldest: bool = False) -> int:
    """Finds a free slot, locks it for this open of the file, and activates it
    with its cursor at the current TAIL (a new subscriber sees what comes next),
    or with from_oldest at the first record ever sent if it is still there (a
    subscriber that was waiting for this publisher then misses nothing)."""
    u32 = memoryview(buf).cast("B")[:OFF_SLOTS + config.max_subs * SLOT_SIZE].cast("I")
    u64 = memoryview(buf).cast("B")[:OFF_SLOTS + config.max_subs * SLOT_SIZE].cast("Q")
    try:
        for i in range(config.max_subs):
            off = _slot(config, i)
            if u32[(off + SLOT_STATE) // 4] == SLOT_ACTIVE and held_by_other(fd, off):
                continue
            if not try_lock(fd, off):
                continue
            # The slot is ours now; whoever held it before is gone.
            u32[(off + SLOT_PID) // 4] = pid & 0xFFFFFFFF
            cursor, join_seq = _join_point(u64, from_oldest)
            u64[(off + SLOT_CURSOR) // 8] = cursor
            u64[(off + SLOT_JOIN_SEQ) // 8] = join_seq
            u32[(off + SLOT_WAKE) // 4] = 0
            u64[(off + SLOT_WAKE_ID) // 8] = 0
            u32[(off + SLOT_STATE) // 4] = SLOT_ACTIVE
            u32[OFF_SUBS_WORD // 4] = (u32[OFF_SUBS_WORD // 4] + 1) & 0xFFFFFFFF
            return i
    finally:
        u32.release()
        u64.release()
    raise DataCommsError(f"all {config.max_subs} subscriber slots of this shm segment are in use")


def release_slot(fd: int, buf: Any, config: Config, i: int) -> None:
    """Frees slot i and wakes a publisher that may be waiting for this subscriber to make room
    (else a block-mode publisher would notice only at the end of its sleep slice)."""
    off = _slot(config, i)
    struct.pack_into("I", buf, off + SLOT_STATE, SLOT_FREE)
    struct.pack_into("I", buf, off + SLOT_WAKE, 0)
    unlock(fd, off)
    from .python.ring import _full_fence, _futex_wake_all  # the futex call needs no compiled code
    u32 = memoryview(buf).cast("B")[:OFF_SLOTS].cast("I")
    anchor = ctypes.c_char.from_buffer(buf)
    try:
        _full_fence()
        if u32[OFF_SPACE_SLEEPERS // 4]:
            u32[OFF_SPACE_WORD // 4] = (u32[OFF_SPACE_WORD // 4] + 1) & 0xFFFFFFFF
            _futex_wake_all(ctypes.addressof(anchor) + OFF_SPACE_WORD)
        if u32[OFF_SPACE_ASYNC // 4]:   # a publisher waiting for room in an event loop
            u32[OFF_SPACE_ASYNC // 4] = 0
            wake_id = struct.unpack_from("<Q", buf, OFF_SPACE_WAKE_ID)[0]
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
                try:
                    s.sendto(b"\0", wake_address(wake_id))
                except OSError:
                    pass
    finally:
        del anchor
        u32.release()


def reap(fd: int, buf: Any, config: Config) -> int:
    """Frees the slots of subscribers that died without closing; returns the live count.
    Taking a dead slot's lock first keeps a subscriber that is claiming it right now safe."""
    live = 0
    for i in range(config.max_subs):
        off = _slot(config, i)
        if struct.unpack_from("I", buf, off + SLOT_STATE)[0] != SLOT_ACTIVE:
            continue
        if held_by_other(fd, off):
            live += 1
            continue
        if try_lock(fd, off):
            struct.pack_into("I", buf, off + SLOT_STATE, SLOT_FREE)
            unlock(fd, off)
    return live
