"""Message.source: which publisher a message came from (the zenoh key, the tcp
peer, the udp sender; None where one name has one publisher), on both backends,
through recv, latest and the asyncio methods, across real processes."""

from __future__ import annotations

import asyncio
import socket
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

import datacomms as dc
from netutil import Peer

LOCAL = "tcp://127.0.0.1:0"


def _reference_message() -> type:
    """The reference Message of datacomms/message.py (the compiled one takes its name when built)."""
    path = Path(dc.message.__file__)
    ns: dict[str, Any] = {"__name__": "reference_message", "__package__": ""}
    exec(compile(path.read_text(), str(path), "exec"), ns)   # its relative import of the twin fails here
    return ns["Message"]


CLASSES = [pytest.param(dc.Message, id="live"), pytest.param(_reference_message(), id="reference")]


@pytest.mark.parametrize("cls", CLASSES)
def test_message_source_defaults_to_none_and_shows_in_repr(cls):
    m = cls(b"abc", 3, 99)
    assert m.source is None and "source" not in repr(m)
    m = cls(b"abc", 3, 99, "10.0.0.1:8000")
    assert (m.data, m.seq, m.timestamp_ns, m.source) == (b"abc", 3, 99, "10.0.0.1:8000")
    assert repr(m) == "Message(seq=3, timestamp_ns=99, source='10.0.0.1:8000', data=<bytes>)"
    assert cls(b"", 0, 1, source="robots/r1/joints").source == "robots/r1/joints"
    with pytest.raises(AttributeError):
        m.other = 1  # slots: no stray attributes


def test_compiled_and_reference_message_agree():
    ref = _reference_message()
    for args in [(b"x", 1, 2), ({"a": 1}, None, 5, "[::1]:9000")]:
        assert repr(dc.Message(*args)) == repr(ref(*args))
    names = {"data", "seq", "timestamp_ns", "source"}
    assert set(ref.__slots__) == names
    assert names <= set(dir(dc.Message))


# --- one publisher per name: no source ------------------------------------------------------

@pytest.mark.parametrize("scheme", ["shm", "json", "hdf5"])
def test_single_publisher_transports_have_no_source(backend, scheme, shm_name, tmp_path):
    if scheme == "hdf5":
        pytest.importorskip("h5py")
    url = f"shm://{shm_name}" if scheme == "shm" else f"{scheme}://{tmp_path / ('s.' + scheme)}"
    if scheme == "hdf5":   # a recording, read back from its start
        with dc.Publisher(url, backend=backend) as pub:
            for i in range(3):
                pub.send({"i": i})
        with dc.Subscriber(url, backend=backend, from_start=True) as sub:
            first, last = sub.recv(timeout=5), sub.latest(timeout=5)
        assert (first.data, last.data) == ({"i": 0}, {"i": 2})
        assert first.source is None and last.source is None
        return
    with dc.Publisher(url, backend=backend) as pub, dc.Subscriber(url, backend=backend) as sub:
        pub.send({"i": 0})
        m = sub.latest(timeout=5)
        assert m.data == {"i": 0} and m.source is None
        pub.send({"i": 1})
        m = sub.recv(timeout=5)
        assert m.data == {"i": 1} and m.source is None


# --- tcp ------------------------------------------------------------------------------------

def test_tcp_connecting_subscriber_source_is_the_publishers_address(backend):
    peer = Peer("pub", LOCAL, "--backend", backend.name, "--count", "50", "--wait", "1")
    try:
        url = peer.ready()
        with dc.Subscriber(url, backend=backend) as sub:
            msgs = [sub.recv(timeout=20) for _ in range(50)]
        where = url.removeprefix("tcp://")
        assert {m.source for m in msgs} == {where}
        assert all(m.source is msgs[0].source for m in msgs), "one string per connection, not per message"
    finally:
        peer.close()


def test_tcp_listening_subscriber_tells_its_publishers_apart(backend):
    """Two publisher processes connect to a listening subscriber: two sources, each
    its publisher's own address with its own consecutive seqs."""
    with dc.Subscriber(LOCAL, backend=backend, bind=True) as sub:
        peers = [Peer("pub", sub.url, "--backend", backend.name, "--connect", "--count", "500", "--kind", "dict",
                      "--wait", "1", "--tag", t) for t in "ab"]
        try:
            for p in peers:
                p.ready()
            by_tag: dict[str, set[str]] = {"a": set(), "b": set()}
            seqs: dict[str, list[int]] = {}
            for _ in range(1000):
                m = sub.recv(timeout=20)
                by_tag[m.data["pid"]].add(m.source)
                seqs.setdefault(m.source, []).append(m.seq)
        finally:
            for p in peers:
                p.close()
    assert len(by_tag["a"]) == 1 and len(by_tag["b"]) == 1 and by_tag["a"] != by_tag["b"]
    for src, got in seqs.items():
        host, _, port = src.rpartition(":")
        assert host == "127.0.0.1" and port.isdigit() and int(port) != sub.address[1]
        assert got == list(range(500))


def test_tcp_source_through_latest_and_asyncio(backend):
    with dc.Publisher(LOCAL, backend=backend, on_full="block") as pub, \
            dc.Subscriber(pub.url, backend=backend) as sub:
        pub.wait_for_subscribers(1, timeout=5)
        where = pub.url.removeprefix("tcp://")
        _check_latest_and_asyncio(pub, sub, where)


def test_tcp_ipv6_source_is_bracketed(backend):
    try:
        pub = dc.Publisher("tcp://[::1]:0", backend=backend)
    except OSError as exc:
        pytest.skip(f"IPv6 loopback unavailable: {exc}")
    with pub, dc.Subscriber(pub.url, backend=backend) as sub:
        pub.wait_for_subscribers(1, timeout=5)
        pub.send(b"six")
        assert sub.recv(timeout=5).source == f"[::1]:{pub.address[1]}"


# --- udp ------------------------------------------------------------------------------------

def test_udp_source_is_the_senders_address(backend):
    with dc.Subscriber("udp://127.0.0.1:0", backend=backend) as sub, \
            dc.Publisher(sub.url, backend=backend) as pub:
        host, port = pub._sock.getsockname()[:2]
        pub.send(b"a")
        pub.send(b"b")
        m1, m2 = sub.recv(timeout=5), sub.recv(timeout=5)
        assert m1.source == f"{host}:{port}"
        assert m2.source is m1.source, "one string per sender, not per datagram"
        _check_latest_and_asyncio(pub, sub, m1.source)


def test_udp_two_sender_processes_are_two_sources(backend):
    with dc.Subscriber("udp://127.0.0.1:0", backend=backend) as sub:
        peers = [Peer("pub", sub.url, "--backend", backend.name, "--count", "200", "--rate", "1000",
                      "--kind", "dict", "--tag", t) for t in "ab"]
        try:
            for p in peers:
                p.ready()
            by_tag: dict[str, set[str]] = {"a": set(), "b": set()}
            deadline = time.monotonic() + 20
            while not (by_tag["a"] and by_tag["b"]) or sum(map(len, by_tag.values())) < 2:
                assert time.monotonic() < deadline, "both senders' datagrams should arrive"
                m = sub.recv(timeout=20)
                by_tag[m.data["pid"]].add(m.source)
            for _ in range(20):
                m = sub.recv(timeout=20)
                by_tag[m.data["pid"]].add(m.source)
        finally:
            for p in peers:
                p.close()
    assert len(by_tag["a"]) == 1 and len(by_tag["b"]) == 1 and by_tag["a"] != by_tag["b"]
    for (src,) in by_tag.values():
        assert src.startswith("127.0.0.1:") and int(src.rpartition(":")[2]) != sub.address[1]


@pytest.mark.skipif(not socket.has_ipv6, reason="no IPv6 in this Python")
def test_udp_ipv6_source_is_bracketed(backend):
    try:
        sub = dc.Subscriber("udp://[::1]:0", backend=backend)
    except OSError as exc:
        pytest.skip(f"IPv6 loopback unavailable: {exc}")
    with sub, dc.Publisher(sub.url, backend=backend) as pub:
        pub.send(b"six")
        assert sub.recv(timeout=5).source == f"[::1]:{pub._sock.getsockname()[1]}"


# --- shared: latest() and the asyncio methods carry the source like recv() ------------------

def _check_latest_and_asyncio(pub: Any, sub: Any, want: str) -> None:
    for i in range(3):
        pub.send({"i": i})
    time.sleep(0.05)
    m = sub.latest(timeout=5)
    assert m.source == want

    async def main() -> None:
        pub.send({"i": 10})
        assert (await sub.arecv(timeout=5)).source == want
        for i in range(3):
            pub.send({"i": 20 + i})
        await asyncio.sleep(0.05)
        assert (await sub.alatest(timeout=5)).source == want
        pub.send({"i": 30})
        async for m in sub:
            assert m.source == want
            break

    asyncio.run(main())


# --- zenoh ----------------------------------------------------------------------------------

def _zenoh() -> Any:
    return pytest.importorskip("zenoh", reason="zenoh:// needs eclipse-zenoh: pip install '.[zenoh]'")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_zenoh_wildcard_subscriber_gets_each_messages_key(backend):
    """A wildcard subscriber hears publishers on two keys, in two processes: each
    message's source is the key it was published on."""
    _zenoh()
    from test_zenoh import Child

    port, k = _free_port(), "dctest/" + uuid.uuid4().hex[:10]
    keys = {16: f"{k}/r1/joints", 32: f"{k}/r2/joints"}
    children = []
    try:
        with dc.Subscriber(f"zenoh://{k}/*/joints?listen=tcp/127.0.0.1:{port}", backend=backend) as sub:
            for size, key in keys.items():
                children.append(Child("pub", f"zenoh://{key}?connect=tcp/127.0.0.1:{port}", backend.name,
                                      "50", "block", "1", str(size), "linger"))
            msgs = [sub.recv(timeout=20) for _ in range(100)]
            for c in children:
                c.expect("done")
    finally:
        for c in children:
            c.finish()
    by_key: dict[str, list[int]] = {}
    for m in msgs:
        assert m.source == keys[m.data["arr"].size]
        by_key.setdefault(m.source, []).append(m.seq)
    assert by_key == {keys[16]: list(range(50)), keys[32]: list(range(50))}


def test_zenoh_source_through_latest_asyncio_and_plain_puts(backend):
    _zenoh()
    from datacomms.transports import zenohsession

    port, k = _free_port(), "dctest/" + uuid.uuid4().hex[:10]
    local = f"listen=tcp/127.0.0.1:{port}"
    with dc.Subscriber(f"zenoh://{k}/**?{local}", backend=backend) as sub, \
            dc.Publisher(f"zenoh://{k}/a?{local}", backend=backend) as pub:
        pub.wait_for_subscribers(1, timeout=10)
        pub.send(b"one")
        pub.send(b"two")
        m1, m2 = sub.recv(timeout=10), sub.recv(timeout=10)
        assert m1.source == f"{k}/a" and m2.source is m1.source, "one key string per publisher"
        _check_latest_and_asyncio(pub, sub, f"{k}/a")
        # a plain zenoh put of a frame: its key, too
        frame = b"".join(bytes(p) for p in backend.framing.encode({"plain": 1}, 0, time.time_ns())[0])
        session, share = zenohsession.acquire(zenohsession.parse_url(f"zenoh://{k}/b?{local}"))
        try:
            session.put(f"{k}/b", frame)
        finally:
            zenohsession.release(share)
        m = sub.recv(timeout=10)
        assert m.data == {"plain": 1} and m.source == f"{k}/b"
