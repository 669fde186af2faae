"""json:// — a latest-value JSON document replaced atomically."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import datacomms as dc
from datacomms.transports import jsonfile

sys.path.insert(0, os.path.dirname(__file__))
from file_workers import check_joint_state, close_while_reading, joint_state, run_bounded  # noqa: E402

WORKERS = os.path.join(os.path.dirname(__file__), "file_workers.py")
# The 10,000-message runs take over a minute per backend: `pytest -m slow` runs them.
slow = [pytest.mark.slow]


def url_of(path: Path) -> str:
    return f"json://{path}"


def test_relative_and_absolute_paths(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, backend) -> None:
    monkeypatch.chdir(tmp_path)
    with dc.Publisher("json://rel.json", backend=backend) as pub:
        assert isinstance(pub, jsonfile.JsonPublisher)
        pub.send(1)
    assert (tmp_path / "rel.json").exists()
    with dc.Subscriber(f"json://{tmp_path / 'rel.json'}", backend=backend) as sub:
        assert str(tmp_path).startswith("/")  # three slashes: json:///abs/...
        assert sub.recv(timeout=1).data == 1


def test_roundtrip_document_is_plain_json(tmp_path: Path, backend) -> None:
    path = tmp_path / "s.json"
    with dc.Publisher(url_of(path), backend=backend) as pub, dc.Subscriber(url_of(path), backend=backend) as sub:
        before = time.time_ns()
        seq = pub.send({"a": 1.5, "arr": np.arange(6, dtype=np.float32).reshape(2, 3), "s": "x",
                        "n": np.int64(7)})
        msg = sub.recv(timeout=1)
    assert seq == 0 and msg.seq == 0 and before <= msg.timestamp_ns <= time.time_ns()
    assert msg.data == {"a": 1.5, "arr": [[0.0, 1.0, 2.0], [3.0, 4.0, 5.0]], "s": "x", "n": 7}
    doc = json.loads(path.read_text())
    assert doc == {"seq": 0, "timestamp_ns": msg.timestamp_ns, "data": msg.data}
    assert [p.name for p in tmp_path.iterdir()] == ["s.json"]  # no temp file left


class _Dict(dict):
    pass


@dataclasses.dataclass
class _Pose:
    xyz: object


def test_arrays_inside_a_dict_subclass_or_a_dataclass_are_written_as_lists_on_both_backends(tmp_path: Path, backend) -> None:
    """The cython backend wrote them as lists (orjson's numpy option), the python one refused them."""
    path = tmp_path / "s.json"
    with dc.Publisher(url_of(path), backend=backend) as pub:
        pub.send(_Dict(arr=np.arange(3, dtype=np.int16), inner=[_Dict(b=np.ones(2))], pose=_Pose(np.zeros(1))))
    assert json.loads(path.read_text())["data"] == {"arr": [0, 1, 2], "inner": [{"b": [1.0, 1.0]}],
                                                    "pose": {"xyz": [0.0]}}


def test_bytes_refused(tmp_path: Path, backend) -> None:
    with dc.Publisher(url_of(tmp_path / "s.json"), backend=backend) as pub:
        with pytest.raises(dc.FrameError, match="no bytes"):
            pub.send({"b": b"raw"})
        assert pub.send(1) == 0  # a refused send does not use up a seq


def test_cross_backend(tmp_path: Path, backend) -> None:
    other = "python" if backend.name == "cython" else "cython"
    with dc.Publisher(url_of(tmp_path / "s.json"), backend=backend) as pub, \
            dc.Subscriber(url_of(tmp_path / "s.json"), backend=other) as sub:
        pub.send(joint_state(3))
        assert sub.recv(timeout=1).data == joint_state(3)


def test_loss_and_skip_accounting(tmp_path: Path, backend) -> None:
    url = url_of(tmp_path / "s.json")
    with dc.Publisher(url, backend=backend) as pub, dc.Subscriber(url, backend=backend) as sub:
        pub.send("v0")
        assert sub.recv(timeout=1).seq == 0
        for i in range(1, 4):
            pub.send(f"v{i}")
        msg = sub.recv(timeout=1)
        assert (msg.seq, msg.data) == (3, "v3")
        assert (sub.stats.received, sub.stats.lost, sub.stats.skipped) == (2, 2, 0)
        for i in range(4, 8):
            pub.send(f"v{i}")
        assert sub.latest(timeout=1).seq == 7
        assert (sub.stats.received, sub.stats.lost, sub.stats.skipped) == (3, 2, 3)
        with pytest.raises(dc.Timeout):
            sub.recv(timeout=0.02)  # never the same version twice
        last = pub.send_many(["a", "b", "c"])
        assert last == 10
        msg = sub.recv(timeout=1)
        assert (msg.seq, msg.data) == (10, "c")
        assert sub.stats.lost == 4  # 8 and 9 were superseded inside the batch


def test_unchanged_file_is_not_reread(tmp_path: Path, backend, monkeypatch: pytest.MonkeyPatch) -> None:
    url = url_of(tmp_path / "s.json")
    reads = []
    real = jsonfile._read_all
    monkeypatch.setattr(jsonfile, "_read_all", lambda fd, n: reads.append(n) or real(fd, n))
    with dc.Publisher(url, backend=backend) as pub, dc.Subscriber(url, backend=backend) as sub:
        pub.send(1)
        sub.recv(timeout=1)
        for _ in range(20):
            with pytest.raises(dc.Timeout):
                sub.latest(timeout=0)
        assert len(reads) == 1
        pub.send(1)  # same size, likely the same mtime tick: still a new version
        assert sub.recv(timeout=1).seq == 1
        assert len(reads) == 2


def test_late_subscriber_gets_current_value_and_publisher_continues_seq(tmp_path: Path, backend) -> None:
    url = url_of(tmp_path / "s.json")
    with dc.Publisher(url, backend=backend) as pub:
        pub.send("a")
        pub.send("b")
    with dc.Subscriber(url, backend=backend) as sub:
        msg = sub.latest(timeout=0)
        assert (msg.seq, msg.data) == (1, "b")
        with dc.Publisher(url, backend=backend) as pub:
            assert pub.send("c") == 2
        assert sub.recv(timeout=1).seq == 2
        assert sub.stats.lost == 0 and sub.stats.restarts == 0


def test_missing_file_waits(tmp_path: Path, backend) -> None:
    url = url_of(tmp_path / "not-yet" / "s.json")
    with dc.Subscriber(url, backend=backend) as sub:
        with pytest.raises(dc.Timeout):
            sub.recv(timeout=0)
        with pytest.raises(dc.Timeout):
            sub.latest(timeout=0.05)
        (tmp_path / "not-yet").mkdir()
        with dc.Publisher(url, backend=backend) as pub:
            pub.send({"x": 1})
        assert sub.recv(timeout=1).data == {"x": 1}


def test_foreign_plain_json(tmp_path: Path, backend) -> None:
    path = tmp_path / "other.json"
    path.write_text(json.dumps({"temperature": 21.5, "seq": "not ours"}))
    with dc.Subscriber(url_of(path), backend=backend) as sub:
        msg = sub.recv(timeout=1)
        assert msg.data == {"temperature": 21.5, "seq": "not ours"}
        assert msg.seq is None and msg.timestamp_ns == path.stat().st_mtime_ns
        path.write_text("[1, 2, 3]")  # rewritten in place by the other program
        os.utime(path, ns=(time.time_ns(), time.time_ns() + 1_000_000))
        assert sub.recv(timeout=1).data == [1, 2, 3]
        assert sub.stats.received == 2 and sub.stats.lost == 0


def test_not_json_is_a_clear_error_once(tmp_path: Path, backend) -> None:
    path = tmp_path / "s.json"
    path.write_bytes(b"\x00\x01 this is not json")
    old = time.time_ns() - 10_000_000_000
    os.utime(path, ns=(old, old))
    with dc.Subscriber(url_of(path), backend=backend) as sub:
        with pytest.raises(dc.FrameError, match="not a JSON document"):
            sub.recv(timeout=1)
        with pytest.raises(dc.Timeout):
            sub.recv(timeout=0.02)  # reported once per version
        assert sub.bad_versions == 1
        with dc.Publisher(url_of(path), backend=backend) as pub:
            pub.send("fixed")
        assert sub.recv(timeout=1).data == "fixed"


def test_file_replaced_by_a_directory_is_a_clear_error_once(tmp_path: Path, backend) -> None:
    """A directory where the document was is reported once as dc.FrameError, then waited out;
    recv used to raise IsADirectoryError on every call."""
    path = tmp_path / "s.json"
    with dc.Publisher(url_of(path), backend=backend) as pub, dc.Subscriber(url_of(path), backend=backend) as sub:
        pub.send(1)
        assert sub.recv(timeout=1).data == 1
        path.unlink()
        path.mkdir()
        with pytest.raises(dc.FrameError, match="is a directory"):
            sub.recv(timeout=1)
        with pytest.raises(dc.Timeout):
            sub.latest(timeout=0.02)
        assert sub.bad_versions == 1
        with pytest.raises(IsADirectoryError):
            pub.send(3)
        assert os.listdir(tmp_path) == ["s.json"]   # and its temp file is gone at once
        path.rmdir()
        pub.send(2)
        assert sub.recv(timeout=1).data == 2


def test_fifo_at_path_is_an_error_not_a_hang(tmp_path: Path, backend) -> None:
    """A FIFO at PATH is dc.FrameError for a subscriber, and a publisher replaces it; both used
    to wait forever in open() for a writer to the FIFO, past any timeout."""
    path = tmp_path / "s.json"
    os.mkfifo(path)
    url = url_of(path)

    def work(out: list[Any]) -> None:
        with dc.Subscriber(url, backend=backend) as sub:
            with pytest.raises(dc.FrameError, match="not a regular file"):
                sub.recv(timeout=1)
            with dc.Publisher(url, backend=backend) as pub:
                out.append(pub.send("a document"))
            out.append(sub.recv(timeout=1).data)

    assert run_bounded(path, work) == [0, "a document"]


def test_half_written_foreign_file_is_retried(tmp_path: Path, backend) -> None:
    path = tmp_path / "s.json"
    path.write_text('{"a": [1, 2')  # a non-atomic writer caught mid-write
    with dc.Subscriber(url_of(path), backend=backend) as sub:
        with pytest.raises(dc.Timeout):
            sub.recv(timeout=0.05)
        assert sub.retries >= 1 and sub.bad_versions == 0
        with open(path, "a") as f:
            f.write(", 3]}")
        assert sub.recv(timeout=1).data == {"a": [1, 2, 3]}


def test_read_only_directory_send_fails_and_close_is_clean(tmp_path: Path, backend_name: str) -> None:
    """A publisher in a read-only directory (a bind mount in a private mount namespace, made
    for a child process): send raises the OSError, close() releases everything and raises
    nothing. close() used to raise EROFS, which unlink() reports even for a missing name,
    leaving a durable publisher's directory descriptor open."""
    if shutil.which("unshare") is None or subprocess.run(["unshare", "-rm", "true"],
                                                          stderr=subprocess.DEVNULL).returncode != 0:
        pytest.skip("no private mount namespace here (unshare -rm) to make a read-only directory")
    d = tmp_path / "ro"
    d.mkdir()
    doc = b'{"seq": 4, "timestamp_ns": 5, "data": 1}'
    (d / "s.json").write_bytes(doc)
    script = (f'mount --bind "{d}" "{d}" && mount -o remount,ro,bind "{d}" "{d}" && '
              f'exec "{sys.executable}" "{WORKERS}" json-read-only "json://{d}/s.json" {backend_name}')
    out = subprocess.run(["unshare", "-rm", "sh", "-c", script], capture_output=True, text=True, timeout=60)
    assert out.stdout.splitlines() == ["send errno 30", "closed", "send errno 30", "closed", "fds left 0"], out.stderr
    assert sorted(os.listdir(d)) == ["s.json"] and (d / "s.json").read_bytes() == doc


def test_durable(tmp_path: Path, backend) -> None:
    url = url_of(tmp_path / "s.json")
    with dc.Publisher(url, backend=backend, durable=True) as pub, dc.Subscriber(url, backend=backend) as sub:
        pub.send([1, 2])
        assert sub.recv(timeout=1).data == [1, 2]


def test_subscribers_are_unknowable_and_closed_is_closed(tmp_path: Path, backend) -> None:
    url = url_of(tmp_path / "s.json")
    pub = dc.Publisher(url, backend=backend)
    with pytest.raises(dc.DataCommsError, match="cannot know its subscribers"):
        pub.wait_for_subscribers(1, timeout=0)
    with pytest.raises(dc.DataCommsError, match="cannot know its subscribers"):
        pub.subscribers
    pub.close()
    with pytest.raises(dc.Closed):
        pub.send(1)
    sub = dc.Subscriber(url, backend=backend)
    sub.close()
    with pytest.raises(dc.Closed):
        sub.recv(timeout=0)


def test_one_publisher_sent_to_from_two_threads(tmp_path: Path, backend) -> None:
    """Sends from two threads take turns: every send succeeds with its own seq. They used to
    share the temp file (one thread's replace took the other's file away: FileNotFoundError)
    and the counter (seqs given twice)."""
    url = url_of(tmp_path / "s.json")
    seqs: list[int] = []
    errors: list[BaseException] = []
    with dc.Publisher(url, backend=backend) as pub:
        def send(tag: str) -> None:
            try:
                for i in range(200):
                    seqs.append(pub.send({"tag": tag, "pad": tag * 100_000, "i": i}))
            except BaseException as exc:
                errors.append(exc)

        senders = [threading.Thread(target=send, args=(tag,)) for tag in "ab"]
        for t in senders:
            t.start()
        for t in senders:
            t.join(60)
    assert not errors and sorted(seqs) == list(range(400))
    doc = json.loads((tmp_path / "s.json").read_bytes())
    assert doc["seq"] == 399 and doc["data"]["pad"] == doc["data"]["tag"] * 100_000
    assert os.listdir(tmp_path) == ["s.json"]


def test_close_from_another_thread_while_recv_reads(tmp_path: Path, backend) -> None:
    """close() while another thread's recv reads a changing document: the recv raises
    dc.Closed, close() raises nothing, and no descriptor stays open. close() used to close
    the descriptor a read was replacing: EBADF from close(), or another file's descriptor
    closed in its place."""
    url = url_of(tmp_path / "s.json")
    stop = threading.Event()

    def feed() -> None:
        with dc.Publisher(url, backend=backend) as pub:
            i = 0
            while not stop.is_set():
                pub.send({"i": i})
                i += 1

    fds = len(os.listdir("/proc/self/fd"))
    feeder = threading.Thread(target=feed)
    feeder.start()
    try:
        close_while_reading(url, backend, 300, 0.0002)
    finally:
        stop.set()
        feeder.join()
    assert len(os.listdir("/proc/self/fd")) == fds


def run_seed(tmp_path: Path, backend_name: str, n: int) -> None:
    """The seed scenario: a writer process at 300 Hz, this process reading at ~1 kHz
    both through a Subscriber and as a naive program would (open + json.loads)."""
    path = tmp_path / "state.json"
    url = url_of(path)
    writer = subprocess.Popen([sys.executable, WORKERS, "json-writer", url, backend_name, str(n), "300"],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert writer.stdout.readline().strip() == "ready"
        naive_reads = naive_failed = 0
        seen = []
        with dc.Subscriber(url, backend=backend_name) as sub:
            tick = time.perf_counter()
            while writer.poll() is None or not seen or seen[-1] < n - 1:
                try:
                    msg = sub.recv(timeout=0)
                    assert check_joint_state(msg.data) == msg.seq
                    seen.append(msg.seq)
                except dc.Timeout:
                    pass
                try:
                    doc = json.loads(path.read_bytes())
                    check_joint_state(doc["data"])
                except FileNotFoundError:
                    pass
                except ValueError:
                    naive_failed += 1
                naive_reads += 1
                tick += 0.001
                time.sleep(max(0.0, tick - time.perf_counter()))
                if writer.poll() is not None and writer.returncode != 0:
                    break
            stats = sub.stats
            retries, bad = sub.retries, sub.bad_versions
    finally:
        writer.kill()
        writer.wait()
        writer.stdout.close()
    assert writer.returncode == 0
    assert seen[-1] == n - 1
    backwards = [(a, b) for a, b in zip(seen, seen[1:]) if b <= a]
    assert not backwards, f"versions out of order or repeated: {backwards[:5]}"
    assert retries == 0 and bad == 0, "the subscriber caught a torn document"
    assert naive_failed == 0, f"{naive_failed} of {naive_reads} naive reads failed"
    # a reader at 1 kHz sees most of 300 Hz versions; whatever it missed is counted, never hidden
    assert stats.received == len(seen)
    assert stats.lost == n - seen[0] - len(seen), (stats, seen[:3])
    assert len(seen) > n // 2


def test_seed_scenario(tmp_path: Path, backend_name: str) -> None:
    run_seed(tmp_path, backend_name, 1500)


@pytest.mark.parametrize("n", [pytest.param(10_000, marks=slow)])
def test_seed_scenario_10k(tmp_path: Path, backend_name: str, n: int) -> None:
    run_seed(tmp_path, backend_name, n)
