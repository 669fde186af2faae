"""shm:// across real processes, on both backends: order, loss accounting,
latest(), payload kinds, subscribers coming and going, killed peers,
reclaim, and nothing left behind in /dev/shm."""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

import datacomms as dc
import datacomms.shm
import shm_children as kids
from conftest import AVAILABLE

CTX = mp.get_context("spawn")


def _start(target, *args):
    p = CTX.Process(target=target, args=args, daemon=True)
    p.start()
    return p


def _join(p, timeout=60.0):
    p.join(timeout)
    if p.is_alive():
        p.kill()
        p.join()
        pytest.fail(f"child {p.name} hung")
    assert p.exitcode == 0, f"child exited with {p.exitcode}"


def _drain(sub, timeout=30.0):
    out = []
    while True:
        try:
            out.append(sub.recv(timeout=timeout))
        except dc.Closed:
            return out


@pytest.mark.parametrize("pub_spin_us", [0.0, 200.0], ids=["sleeping-publisher", "spinning-publisher"])
def test_order_and_content_block_mode(backend_name, shm_name, pub_spin_us):
    """100k messages of varying size through a small ring in block mode: all of them, in order,
    whether a publisher that finds the ring full sleeps at once or busy-polls first."""
    url = f"shm://{shm_name}"
    n = 100_000
    with dc.Subscriber(url, backend=backend_name) as sub:
        p = _start(kids.publish_sequence, url, backend_name, n, "block", 1 << 16, 1, 0.0, pub_spin_us)
        seq = 0
        while True:
            try:
                m = sub.recv(timeout=30)
            except dc.Closed:
                break
            assert m.seq == seq
            assert m.data == kids.seq_payload(seq)
            seq += 1
        _join(p)
        assert seq == n
        assert sub.stats.received == n and sub.stats.lost == 0 and sub.stats.skipped == 0


@pytest.mark.slow
def test_order_one_million(backend_name, shm_name):
    """The issue's 1,000,000-message run in block mode."""
    url = f"shm://{shm_name}"
    n = 1_000_000
    with dc.Subscriber(url, backend=backend_name) as sub:
        p = _start(kids.publish_sequence, url, backend_name, n, "block", 1 << 20)
        seq = 0
        for m in sub:
            assert m.seq == seq and m.data == kids.seq_payload(seq)
            seq += 1
        _join(p, 600)
        assert seq == n and sub.stats.lost == 0


def test_exact_loss_count_drop_mode(backend_name, shm_name):
    """A slow reader of a small ring is lapped; every missing seq is counted, nothing else."""
    url = f"shm://{shm_name}"
    n = 20_000
    with dc.Subscriber(url, backend=backend_name) as sub:
        p = _start(kids.publish_sequence, url, backend_name, n, "drop", 1 << 14)
        seqs = []
        for m in sub:
            assert m.data == kids.seq_payload(m.seq)
            seqs.append(m.seq)
            if len(seqs) % 20 == 0:
                time.sleep(0.001)
        _join(p)
    assert seqs == sorted(set(seqs)), "a message came twice or out of order"
    assert seqs[-1] == n - 1, "the newest message is never overwritten and must arrive"
    assert sub.stats.lost > 0, "the reader was meant to be lapped"
    assert sub.stats.received == len(seqs)
    # it was attached before seq 0 (the publisher waits for it): every message it missed is counted
    assert sub.stats.lost == n - len(seqs)


@pytest.mark.parametrize("hz", [1000, 0], ids=["1kHz", "flat-out"])
def test_latest_never_torn(backend_name, shm_name, hz):
    """A reader hammering latest() never sees a half-written message, never one twice."""
    url = f"shm://{shm_name}"
    n = 1000 if hz else 5000
    with dc.Subscriber(url, backend=backend_name) as sub:
        p = _start(kids.publish_latest, url, backend_name, n, hz, 1 << 16)
        last = first = -1
        got = 0
        while True:
            try:
                m = sub.latest(timeout=30)
            except dc.Closed:
                break
            i = m.data["i"]
            assert m.seq == i > last
            assert np.all(m.data["arr"] == i) and m.data["tail"] == [i] * 20
            if first < 0:
                first = i
            last = i
            got += 1
        _join(p)
    assert last == n - 1
    st = sub.stats
    assert st.received == got
    assert st.received + st.skipped == n, "attached before seq 0: every message is received or skipped"
    assert st.lost == 0, "latest() passes over messages on purpose: skipped, not lost"


def test_latest_counts_skipped_exactly(backend, shm_name):
    url = f"shm://{shm_name}"
    with dc.Publisher(url, backend=backend) as pub, dc.Subscriber(url, backend=backend) as sub:
        pub.send(0)
        assert sub.recv(timeout=5).data == 0
        for i in range(1, 11):
            pub.send(i)
        m = sub.latest(timeout=5)
        assert m.data == 10 and sub.stats.skipped == 9 and sub.stats.lost == 0
        with pytest.raises(dc.Timeout):
            sub.latest(timeout=0)
        with pytest.raises(dc.Timeout):
            sub.recv(timeout=0.05)
        pub.send(11)
        assert sub.recv(timeout=5).data == 11


def test_mixed_payloads_including_8mib(backend_name, shm_name):
    url = f"shm://{shm_name}"
    expected = kids.mixed_payloads()
    with dc.Subscriber(url, backend=backend_name) as sub:
        p = _start(kids.publish_mixed, url, backend_name, 32 << 20)
        got = _drain(sub)
        _join(p)
    assert [m.seq for m in got] == list(range(len(expected)))
    for want, m in zip(expected, got):
        assert kids.same(want, m.data), (type(want), m)
    big = got[12].data
    assert big.nbytes == 8 << 20 and big.flags.writeable, "recv() copies: the array is the caller's"


def test_subscribers_join_and_leave(backend_name, shm_name):
    """Three subscribers join at different times, each reads 2000 in order with no loss
    (block mode), and leaves; the publisher never stalls on the ones that left."""
    url = f"shm://{shm_name}"
    q = CTX.Queue()
    with dc.Publisher(url, backend=backend_name, on_full="block", capacity=1 << 16) as pub:
        kids_ = [_start(kids.subscribe_window, url, backend_name, delay, 2000, q) for delay in (0.0, 0.3, 0.6)]
        results = []
        deadline = time.monotonic() + 90
        i = 0
        while len(results) < 3 and time.monotonic() < deadline:
            pub.send(kids.seq_payload(i), timeout=30)
            i += 1
            if i % 64 == 0:
                time.sleep(0.0005)
                while not q.empty():
                    results.append(q.get())
        for k in kids_:
            _join(k)
        assert len(results) == 3, results
        for first, last, contiguous, lost in results:
            assert contiguous and lost == 0 and last - first == 1999
        assert len({r[0] for r in results}) > 1, "the subscribers were meant to join at different points"
        assert pub.subscribers == 0
        for _ in range(5000):  # nobody listens: block mode must not wait
            pub.send(b"after", timeout=5)


def test_publisher_sigkill_gives_closed_and_is_reclaimed(backend_name, shm_name):
    url = f"shm://{shm_name}"
    ready = CTX.Event()
    p = _start(kids.publish_forever, url, backend_name, ready)
    assert ready.wait(30)
    with dc.Subscriber(url, backend=backend_name) as sub:
        sub.recv(timeout=30)
        os.kill(p.pid, signal.SIGKILL)
        p.join(10)
        t0 = time.monotonic()
        with pytest.raises(dc.Closed):
            while True:
                sub.recv(timeout=10)
        assert time.monotonic() - t0 < 5
    assert shm_name in dc.shm.stale()
    # the next publisher of the name takes the stale segment over
    with dc.Publisher(url, backend=backend_name) as pub, dc.Subscriber(url, backend=backend_name) as sub2:
        assert shm_name not in dc.shm.stale()
        assert pub.send(b"fresh") == 0
        assert sub2.recv(timeout=5).data == b"fresh"


def test_publisher_sigkill_with_a_forked_child_still_gives_closed(backend_name, shm_name):
    """A child forked by the publisher inherited the descriptors that hold the publisher
    lock, so after the publisher was killed its subscribers waited (Timeout, never Closed)
    and the next publisher was refused as long as the child lived."""
    url = f"shm://{shm_name}"
    q = CTX.Queue()
    p = _start(kids.publish_then_fork, url, backend_name, q)
    child = q.get(timeout=30)
    try:
        with dc.Subscriber(url, backend=backend_name) as sub:
            assert sub.latest(timeout=10).data == b"hello"
            os.kill(p.pid, signal.SIGKILL)
            # not p.join(): the child holds the end of p's sentinel pipe, so that waits it out
            end = time.monotonic() + 10
            while p.exitcode is None and time.monotonic() < end:
                time.sleep(0.01)
            with pytest.raises(dc.Closed):
                sub.recv(timeout=10)
        assert shm_name in dc.shm.stale()
        with dc.Publisher(url, backend=backend_name) as pub:
            assert pub.send(b"fresh") == 0
    finally:
        os.kill(child, signal.SIGKILL)


def test_a_forked_child_leaves_the_parents_segment_alone(backend_name, shm_name):
    """A forked child that closed its copies of the parent's Publisher and Subscriber (as
    leaving a with block, or its exit, does) marked the parent's ring closed, unlinked its
    name and freed the parent's subscriber slot. The copies are closed for the child now."""
    url = f"shm://{shm_name}"
    q = CTX.Queue()
    p = _start(kids.fork_child_closes, url, backend_name, q)
    child, exists, got, subscribers = q.get(timeout=60)
    _join(p)
    assert child == 2, "the child's send raises Closed, saying the publisher is the parent's"
    assert exists and got == [b"after", b"again"] and subscribers == 1


def test_a_loan_or_bound_call_kept_across_fork_is_closed_in_the_child(backend_name, shm_name):
    """A loan open at the fork, and send/recv bound before it, raise Closed in the child like
    the Publisher's and Subscriber's own calls: the child never publishes into the parent's
    ring, nor moves the parent's cursor."""
    url = f"shm://{shm_name}"
    q = CTX.Queue()
    p = _start(kids.fork_with_a_loan_open, url, backend_name, q)
    child, seqs, got = q.get(timeout=60)
    _join(p)
    assert child == 13, "the child could still commit, send or receive"
    assert seqs == [0, 1] and got == [(0, b"\x01" * 4), (1, b"parent")]


def test_waiting_for_the_next_publisher_does_not_map_a_stale_segment(backend_name, shm_name, monkeypatch):
    """A subscriber waiting for a publisher over a dead one's segment mapped it (with all its
    pages faulted in) at every 5 ms poll, only to find nobody held the lock: most of a core
    for a 32 MiB ring, all of it for 256 MiB. It asks the lock before mapping now."""
    from datacomms.transports import shm
    url = f"shm://{shm_name}"
    ready = CTX.Event()
    p = _start(kids.publish_forever, url, backend_name, ready)
    assert ready.wait(30)
    os.kill(p.pid, signal.SIGKILL)
    p.join(10)
    maps = []
    real_map = shm._map
    monkeypatch.setattr(shm, "_map", lambda *a: maps.append(a) or real_map(*a))
    with dc.Subscriber(url, backend=backend_name) as sub:
        with pytest.raises(dc.Timeout):
            sub.recv(timeout=0.3)
        assert not sub.attached and maps == []
        with dc.Publisher(url, backend=backend_name) as pub:   # reclaims; the waiting subscriber attaches
            pub.send(b"next")
            assert sub.recv(timeout=10).data == b"next"


def test_clean_removes_stale(backend_name, shm_name):
    url = f"shm://{shm_name}"
    ready = CTX.Event()
    p = _start(kids.publish_forever, url, backend_name, ready)
    assert ready.wait(30)
    assert shm_name not in dc.shm.stale()
    os.kill(p.pid, signal.SIGKILL)
    p.join(10)
    assert shm_name in dc.shm.stale()
    assert shm_name in dc.shm.clean()
    assert shm_name not in dc.shm.stale()
    assert not os.path.exists(f"/dev/shm/dc-{shm_name}")


def test_clean_and_publishers_leave_other_programs_files_alone(backend_name, shm_name):
    """/dev/shm is every program's. stale() listed, and clean() (so `datacomms clean`)
    deleted, any file starting with "dc-" that nobody locked: a text file, a zero-filled
    one, a FIFO; a Publisher of that name replaced it. Only datacomms segments are taken now."""
    paths = {"text": f"/dev/shm/dc-{shm_name}", "zeros": f"/dev/shm/dc-{shm_name}z",
             "fifo": f"/dev/shm/dc-{shm_name}f"}
    try:
        with open(paths["text"], "w") as f:
            f.write("another program's state\n")
        with open(paths["zeros"], "wb") as f:
            f.write(bytes(8192))
        os.mkfifo(paths["fifo"])
        names = {shm_name, shm_name + "z", shm_name + "f"}
        assert not names & set(dc.shm.stale())
        assert not names & set(dc.shm.clean())
        with pytest.raises(dc.DataCommsError, match="is not a datacomms shm segment"):
            dc.Publisher(f"shm://{shm_name}", backend=backend_name)
        assert all(os.path.lexists(p) for p in paths.values())
        with open(paths["text"]) as f:
            assert f.read() == "another program's state\n"
    finally:
        for p in paths.values():
            if os.path.lexists(p):
                os.unlink(p)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root, to be another user in a child")
def test_another_users_segment_is_a_clear_permission_error(backend_name, shm_name):
    """A segment is open to its owner only (0600); another user's Publisher or
    Subscriber of the name got a bare "[Errno 13] Permission denied: PATH"."""
    url = f"shm://{shm_name}"
    q = CTX.Queue()
    with dc.Publisher(url, backend=backend_name, capacity=1 << 16):
        p = _start(kids.open_as, url, backend_name, 65534, q)
        said = q.get(timeout=60)
        _join(p)
    assert len(said) == 2
    for line in said:
        assert line.startswith("PermissionError") and f"shm://{shm_name} belongs to uid {os.getuid()}" in line, said


def test_killed_subscriber_does_not_stall_block_mode(backend_name, shm_name):
    url = f"shm://{shm_name}"
    ready = CTX.Event()
    with dc.Publisher(url, backend=backend_name, on_full="block", capacity=1 << 14) as pub:
        p = _start(kids.subscribe_then_hang, url, backend_name, ready)
        pub.wait_for_subscribers(1, timeout=30)
        pub.send(b"first")
        assert ready.wait(30)
        # the live subscriber does not read: block mode fills the ring and then waits
        with pytest.raises(dc.Timeout):
            for _ in range(1000):
                pub.send(b"x" * 200, timeout=0.2)
        os.kill(p.pid, signal.SIGKILL)
        p.join(10)
        for _ in range(2000):  # several rings' worth: the dead cursor is reaped
            pub.send(b"x" * 200, timeout=10)
        assert pub.subscribers == 0


def test_second_live_publisher_is_refused(backend_name, shm_name):
    url = f"shm://{shm_name}"
    with dc.Publisher(url, backend=backend_name) as pub:
        with pytest.raises(dc.DataCommsError, match="live publisher"):
            dc.Publisher(url, backend=backend_name)
        code = (f"import datacomms as dc\ntry:\n    dc.Publisher({url!r}, backend={backend_name!r})\n"
                "except dc.DataCommsError as e:\n    print('refused', e)\n")
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
        assert out.stdout.startswith("refused") and str(os.getpid()) in out.stdout, out
        assert pub.send(b"still mine") == 0


def test_a_publisher_losing_a_takeover_race_names_the_winner(backend_name, shm_name, monkeypatch):
    """Two new publishers over a dead one's segment: the one that finds the dead
    segment's lock held by the other (taking the segment over) said the name
    had a live publisher and named the dead pid. It waits for the takeover now,
    and the loser names the winner. Here this process plays the winner."""
    import threading
    from datacomms.backend import _segment as S
    from datacomms.transports import shm
    monkeypatch.setattr(shm, "_TAKEOVER_WAIT_S", 60.0)   # the winner here is as slow as the machine
    url = f"shm://{shm_name}"
    path = f"/dev/shm/dc-{shm_name}"
    ready = CTX.Event()
    p = _start(kids.publish_forever, url, backend_name, ready)
    assert ready.wait(30)
    dead = p.pid
    os.kill(dead, signal.SIGKILL)
    p.join(10)
    fd = os.open(path, os.O_RDWR)
    assert S.try_lock(fd, 0)      # the winner's first step: the dead segment's lock
    results: list = []

    def other():
        try:
            results.append(dc.Publisher(url, backend=backend_name))
        except dc.DataCommsError as exc:
            results.append(exc)

    t = threading.Thread(target=other)
    t.start()
    try:
        t.join(1.0)               # the old code answered at once, naming the dead pid
        if results:
            assert f"pid {dead}" not in str(results[0]), results[0]
    finally:
        os.unlink(path)           # the winner's next steps: the dead segment out, its own in
        os.close(fd)
    try:
        mine = dc.Publisher(url, backend=backend_name)
    except dc.DataCommsError as exc:
        mine = exc
    t.join(30)
    assert not t.is_alive()
    outcome = [mine, *results]
    won = [o for o in outcome if not isinstance(o, Exception)]
    lost = [str(o) for o in outcome if isinstance(o, Exception)]
    for pub in won:
        pub.close()
    assert len(won) == 1 and len(lost) == 1
    assert f"live publisher (pid {os.getpid()})" in lost[0] and str(dead) not in lost[0]


def test_clean_close_leaves_nothing(backend, shm_name):
    url = f"shm://{shm_name}"
    pub = dc.Publisher(url, backend=backend)
    sub = dc.Subscriber(url, backend=backend)
    assert os.path.exists(f"/dev/shm/dc-{shm_name}")
    pub.send(b"a")
    pub.send(b"b")
    pub.close()
    assert not os.path.exists(f"/dev/shm/dc-{shm_name}")
    assert [m.data for m in sub] == [b"a", b"b"], "what was sent before close still arrives"
    with pytest.raises(dc.Closed):
        sub.recv(timeout=1)
    sub.close()
    sub.close()
    pub.close()
    with pytest.raises(dc.Closed):
        pub.send(b"late")


@pytest.mark.parametrize("pub_be,sub_be", [(a, b) for a in AVAILABLE for b in AVAILABLE if a != b] or
                         [pytest.param("cython", "python", marks=pytest.mark.skip(reason="one backend built"))])
def test_cross_backend_interop(pub_be, sub_be, shm_name):
    """A publisher of one backend and a subscriber of the other share a segment, across processes."""
    url = f"shm://{shm_name}"
    expected = kids.mixed_payloads()
    with dc.Subscriber(url, backend=sub_be) as sub:
        p = _start(kids.publish_mixed, url, pub_be, 32 << 20)
        got = _drain(sub)
        _join(p)
    assert len(got) == len(expected)
    assert all(kids.same(w, m.data) for w, m in zip(expected, got))
    q = CTX.Queue()
    c = _start(kids.subscribe_collect, url, sub_be, q)
    with dc.Publisher(url, backend=pub_be, capacity=1 << 14) as pub:  # drop mode: laps across backends
        pub.wait_for_subscribers(1, timeout=30)
        for i in range(20_000):
            pub.send(kids.seq_payload(i))
    seqs, ok, lost = q.get(timeout=60)
    _join(c)
    assert ok and seqs == sorted(set(seqs)) and seqs[-1] == 19_999
    assert lost == 20_000 - len(seqs)


@pytest.mark.parametrize("name", ["", "a/b", "x" * 31, ".hidden", "bad\nname"])
def test_bad_names(backend, name):
    with pytest.raises(dc.DataCommsError, match="bad shm name|bad URL"):
        dc.Publisher(f"shm://{name}" if name else "shm://", backend=backend)


def test_longest_name_works(backend):
    name = "t" + os.urandom(8).hex() + "z" * 13
    assert len(name) == 30
    with dc.Publisher(f"shm://{name}", backend=backend) as pub, dc.Subscriber(f"shm://{name}", backend=backend) as s:
        pub.send(1)
        assert s.recv(timeout=5).data == 1
    assert not os.path.exists(f"/dev/shm/dc-{name}")


def test_frame_larger_than_ring(backend, shm_name):
    with dc.Publisher(f"shm://{shm_name}", backend=backend, capacity=1 << 16) as pub:
        with pytest.raises(dc.FrameError, match="larger capacity"):
            pub.send(b"x" * (1 << 16))
        assert pub.send(b"fits") == 0


def test_late_joiner_latest_and_early_subscriber(backend, shm_name):
    url = f"shm://{shm_name}"
    early = dc.Subscriber(url, backend=backend)  # before any publisher: attaches on first use
    assert not early.attached
    with pytest.raises(dc.Timeout):
        early.recv(timeout=0.05)
    with dc.Publisher(url, backend=backend) as pub:
        pub.send({"v": 1})
        pub.send({"v": 2})
        with dc.Subscriber(url, backend=backend) as late:
            assert late.latest(timeout=0).data == {"v": 2}, "a late joiner is never blind"
            with pytest.raises(dc.Timeout):
                late.recv(timeout=0)
        pub.send({"v": 3})
        # it was waiting before the publisher existed: everything still in the ring is news to it
        assert [early.recv(timeout=5).data["v"] for _ in range(3)] == [1, 2, 3]
    early.close()
    assert isinstance(early.stats, dc.Stats)


def test_an_early_subscriber_is_counted_before_its_first_recv(backend_name, shm_name):
    """A subscriber made before its publisher attaches as soon as the publisher is
    there: the publisher process's wait_for_subscribers counts it although it never
    called recv. It attached on its first recv only, so that wait timed out."""
    url = f"shm://{shm_name}"
    with dc.Subscriber(url, backend=backend_name) as early:
        p = _start(kids.publish_sequence, url, backend_name, 3, "block", 1 << 16)
        _join(p)   # its wait_for_subscribers(1) returned, and it sent 3 and closed
        assert [early.recv(timeout=5).data for _ in range(3)] == [kids.seq_payload(i) for i in range(3)]
        with pytest.raises(dc.Closed):
            early.recv(timeout=5)


def test_closing_an_early_subscriber_leaves_the_publisher_alone(backend, shm_name):
    """An early subscriber closed before its publisher came is never attached
    afterwards (it would hold a slot nobody reads)."""
    url = f"shm://{shm_name}"
    early = dc.Subscriber(url, backend=backend)
    early.close()
    with dc.Publisher(url, backend=backend) as pub:
        time.sleep(0.05)   # ten attach polls
        assert pub.subscribers == 0 and not early.attached
        with pytest.raises(dc.Closed):
            early.recv(timeout=0)


def test_early_subscriber_starts_at_the_oldest_record_of_a_wrapped_ring(backend, shm_name):
    """A subscriber made before its publisher started at the first message still in the
    ring only while the ring had not wrapped; once it had, it joined at TAIL: it skipped
    everything already sent, including what was still in the ring, and counted none of it
    as lost. It starts at the oldest record now and counts the overwritten ones as lost."""
    url = f"shm://{shm_name}"
    early = dc.Subscriber(url, backend=backend)
    try:
        with dc.Publisher(url, backend=backend, capacity=1 << 12) as pub:
            n = 1000
            for i in range(n):
                pub.send(i.to_bytes(4, "little") * 10)
            first = early.recv(timeout=5)
            assert 0 < first.seq < n - 1, "the oldest record still in the wrapped ring"
            assert first.data == first.seq.to_bytes(4, "little") * 10
            assert early.stats.lost == first.seq, "everything before it was sent after the subscriber existed"
            rest = [early.recv(timeout=5).seq for _ in range(n - 1 - first.seq)]
            assert rest == list(range(first.seq + 1, n)) and early.stats.lost == first.seq
    finally:
        early.close()


def test_ctrl_c_interrupts_a_wait(backend_name, shm_name):
    url = f"shm://{shm_name}"
    with dc.Publisher(url, backend=backend_name):
        code = f"import shm_children as k; k.wait_forever({url!r}, {backend_name!r})"
        env = dict(os.environ, PYTHONPATH=os.path.dirname(kids.__file__))
        child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, env=env, text=True)
        assert child.stdout.readline().strip() == "waiting"
        time.sleep(0.3)
        child.send_signal(signal.SIGINT)
        assert child.wait(timeout=10) == 3
        child.stdout.close()
