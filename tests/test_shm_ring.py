"""The shm ring in one process, on both backends: wrap-around and padding,
zero-copy receive, send-side loans, a scribbled-on segment, and the header
layout the C header and the Python twin must share."""

from __future__ import annotations

import mmap
import os
import random
import struct
import time

import numpy as np
import pytest

import datacomms as dc
from datacomms.backend import _segment as S
from datacomms.transports.shm import path_of

from conftest import AVAILABLE


def _pair(backend, name, **pub_kw):
    pub = dc.Publisher(f"shm://{name}", backend=backend, **pub_kw)
    sub = dc.Subscriber(f"shm://{name}", backend=backend)
    return pub, sub


def _resident_kib(ino: int) -> list[tuple[int, int]]:
    """(Size, Rss) in KiB of each of this process's mappings of the file with inode ino."""
    out, current = [], None
    with open("/proc/self/smaps") as f:
        for line in f:
            fields = line.split()
            if "-" in fields[0] and len(fields) >= 5:  # a mapping's first line: range perms offset dev inode
                current = None
                if fields[4] == str(ino):
                    current = [0, 0]
                    out.append(current)
            elif current is not None and fields[0] in ("Size:", "Rss:"):
                current[fields[0] == "Rss:"] = int(fields[1])
    return [tuple(m) for m in out]


def test_segment_pages_are_resident_from_the_start(backend, shm_name):
    """The publisher's and each subscriber's mappings are faulted in when they are made,
    not one page at a time mid-stream (a page fault every 4 KiB of records)."""
    pub, sub = _pair(backend, shm_name, capacity=4 << 20)
    with pub, sub:
        pub.send(b"x")  # the subscriber attaches on first use at the latest
        assert sub.recv(timeout=5).data == b"x"
        maps = _resident_kib(os.stat(path_of(shm_name)).st_ino)
        assert len(maps) == 2, maps
        for size, rss in maps:
            assert size >= 4 << 10 and rss == size, maps


@pytest.mark.skipif("cython" not in AVAILABLE, reason="DATACOMMS_NO_EXTENSIONS=1")
def test_layout_matches_the_c_header():
    layout = dc.backend.get("cython").ring._layout()
    for key, value in layout.items():
        ours = key if key == "MAGIC" or key.startswith("SLOT_") else "OFF_" + key
        assert getattr(S, ours) == value, key


def test_wraps_with_padding_and_frames_near_capacity_block_mode(backend, shm_name):
    """Random sizes up to the whole ring, so every wrap case occurs, including a frame
    that needs more than the room left after padding (the pad is overwritten)."""
    rng = random.Random(5)
    pub, sub = _pair(backend, shm_name, capacity=1 << 14, on_full="block")
    with pub, sub:
        for i in range(1500):
            size = rng.choice([0, 1, 63, 64, 65, 500, 4000, 9000, (1 << 14) - 64 - rng.randrange(0, 2) * 64])
            payload = bytes([i % 251]) * size
            assert pub.send(payload, timeout=5) == i
            m = sub.recv(timeout=5)
            assert m.seq == i and m.data == payload
        assert sub.stats.lost == 0


def test_drop_mode_lap_resyncs_on_an_intact_record(backend, shm_name):
    pub, sub = _pair(backend, shm_name, capacity=1 << 14)
    with pub, sub:
        for i in range(1000):
            pub.send(i.to_bytes(4, "little") * (1 + i % 50))
        got = []
        while True:
            try:
                m = sub.recv(timeout=0)
            except dc.Timeout:
                break
            assert m.data == m.seq.to_bytes(4, "little") * (1 + m.seq % 50)
            got.append(m.seq)
        assert got and got[-1] == 999 and got == sorted(got)
        # it joined before seq 0: everything it did not receive is lost, counted exactly
        assert sub.stats.lost == 1000 - len(got) > 0


def test_zero_copy_views_and_overwrite_detection(backend, shm_name):
    pub, sub = _pair(backend, shm_name, capacity=1 << 14)
    with pub, sub:
        pub.send(np.arange(100, dtype=np.int32))
        m = sub.recv(copy=False, timeout=1)
        assert isinstance(m.data, np.ndarray) and not m.data.flags.writeable
        assert np.array_equal(m.data, np.arange(100)) and sub.still_valid()
        for _ in range(200):  # drop mode: the publisher laps the held record
            pub.send(b"y" * 200)
        assert not sub.still_valid(), "an overwritten view must be detectable"
        del m
        sub.release()
        assert not sub.still_valid()
        n = sub.recv(timeout=1)
        assert n.data == b"y" * 200


def test_zero_copy_hold_stops_a_block_mode_publisher(backend, shm_name):
    pub, sub = _pair(backend, shm_name, capacity=1 << 14, on_full="block")
    with pub, sub:
        pub.send(b"held" * 100)
        m = sub.recv(copy=False, timeout=1)
        with pytest.raises(dc.Timeout):
            for _ in range(100):
                pub.send(b"z" * 1000, timeout=0.05)
        assert bytes(m.data) == b"held" * 100 and sub.still_valid()
        del m
        sub.release()
        pub.send(b"after release", timeout=1)


def test_spinning_publisher_keeps_the_send_timeout(backend, shm_name):
    """A block-mode publisher that busy-polls for room still gives up at send's timeout
    (the spin is cut short by the deadline) and carries on once there is room."""
    pub, sub = _pair(backend, shm_name, capacity=1 << 14, on_full="block", spin_us=60e6)
    with pub, sub:
        pub.send(b"held" * 100)
        m = sub.recv(copy=False, timeout=1)
        sent = 1
        t0 = time.monotonic()
        with pytest.raises(dc.Timeout):
            for _ in range(100):
                pub.send(b"z" * 1000, timeout=0.05)
                sent += 1
        assert time.monotonic() - t0 < 30, "the spin outlived the timeout"  # liveness, not speed
        assert 1 < sent < 100 and bytes(m.data) == b"held" * 100
        del m
        sub.release()
        assert pub.send(b"after release", timeout=1) == sent
        got = [sub.recv(timeout=1).seq for _ in range(sent)]
        assert got == list(range(1, sent + 1))


def test_loan_commit_abort(backend, shm_name):
    pub, sub = _pair(backend, shm_name, capacity=1 << 16)
    with pub, sub:
        with pub.loan((16, 32), np.float32) as loan:
            assert loan.array.shape == (16, 32) and loan.array.flags.writeable
            loan.array[:] = 1.5
            with pytest.raises(dc.DataCommsError):
                pub.send(b"not now")
        m = sub.recv(timeout=1)
        assert m.seq == 0 and m.data.dtype == np.float32 and np.all(m.data == 1.5)
        loan = pub.loan(10, "u1")
        loan.abort()
        assert pub.send(b"next") == 1, "an aborted loan publishes nothing and takes no seq"
        assert sub.recv(timeout=1).data == b"next"
        with pytest.raises(dc.FrameError):
            pub.loan(1 << 17, "u1")
        rec = pub.loan(3, [("a", "<i4"), ("b", "<f8")])
        rec.array["a"] = [1, 2, 3]
        rec.array["b"] = 0.5
        assert rec.commit() == 2
        got = sub.recv(timeout=1).data
        assert list(got["a"]) == [1, 2, 3] and np.all(got["b"] == 0.5)
        with pytest.raises(dc.DataCommsError):
            rec.commit()


@pytest.mark.parametrize("copy", [True, False])
def test_latest_while_a_loan_is_written_over_the_newest_record_waits_for_it(backend, shm_name, copy):
    """The newest record is being written over by the next one (here a loan not yet committed;
    a large send does the same while it copies): latest() waits for the next one rather than
    calling the ring corrupted, and after an abort finds nothing new."""
    pub, sub = _pair(backend, shm_name, capacity=1 << 14)
    with pub, sub:
        pub.send(np.zeros(8000, np.uint8))          # [0, 8128)
        loan = pub.loan(9000, "u1")                 # a pad, then [16384, 25536): over the first
        with pytest.raises(dc.Timeout):
            sub.latest(timeout=0.05, copy=copy)
        loan.array[:] = 7
        assert loan.commit() == 1
        m = sub.latest(timeout=1, copy=copy)
        assert m.seq == 1 and np.all(m.data == 7) and sub.stats.skipped == 1
        del m
        pub.send(np.zeros(8000, np.uint8))          # seq 2, at the ring's start
        pub.loan(9000, "u1").abort()                # over seq 2, never published
        with pytest.raises(dc.Timeout):
            sub.latest(timeout=0.05, copy=copy)
        pub.send(b"after")
        assert sub.latest(timeout=1, copy=copy).data == b"after"


@pytest.mark.parametrize("shape, dtype", [((2, 2), "(2,)i4"), ((3,), "V0"), ((3,), "S0"), ((), "V0")])
def test_a_loan_has_the_shape_and_dtype_an_array_of_them_gets(backend, shm_name, shape, dtype):
    """A subarray dtype adds its shape, "S0" is S1, "V0" has no bytes: the loan's array is
    np.empty(shape, dtype)'s shape and dtype, and so is what the subscriber receives."""
    want = np.empty(shape, dtype)
    if want.dtype.itemsize:
        want[...] = np.ones((), want.dtype)
    pub, sub = _pair(backend, shm_name, capacity=1 << 14)
    with pub, sub:
        with pub.loan(shape, dtype) as loan:
            assert (loan.array.shape, loan.array.dtype) == (want.shape, want.dtype)
            loan.array[...] = want
        got = sub.recv(timeout=1).data
        assert (got.shape, got.dtype) == (want.shape, want.dtype) and np.array_equal(got, want)


def test_a_loan_takes_numpy_integers_and_refuses_floats_in_its_shape(backend, shm_name):
    pub, sub = _pair(backend, shm_name, capacity=1 << 14)
    with pub, sub:
        for shape in (np.int64(3), (np.uint8(2), 3), np.array([2, 3])):
            with pub.loan(shape, "u1") as loan:
                assert loan.array.shape == np.empty(shape).shape
        for shape in (2.5, (2.7,), (2, 1.0)):
            with pytest.raises(TypeError):
                pub.loan(shape, "u1")
        assert pub.send(b"next") == 3
        assert [sub.recv(timeout=1).seq for _ in range(4)] == [0, 1, 2, 3]


@pytest.mark.parametrize("shape", [(2 ** 64 - 191,), (2 ** 64 - 1,), (2 ** 32, 2 ** 32), (3, 2 ** 62)])
def test_a_loan_too_large_for_any_ring_is_refused_before_it_writes(backend, shm_name, shape):
    """Shapes whose byte size wraps round 64 bits (or numpy's int64 product): a FrameError,
    not a small frame that takes a seq and writes outside its reservation."""
    pub, sub = _pair(backend, shm_name, capacity=1 << 14)
    with pub, sub:
        pub.send(b"\x01" * 64)
        with pytest.raises(dc.FrameError, match="does not fit"):
            pub.loan(shape, "u1")
        assert pub.send(b"next") == 1
        assert sub.recv(timeout=1).data == b"\x01" * 64, "the record before the loan was written on"
        assert sub.recv(timeout=1).data == b"next"


def test_a_loan_open_when_its_publisher_closes_is_closed(backend, shm_name):
    pub, sub = _pair(backend, shm_name, capacity=1 << 14)
    with sub:
        loan = pub.loan(4, "u1")
        pub.close()
        with pytest.raises(dc.Closed):
            loan.commit()
        with pytest.raises(dc.Closed):
            sub.recv(timeout=1)


def test_an_aborted_loan_leaves_what_it_wrote_over_marked_overwritten(backend, shm_name):
    """Drop mode: a loan filled over old records and aborted, then a smaller send in its
    place. The records the fill wrote over stay overwritten (INTENT never goes back): a held
    view of one is not still_valid(), and a reader that had not got to it skips it as lost
    rather than receiving it torn."""
    cap = 1 << 14
    pub = dc.Publisher(f"shm://{shm_name}", backend=backend, capacity=cap)
    holder = dc.Subscriber(f"shm://{shm_name}", backend=backend)
    behind = dc.Subscriber(f"shm://{shm_name}", backend=backend)
    with pub, holder, behind:
        pub.send(b"x" * 128)                        # [0, 192)
        pub.send(np.arange(256, dtype=np.int32))    # [192, 1344): 64 header, 64 meta, 1024 data
        for _ in range(12):
            pub.send(b"y" * 1152)                   # 1216 bytes each
        pub.send(b"z" * 384)                        # 448: the ring is full to its end
        assert pub._writer.tail == cap
        holder.recv(timeout=1)
        held = holder.recv(copy=False, timeout=1)
        assert held.seq == 1 and holder.still_valid()
        assert behind.recv(timeout=1).seq == 0      # its cursor is on seq 1 now
        loan = pub.loan(2048, "u1")                 # over [0, 2176) of the ring
        loan.array[600:] = 0xFF                     # seq 1's data, not its header
        loan.abort()
        assert pub.send(b"") == 15                  # 64 bytes in the loan's place
        assert not np.array_equal(held.data, np.arange(256))
        assert not holder.still_valid(), "a view the aborted loan wrote over passed for intact"
        m = behind.recv(timeout=1)
        assert m.seq > 1, "a record the aborted loan wrote over was received"
        assert behind.stats.lost == m.seq - 1
        del held, m


@pytest.mark.parametrize("on_full", ["drop", "block"])
def test_records_after_an_aborted_loan_past_the_ring_end_are_all_received(backend, shm_name, on_full):
    """A loan that needed a pad (it went to the ring's start) aborted while the reader was
    caught up: the smaller records sent after it are received, none lost."""
    pub, sub = _pair(backend, shm_name, capacity=1 << 14, on_full=on_full)
    with pub, sub:
        for i in range(31):
            pub.send(b"w" * 448)                    # 512 bytes each: 512 left before the end
            assert sub.recv(timeout=1).seq == i
        pub.loan(16000, "u1").abort()               # a pad of 512, then 16128 bytes
        assert [pub.send(b"a"), pub.send(b"b")] == [31, 32]
        assert [sub.recv(timeout=1).data for _ in range(2)] == [b"a", b"b"]
        assert sub.stats.lost == 0


def _scribble(name: str, offset: int, data: bytes) -> None:
    fd = os.open(path_of(name), os.O_RDWR)
    try:
        with mmap.mmap(fd, 0) as mm:
            mm[offset:offset + len(data)] = data
    finally:
        os.close(fd)


def test_corrupted_record_is_a_frame_error(backend, shm_name):
    pub, sub = _pair(backend, shm_name, capacity=1 << 14)
    with pub, sub:
        pub.send(b"first")
        data = S.data_offset(S.DEFAULT_MAX_SUBS)
        _scribble(shm_name, data + 40, (10 ** 12).to_bytes(8, "little"))  # frame_len of record 0
        with pytest.raises(dc.FrameError):
            sub.recv(timeout=1)
        pub.send(b"second")
        assert sub.recv(timeout=1).data == b"second"


def test_scribbled_segment_never_crashes_or_hangs(backend, shm_name):
    """Random bytes over the shared header lines and the ring: every call returns,
    raises a DataCommsError, or times out; none reads out of bounds."""
    rng = random.Random(11)
    pub, sub = _pair(backend, shm_name, capacity=1 << 12)
    data = S.data_offset(S.DEFAULT_MAX_SUBS)
    with pub, sub:
        for round_ in range(300):
            for i in range(rng.randrange(1, 6)):
                pub.send(bytes(rng.randrange(0, 300)))
            where = rng.choice([S.OFF_TAIL, S.OFF_INTENT, S.OFF_HEAD, S.OFF_LATEST_POS, S.OFF_LATEST_LEN,
                                S.OFF_LATEST_LOCK,
                                data + rng.randrange(0, 1 << 12)])
            if where < data:
                blob = rng.choice([rng.getrandbits(64), 0, 2 ** 64 - 1, rng.randrange(0, 1 << 14)]).to_bytes(8, "little")
            else:
                blob = rng.randbytes(rng.randrange(1, 64))
            _scribble(shm_name, where, blob[: max(0, min(len(blob), (data + (1 << 12)) - where))])
            for call in (sub.recv, sub.latest):
                try:
                    call(timeout=0)
                except dc.DataCommsError:
                    pass
            if where in (S.OFF_TAIL, S.OFF_INTENT, S.OFF_HEAD):
                # put the writer's own indices back so later rounds exercise the ring, not a dead header
                _scribble(shm_name, S.OFF_TAIL, pub._writer.tail.to_bytes(8, "little"))
                _scribble(shm_name, S.OFF_INTENT, pub._writer.tail.to_bytes(8, "little"))
        pub.send(b"still works")
        try:
            sub.latest(timeout=1)
        except dc.DataCommsError:
            pass


_SUBSCRIBE = """
import sys, datacomms as dc
try:
    dc.Subscriber(sys.argv[1], backend=sys.argv[2])
    print("attached")
except dc.DataCommsError as exc:
    print("refused:", exc)
"""


def test_a_new_subscriber_of_a_scribbled_tail_is_refused_not_stuck(backend, shm_name):
    """A TAIL scribbled past the latest record made Subscriber() spin for ever, waiting for
    the latest-value descriptor and TAIL to agree. It is a clear error now, and the next
    send (which writes TAIL again) lets new subscribers in. In a child: the old code hung."""
    import subprocess
    import sys
    url = f"shm://{shm_name}"
    with dc.Publisher(url, backend=backend, capacity=1 << 12) as pub:
        pub.send(b"a")
        _scribble(shm_name, S.OFF_TAIL, (10 ** 15).to_bytes(8, "little"))
        out = subprocess.run([sys.executable, "-c", _SUBSCRIBE, url, backend.name],
                             capture_output=True, text=True, timeout=60)
        assert out.stdout.startswith("refused:") and "inconsistent" in out.stdout, (out.stdout, out.stderr)
        pub.send(b"b")
        with dc.Subscriber(url, backend=backend) as sub:
            pub.send(b"c")
            assert sub.recv(timeout=5).data == b"c"


_CLOSE_WHILE_WAITING = """
import gc, os, sys, threading, time
import datacomms as dc
url, backend, which = sys.argv[1:4]
name = url[len("shm://"):]
if which == "recv":
    pub = dc.Publisher(url, backend=backend)
    end = dc.Subscriber(url, backend=backend)
    call = lambda: end.recv()                      # waits for ever: nothing is sent
else:
    pub = end = dc.Publisher(url, backend=backend, on_full="block", capacity=1 << 12)
    sub = dc.Subscriber(url, backend=backend)    # never reads: the ring fills
    call = lambda: [pub.send(b"x" * 500) for _ in range(100)]
out = []
def run():
    try:
        call()
    except BaseException as exc:
        out.append(exc)
t = threading.Thread(target=run, daemon=True)
t.start()
time.sleep(0.3)     # not a timing assumption: close() must be safe whether or not it waits yet
end.close()
t.join(10)
print("raised:", type(out[0]).__name__ if out else None, "alive:", t.is_alive())
pub.close()
if which == "send":
    sub.close()
gc.collect()
with open("/proc/self/maps") as f:
    print("mapped:", any("dc-" + name in line for line in f))
"""


@pytest.mark.parametrize("which", ["recv", "send"])
def test_close_from_another_thread_ends_a_wait_with_closed(backend, shm_name, which):
    """close() while another thread waited in recv(), or in a block-mode send() for room,
    unmapped the segment under it: a segfault (cython) or an AttributeError/ValueError
    (python). The waiting call now raises Closed and the mapping goes when it is out."""
    import subprocess
    import sys
    out = subprocess.run([sys.executable, "-c", _CLOSE_WHILE_WAITING, f"shm://{shm_name}", backend.name, which],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.splitlines() == ["raised: Closed alive: False", "mapped: False"], (out.stdout, out.stderr)


def test_infinite_timeout_waits_like_none(backend, shm_name):
    """recv(timeout=math.inf) raised OverflowError on the python backend (int(inf * 1e9)) and
    relied on an undefined double-to-int64 cast on the cython one; nan went the same ways.
    inf (or any timeout past int64 nanoseconds) now waits like None, nan is a ValueError."""
    import math
    import threading
    pub, sub = _pair(backend, shm_name)
    with pub, sub:
        sender = threading.Timer(0.2, pub.send, (b"late",))
        sender.start()
        try:
            assert sub.recv(timeout=math.inf).data == b"late"
        finally:
            sender.join()
        sender = threading.Timer(0.2, pub.send, (b"later",))
        sender.start()
        try:
            assert sub.latest(timeout=1e300).data == b"later"
        finally:
            sender.join()
        out: list = []

        def recv_nan() -> None:
            try:
                out.append(sub.recv(timeout=math.nan))
            except Exception as exc:
                out.append(exc)
        waiter = threading.Thread(target=recv_nan, daemon=True)
        waiter.start()
        waiter.join(10)
        if waiter.is_alive():   # it waited as if for ever: let it out, then fail
            pub.send(b"unblock")
            waiter.join(10)
        assert isinstance(out[0], ValueError) and "nan" in str(out[0]), out
        with pytest.raises(dc.Timeout):
            sub.recv(timeout=-1)


_SCRIBBLED_CONFIG = """
import struct, sys
import datacomms as dc
from datacomms.backend import _segment as S
be = dc.backend.get(sys.argv[1])
for off, fmt, value in ((S.OFF_CAPACITY, "<Q", 1 << 40), (S.OFF_CAPACITY, "<Q", 3 << 12),
                        (S.OFF_MAX_SUBS, "<I", 5000), (S.OFF_DATA, "<I", 1 << 20)):
    for make in (lambda b: be.ring.Writer(b), lambda b: be.ring.Reader(b, 0)):
        buf = bytearray(S.segment_size(1 << 12, 2))
        S.init_segment(buf, 1 << 12, 2, False, 1, 1)
        struct.pack_into("<I", buf, S.OFF_SLOTS + S.SLOT_STATE, S.SLOT_ACTIVE)
        struct.pack_into(fmt, buf, off, value)
        try:
            end = make(buf)
            end.send(b"y" * 3000) if hasattr(end, "send") else end.recv(timeout=0)
            print("accepted")
        except dc.DataCommsError as exc:
            print("refused" if "inconsistent" in str(exc) else repr(exc))
        except Exception as exc:
            print(repr(exc))
"""


def test_a_writer_or_reader_refuses_a_header_that_does_not_fit_its_buffer(backend):
    """Writer(buf) and Reader(buf, slot) took capacity, ring offset and slot count from the
    header as they found it: a capacity larger than the buffer made the compiled writer
    write past it (heap corruption, abort) and the python one fail with a memoryview error.
    Both check the header against the buffer now (in a child: the old code crashed)."""
    import subprocess
    import sys
    out = subprocess.run([sys.executable, "-c", _SCRIBBLED_CONFIG, backend.name],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["refused"] * 8, (out.stdout, out.stderr[-2000:])


def _ring_in_memory(backend, capacity: int = 1 << 12) -> bytearray:
    """A segment in a bytearray with subscriber slot 0 joined before the first message."""
    buf = bytearray(S.segment_size(capacity, 2))
    S.init_segment(buf, capacity, 2, False, 1, 1)
    struct.pack_into("<I", buf, S.OFF_SLOTS + S.SLOT_STATE, S.SLOT_ACTIVE)
    return buf


def test_latest_on_a_closed_ring_with_a_scribbled_tail_returns(backend):
    """Found by tests/fuzz/fuzz_shm.py: on a closed segment whose TAIL was scribbled
    past the cursor and nothing newer to take, latest() waited for more, the wait
    returned at once (closed, and TAIL says there is more) and the loop never ended,
    whatever the timeout."""
    buf = _ring_in_memory(backend)
    backend.ring.Writer(buf).close()
    struct.pack_into("<Q", buf, S.OFF_TAIL, 1374463283923456787)
    r = backend.ring.Reader(buf, 0)
    try:
        with pytest.raises(dc.Closed):
            r.latest(timeout=1)
        with pytest.raises(dc.DataCommsError):
            r.recv(timeout=1)
    finally:
        r.close()


def test_latest_on_a_closed_ring_gives_the_final_value_then_closed(backend):
    buf = _ring_in_memory(backend)
    w = backend.ring.Writer(buf)
    w.send(b"first")
    w.send(b"last")
    w.close()
    r = backend.ring.Reader(buf, 0)
    try:
        m = r.latest(timeout=1)
        assert (m.data, m.seq) == (b"last", 1) and r.stats.skipped == 1
        with pytest.raises(dc.Closed):
            r.latest(timeout=1)
    finally:
        r.close()


_FULL_SHM = """
import os, subprocess, sys
import datacomms as dc
from datacomms.transports import shm
shm.SHM_DIR = sys.argv[1]
subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "dcsmall", shm.SHM_DIR], check=True)
try:
    dc.Publisher("shm://toobig", backend=sys.argv[2], capacity=4 << 20)
except dc.DataCommsError as exc:
    print("refused:", exc)
print("left:", os.listdir(shm.SHM_DIR))
with dc.Publisher("shm://fits", backend=sys.argv[2], capacity=256 << 10) as pub:
    print("fits:", pub.send(b"x"))
"""


def test_a_segment_that_does_not_fit_is_refused_at_creation(backend, tmp_path):
    """A /dev/shm too small for the ring is a DataCommsError when the publisher is made,
    not a SIGBUS once the ring reaches the missing pages. Run in a private mount
    namespace, over a 1 MiB tmpfs."""
    import shutil
    import subprocess
    import sys
    if shutil.which("unshare") is None or subprocess.run(["unshare", "-m", "true"], capture_output=True).returncode:
        pytest.skip("needs unshare -m (util-linux, root) to mount a small tmpfs privately")
    out = subprocess.run(["unshare", "-m", sys.executable, "-c", _FULL_SHM, str(tmp_path), backend.name],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].startswith("refused: cannot create shm://toobig") and "do not fit" in lines[0], out.stdout
    assert lines[1:] == ["left: []", "fits: 0"], out.stdout
