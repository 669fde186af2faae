"""udp:// on 127.0.0.1 (and a multicast group looped back), on both backends."""

from __future__ import annotations

import json
import logging
import os
import socket
import time

import numpy as np
import pytest

import datacomms as dc
from netutil import Peer, drain



def test_round_trip_and_dispatch(backend):
    with dc.Subscriber("udp://127.0.0.1:0", backend=backend) as sub, \
            dc.Publisher(sub.url, backend=backend) as pub:
        assert type(pub).__name__ == "UdpPublisher" and type(sub).__name__ == "UdpSubscriber"
        arr = np.arange(1000, dtype=np.float64)
        pub.send(arr)
        pub.send({"joint_1": 0.5, "a": np.arange(3)})
        pub.send(b"raw")
        m = sub.recv(timeout=5)
        np.testing.assert_array_equal(m.data, arr)
        assert m.seq == 0
        m2 = sub.recv(timeout=5)
        assert m2.data["joint_1"] == 0.5 and list(m2.data["a"]) == [0, 1, 2]
        assert bytes(sub.recv(timeout=5).data) == b"raw"
        np.testing.assert_array_equal(m.data, arr)   # the first view was not overwritten
        with pytest.raises(dc.Timeout):
            sub.recv(timeout=0.05)


def _has_ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


@pytest.mark.skipif(not _has_ipv6_loopback(), reason="no IPv6 loopback (::1) on this host")
def test_ipv6_round_trip_and_loss_count(backend):
    with dc.Subscriber("udp://[::1]:0", backend=backend) as sub, \
            dc.Publisher(sub.url, backend=backend) as pub:
        assert sub.url.startswith("udp://[::1]:") and pub.url == sub.url
        pub.send({"i": 0})
        assert sub.recv(timeout=5).data == {"i": 0}
        pub._seq += 2            # two datagrams "lost" on the way
        pub.send(b"three")
        m = sub.recv(timeout=5)
        assert m.seq == 3 and bytes(m.data) == b"three" and sub.stats.lost == 2
        assert pub.wait_for_subscribers(1, timeout=5) == 1   # the answers come back over IPv6 too


def test_port_in_use_names_the_address(backend):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        with pytest.raises(OSError, match=f"127.0.0.1:{port} is already in use"):
            dc.Subscriber(f"udp://127.0.0.1:{port}", backend=backend)


def test_ipv6_multicast_is_refused_clearly(backend):
    with pytest.raises(dc.DataCommsError, match="IPv6 multicast"):
        dc.Subscriber("udp://[ff02::1]:9000", backend=backend)


def test_oversized_message_is_a_clear_frame_error(backend):
    with dc.Subscriber("udp://127.0.0.1:0", backend=backend) as sub, \
            dc.Publisher(sub.url, backend=backend) as pub:
        with pytest.raises(dc.FrameError, match="does not fit in one UDP datagram"):
            pub.send(np.zeros(70_000, np.uint8))
        assert pub.send(b"small") == 0      # the refused message used no seq
        assert sub.recv(timeout=5).seq == 0


def test_loss_is_counted_exactly(backend):
    """A subscriber with a tiny socket buffer that is not reading loses most of
    a burst; received + lost equals what was sent, tail loss included (the
    publisher's heartbeat carries its next seq)."""
    with dc.Subscriber("udp://127.0.0.1:0", backend=backend, recv_buffer=4096) as sub, \
            dc.Publisher(sub.url, backend=backend, heartbeat=0.1) as pub:
        n = 3000
        for i in range(n):
            pub.send(b"x" * 512)
        got = drain(sub, 0.6)
        seqs = [m.seq for m in got]
        assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
        assert sub.stats.lost > 0
        assert len(got) + sub.stats.lost == n
        assert sub.stats.received == len(got)


def test_latest_for_telemetry(backend):
    with dc.Subscriber("udp://127.0.0.1:0", backend=backend) as sub, \
            dc.Publisher(sub.url, backend=backend) as pub:
        for i in range(50):
            pub.send({"i": i})
        m = sub.latest(timeout=5)
        while True:    # datagrams may still be arriving; latest() never goes backwards
            try:
                nxt = sub.latest(timeout=0.2)
            except dc.Timeout:
                break
            assert nxt.seq > m.seq
            m = nxt
        assert m.data == {"i": 49}
        assert sub.stats.skipped + sub.stats.received == 50 and sub.stats.lost == 0


def test_garbage_datagrams_dropped_and_counted(backend, caplog):
    caplog.set_level(logging.WARNING, logger="datacomms")
    with dc.Subscriber("udp://127.0.0.1:0", backend=backend) as sub, \
            dc.Publisher(sub.url, backend=backend) as pub, \
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as raw:
        raw.sendto(b"GET / HTTP/1.1\r\n\r\n", sub.address)
        raw.sendto(os.urandom(300), sub.address)
        raw.sendto(backend.framing.pack_header(0, 0, 5, 0, 0, 1, 1 << 40), sub.address)
        pub.send(b"good")
        assert bytes(sub.recv(timeout=5).data) == b"good"
        assert sub.rejected == 3
        assert "dropped a datagram" in caplog.text


def test_hostile_seq_and_heartbeat_do_not_break_recv(backend):
    """A datagram whose seq jumps to 2**64 - 1, or a heartbeat announcing that as the
    next seq, is counted as (absurd) loss: recv never raises OverflowError for it."""
    f = backend.framing
    with dc.Subscriber("udp://127.0.0.1:0", backend=backend) as sub, \
            dc.Publisher(sub.url, backend=backend) as pub, \
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as a, \
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as b:
        a.sendto(f.encode_bytes(b"a0", 0, 1), sub.address)
        assert bytes(sub.recv(timeout=5).data) == b"a0"
        a.sendto(f.encode_bytes(b"wild", 2 ** 64 - 1, 2), sub.address)
        m = sub.recv(timeout=5)
        assert (bytes(m.data), m.seq) == (b"wild", 2 ** 64 - 1) and sub.stats.lost >= 2 ** 63 - 1
        b.sendto(f.encode_bytes(b"b0", 0, 1), sub.address)
        assert bytes(sub.recv(timeout=5).data) == b"b0"
        hb = f.encode({"dc": "hb", "next_seq": 2 ** 64 - 1}, 0, 3, f.FLAG_CONTROL)[0]
        b.sendto(b"".join(bytes(p) for p in hb), sub.address)
        with pytest.raises(dc.Timeout):
            sub.recv(timeout=0.3)
        pub.send(b"still fine")
        assert bytes(sub.recv(timeout=5).data) == b"still fine"


def test_wait_for_subscribers_and_restart(backend):
    """Subscribers answer heartbeats; a new publisher (new source) is not loss."""
    with dc.Subscriber("udp://127.0.0.1:0", backend=backend) as sub:
        with dc.Publisher(sub.url, backend=backend, heartbeat=0.05) as pub:
            with pytest.raises(dc.Timeout):
                sub.recv(timeout=0.3)      # answers the heartbeats meanwhile
            assert pub.wait_for_subscribers(1, timeout=5) == 1
            for i in range(10):
                pub.send(i)
            assert [m.data for m in drain(sub, 0.3)] == list(range(10))
        with dc.Publisher(sub.url, backend=backend) as pub2:
            for i in range(5):
                pub2.send(i)
            assert [m.seq for m in drain(sub, 0.3)] == list(range(5))
        assert sub.stats.lost == 0 and sub.stats.received == 15


def test_multicast_on_loopback(backend):
    group = "239.255.77.%d" % (os.getpid() % 250 + 1)
    try:
        sub = dc.Subscriber(f"udp://{group}:0", interface="127.0.0.1", backend=backend)
    except OSError as exc:
        pytest.skip(f"multicast not available here: {exc}")
    with sub, dc.Publisher(f"udp://{group}:{sub.address[1]}", interface="127.0.0.1", backend=backend) as pub:
        for i in range(20):
            pub.send({"i": i})
        got = drain(sub, 0.5)
        if not got:
            pytest.skip("multicast is not looped back on this host")
        assert [m.data["i"] for m in got] == list(range(20))


_MULTICAST_CHILD = """
import sys, datacomms as dc
sub = dc.Subscriber(sys.argv[1], interface="127.0.0.1", backend=sys.argv[2])
print("READY", flush=True)
while True:   # answers heartbeats while it waits; killed by the test
    try:
        sub.recv(timeout=0.2)
    except dc.Timeout:
        pass
"""


def test_multicast_subscribers_on_one_host_are_counted_apart(backend):
    """Every subscriber of a group binds the group's port, so all of one host's
    answers came from one address: the publisher counted them as one, and
    wait_for_subscribers(2) never returned with two subscriber processes listening."""
    import subprocess
    import sys
    import threading
    group = "239.255.78.%d" % (os.getpid() % 250 + 1)
    try:
        sub = dc.Subscriber(f"udp://{group}:0", interface="127.0.0.1", backend=backend)
    except OSError as exc:
        pytest.skip(f"multicast not available here: {exc}")
    url = f"udp://{group}:{sub.address[1]}"
    child = subprocess.Popen([sys.executable, "-c", _MULTICAST_CHILD, url, backend.name],
                             stdout=subprocess.PIPE, text=True)
    stop = threading.Event()

    def listen():
        while not stop.is_set():
            try:
                sub.recv(timeout=0.2)
            except dc.Timeout:
                pass

    t = threading.Thread(target=listen)
    try:
        import select
        assert select.select([child.stdout], [], [], 30)[0], "the subscriber process said nothing in 30 s"
        assert child.stdout.readline().strip() == "READY"
        t.start()
        with dc.Publisher(url, interface="127.0.0.1", heartbeat=0.05, backend=backend) as pub:
            try:
                pub.wait_for_subscribers(1, timeout=5)
            except dc.Timeout:
                pytest.skip("multicast is not looped back on this host")
            assert pub.wait_for_subscribers(2, timeout=10) == 2
    finally:
        stop.set()
        if t.is_alive():
            t.join()
        child.kill()
        child.wait()
        child.stdout.close()
        sub.close()


def test_a_group_that_cannot_be_joined_is_a_clear_error(backend):
    """Joining a group on an interface that is not there (or, without interface=,
    where no route leads to the group) was a bare "[Errno 19] No such device"."""
    import gc
    import warnings
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(OSError, match=r"cannot join multicast group 239\.255\.79\.1 .* on 192\.0\.2\.1"):
            dc.Subscriber("udp://239.255.79.1:0", interface="192.0.2.1", backend=backend)
        gc.collect()
    assert not [w for w in caught if issubclass(w.category, ResourceWarning)]


def test_a_publisher_with_no_route_says_so_once(backend):
    """A publisher whose datagrams cannot leave (no route to the destination)
    dropped every one with nothing above a debug log; the first failure of each
    kind is a warning now, and pub.dropped counts them all. It runs in a network
    namespace with only loopback up, where nothing else routes."""
    import shutil
    import subprocess
    import sys
    if shutil.which("ip") is None:
        pytest.skip("the ip command (iproute2) is not installed")
    ns = f"dcudp{os.getpid() % 100000}"
    made = subprocess.run(["ip", "netns", "add", ns], capture_output=True, text=True)
    if made.returncode:
        pytest.skip(f"network namespaces are not permitted here: {made.stderr.strip()}")
    code = ("import sys, datacomms as dc\n"
            "with dc.Publisher('udp://10.213.9.9:9', backend=sys.argv[1]) as pub:\n"
            "    for i in range(5):\n"
            "        pub.send(i)\n"
            "    print(pub.dropped)\n")
    try:
        subprocess.run(["ip", "-n", ns, "link", "set", "lo", "up"], check=True, capture_output=True)
        out = subprocess.run(["ip", "netns", "exec", ns, sys.executable, "-c", code, backend.name],
                             capture_output=True, text=True, timeout=60)
    finally:
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)
    if out.returncode and "datacomms" not in out.stderr:
        pytest.skip(f"cannot run a process in a network namespace here: {out.stderr.strip()}")
    assert out.returncode == 0, out.stderr
    assert int(out.stdout) >= 5    # the five messages, and the first heartbeat
    assert out.stderr.count("send to 10.213.9.9:9 failed: Network is unreachable") == 1, out.stderr


def test_cross_process(backend):
    with dc.Subscriber("udp://127.0.0.1:0", backend=backend) as sub:
        peer = Peer("pub", sub.url, "--backend", backend.name, "--count", "2000", "--rate", "5000", "--kind", "dict")
        try:
            peer.ready()
            got = []
            while not got or got[-1].seq < 1999:
                got.append(sub.recv(timeout=10))
            seqs = [m.seq for m in got]
            assert seqs == sorted(seqs)
            assert len(got) + sub.stats.lost == 2000
            assert all(m.data["i"] == m.seq for m in got)
        finally:
            peer.close()
    json.dumps(sub.stats.as_dict())


@pytest.mark.parametrize("timeout", [None, 30.0])
def test_close_from_another_thread_wakes_a_waiting_recv(backend, timeout):
    """close() only closed the socket, which does not wake a poll() on it in
    another thread: a recv(timeout=None) waiting there hung for ever, one with a
    timeout waited all of it before it raised dc.Closed."""
    import threading
    import time
    sub = dc.Subscriber("udp://127.0.0.1:0", backend=backend)
    outcome: list = []

    def wait() -> None:
        try:
            sub.recv(timeout=timeout)
        except dc.Closed:
            outcome.append("closed")

    t = threading.Thread(target=wait, daemon=True)
    t.start()
    time.sleep(0.3)   # most likely asleep in poll by now (either way it must end)
    sub.close()
    t.join(10)
    assert not t.is_alive(), "recv still waiting 10 s after close()"
    assert outcome == ["closed"]
    with pytest.raises(dc.Closed):
        sub.recv(timeout=0)


def test_max_frame_size_is_enforced(backend, caplog):
    """The subscriber took max_frame_size= and silently ignored it: a 5,000-byte
    frame reached a subscriber that asked for at most 1,000."""
    caplog.set_level(logging.WARNING, logger="datacomms")
    with dc.Subscriber("udp://127.0.0.1:0", max_frame_size=1000, backend=backend) as sub, \
            dc.Publisher(sub.url, backend=backend) as pub:
        pub.send(b"x" * 5000)
        pub.send(b"small")
        m = sub.recv(timeout=5)
        assert (bytes(m.data), m.seq) == (b"small", 1)
        assert sub.rejected == 1
        assert "exceeds max_frame_size 1000" in caplog.text


def test_a_host_name_is_resolved_once_and_a_bad_one_is_an_error(backend):
    """The publisher sent every datagram to the name (looked up again for each),
    chose where its answer socket listens from the spelling (udp://localhost
    listened on every interface), and a name that never resolves dropped every
    message without a word."""
    if not socket.gethostbyname("localhost").startswith("127."):
        pytest.skip("localhost is not a loopback address here")
    with dc.Subscriber("udp://127.0.0.1:0", backend=backend) as sub, \
            dc.Publisher(f"udp://localhost:{sub.address[1]}", backend=backend) as pub:
        assert pub._sock.getsockname()[0] == "127.0.0.1"   # loopback only, as for udp://127.0.0.1
        pub.send(b"by name")
        assert bytes(sub.recv(timeout=5).data) == b"by name"
    with pytest.raises(OSError, match="cannot resolve 'no-such-host.invalid'"):
        dc.Publisher("udp://no-such-host.invalid:9000", backend=backend)


@pytest.mark.parametrize("kw", [{"heartbeat": 0}, {"dead_after": 0}])
def test_liveness_periods_must_be_positive(backend, kw):
    """heartbeat=0 made the publisher's thread send heartbeats without pause (a
    core busy and a flood of datagrams)."""
    with pytest.raises(ValueError, match="must be a positive number of seconds"):
        dc.Publisher("udp://127.0.0.1:9", backend=backend, **kw)


def test_what_a_subscriber_keeps_per_sender_is_bounded(backend):
    """The seq and epoch kept per sender address were never forgotten (the source
    strings were already capped): datagrams from ever new addresses, spoofed or
    from publishers restarted on new ports, grew the subscriber without bound
    (8,469 senders kept after 10,000 one-datagram senders)."""
    from datacomms.transports.udp import _MAX_SOURCES
    f = backend.framing
    hb = b"".join(bytes(p) for p in f.encode({"dc": "hb", "epoch": "e", "next_seq": 1}, 0, 1, f.FLAG_CONTROL)[0])
    with dc.Subscriber("udp://127.0.0.1:0", backend=backend) as sub:
        for _ in range(12):
            for _ in range(500):
                with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                    s.sendto(hb, sub.address)
                    s.sendto(f.encode_bytes(b"x", 0, 1), sub.address)
            drain(sub, 0.05)
            assert len(sub._last) <= _MAX_SOURCES and len(sub._epoch) <= _MAX_SOURCES
        assert len(sub._last) == _MAX_SOURCES    # it did see more senders than it keeps
        with dc.Publisher(sub.url, backend=backend) as pub:   # and still follows a real one
            for i in range(3):
                pub.send(i)
            assert [m.data for m in drain(sub, 0.5)][-3:] == [0, 1, 2]


def test_a_refused_publisher_leaves_no_socket_open(backend):
    """A publisher whose socket options or bind failed (here a multicast interface
    that is not an address) raised and left its socket open for the garbage
    collector (a ResourceWarning)."""
    import gc
    import warnings
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(OSError):
            dc.Publisher("udp://239.255.77.1:9000", interface="not-an-address", backend=backend)
        gc.collect()
    assert not [w for w in caught if issubclass(w.category, ResourceWarning)]


def test_a_datagram_with_more_than_one_frame_is_rejected(backend):
    """A datagram is one frame. One that held a frame and then more (a second
    frame, junk) had its first frame delivered and the rest dropped without a
    word (the second frame's seq then counted lost, as if the network lost it)."""
    f = backend.framing
    with dc.Subscriber("udp://127.0.0.1:0", backend=backend) as sub, \
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.sendto(f.encode_bytes(b"one", 0, 1) + f.encode_bytes(b"two", 1, 1), sub.address)
        s.sendto(f.encode_bytes(b"three", 2, 1) + b"junk", sub.address)
        s.sendto(f.encode_bytes(b"four", 3, 1), sub.address)
        m = sub.recv(timeout=5)
        assert (m.seq, bytes(m.data)) == (3, b"four")
        assert sub.rejected == 2


def test_the_publisher_forgets_subscribers_that_stopped_answering(backend):
    """The publisher kept the address of every subscriber that ever answered a
    heartbeat; a subscriber restarted comes from a new port, so a long-lived
    publisher grew by one entry per subscriber restart, for ever."""
    import time
    f = backend.framing
    answer = b"".join(bytes(p) for p in f.encode({"dc": "sub"}, 0, 1, f.FLAG_CONTROL)[0])
    with dc.Publisher("udp://127.0.0.1:9", backend=backend, heartbeat=0.05, dead_after=1.0) as pub:
        for _ in range(200):   # 200 short-lived subscribers, each from its own port
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                s.sendto(answer, pub._sock.getsockname())
        heard = 0
        deadline = time.monotonic() + 10
        while heard < 150 and time.monotonic() < deadline:
            heard = max(heard, len(pub._seen))
            time.sleep(0.01)
        assert heard >= 150          # they were heard
        deadline = time.monotonic() + 10
        while pub._seen and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not pub._seen and pub.subscribers == 0


def _hb(f, epoch, next_seq):
    return b"".join(bytes(p) for p in f.encode({"dc": "hb", "epoch": epoch, "next_seq": next_seq}, 0,
                                               time.time_ns(), f.FLAG_CONTROL)[0])


def _sender(port=0):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", port))
    return s


@pytest.mark.parametrize("heartbeats", [False, True])
def test_a_new_sender_on_an_earlier_ones_address_is_delivered_at_once(backend, heartbeats):
    """A publisher restarted on the source address of an earlier one (ephemeral
    ports are reused) starts its seq again: its datagrams were dropped as late
    until its heartbeat came. Here its heartbeat comes after its data (or never)."""
    f = backend.framing
    with dc.Subscriber("udp://127.0.0.1:0", backend=backend) as sub:
        with _sender() as old:
            port = old.getsockname()[1]
            if heartbeats:
                old.sendto(_hb(f, "first", 0), sub.address)
            for i in range(10):
                old.sendto(f.encode_bytes(b"old", i, time.time_ns()), sub.address)
            assert [m.seq for m in drain(sub, 0.3)] == list(range(10))
        with _sender(port) as new:
            for i in range(3):
                new.sendto(f.encode_bytes(b"new", i, time.time_ns()), sub.address)
            if heartbeats:
                new.sendto(_hb(f, "second", 3), sub.address)
            new.sendto(f.encode_bytes(b"new", 3, time.time_ns()), sub.address)
            got = drain(sub, 0.3)
        assert [(m.seq, bytes(m.data)) for m in got] == [(i, b"new") for i in range(4)]
        assert sub.stats.restarts == 1 and sub.stats.lost == 0


@pytest.mark.parametrize("told_by", ["data", "heartbeat"])
def test_a_restarted_senders_messages_before_its_first_arrival_are_lost(backend, told_by):
    """A restart's first datagram to arrive is seq 2: its seq 0 and 1 were sent and
    lost, and count so (as on tcp://). They were not counted: the new sender's
    stream was counted from its first arrival, like a late joiner's."""
    f = backend.framing
    with dc.Subscriber("udp://127.0.0.1:0", backend=backend) as sub:
        with _sender() as old:
            port = old.getsockname()[1]
            old.sendto(_hb(f, "first", 0), sub.address)
            for i in range(5):
                old.sendto(f.encode_bytes(b"old", i, time.time_ns()), sub.address)
            assert [m.seq for m in drain(sub, 0.3)] == list(range(5))
        with _sender(port) as new:
            if told_by == "heartbeat":
                new.sendto(_hb(f, "second", 2), sub.address)
            for i in (2, 3):
                new.sendto(f.encode_bytes(b"new", i, time.time_ns()), sub.address)
            assert [(m.seq, bytes(m.data)) for m in drain(sub, 0.3)] == [(2, b"new"), (3, b"new")]
        assert sub.stats.restarts == 1 and sub.stats.lost == 2


def test_a_late_joiner_counts_nothing_lost_before_its_first_message(backend):
    """What a sender sent before a subscriber first heard from it is not loss."""
    f = backend.framing
    with dc.Subscriber("udp://127.0.0.1:0", backend=backend) as sub, _sender() as s:
        s.sendto(_hb(f, "e", 7), sub.address)
        s.sendto(f.encode_bytes(b"x", 7, time.time_ns()), sub.address)
        s.sendto(f.encode_bytes(b"x", 8, time.time_ns()), sub.address)
        assert [m.seq for m in drain(sub, 0.3)] == [7, 8]
        assert sub.stats.lost == 0 and sub.stats.restarts == 0


def test_late_and_duplicated_datagrams_are_still_dropped(backend):
    """Telling a restart by its newer timestamp leaves late datagrams (older than
    what was seen, or than the heartbeat that counted them lost) dropped."""
    f = backend.framing
    with dc.Subscriber("udp://127.0.0.1:0", backend=backend) as sub, _sender() as s:
        frames = [f.encode_bytes(b"x", i, time.time_ns()) for i in range(6)]
        for i in (0, 1, 3):
            s.sendto(frames[i], sub.address)
        s.sendto(frames[1], sub.address)                   # a duplicate
        s.sendto(frames[2], sub.address)                   # late: counted lost already
        s.sendto(_hb(f, "e", 5), sub.address)              # seq 4 lost
        s.sendto(frames[4], sub.address)                   # late after the heartbeat
        s.sendto(frames[5], sub.address)
        assert [m.seq for m in drain(sub, 0.3)] == [0, 1, 3, 5]
        assert sub.stats.lost == 2 and sub.stats.restarts == 0


def test_a_publisher_sends_its_epoch_before_its_first_message(backend):
    """The heartbeat that carries a new publisher's epoch is its first datagram,
    so a subscriber learns of a restart before the data (it raced the first send)."""
    f = backend.framing
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as listener:
        listener.bind(("127.0.0.1", 0))
        listener.settimeout(5)
        with dc.Publisher("udp://127.0.0.1:%d" % listener.getsockname()[1], backend=backend,
                          heartbeat=60) as pub:
            pub.send(b"first")
            data, _, _, flags, _ = f.decode(listener.recv(65536), 0, 1 << 16)
            assert flags & f.FLAG_CONTROL and data == {"dc": "hb", "epoch": pub.epoch, "next_seq": 0}
            data, seq, _, flags, _ = f.decode(listener.recv(65536), 0, 1 << 16)
            assert not flags & f.FLAG_CONTROL and (bytes(data), seq) == (b"first", 0)
