"""hdf5:// — a SWMR recording followed live, replayed, and readable with plain h5py."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest

import datacomms as dc
from datacomms import _aio
from datacomms.transports import hdf5

sys.path.insert(0, os.path.dirname(__file__))
from file_workers import close_while_reading, joint_state, run_bounded  # noqa: E402

WORKERS = os.path.join(os.path.dirname(__file__), "file_workers.py")


def url_of(path: Path) -> str:
    return f"hdf5://{path}"


def child(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, WORKERS, *args], stdout=subprocess.PIPE, text=True)


def finish(proc: subprocess.Popen, timeout: float = 60) -> str:
    try:
        out, _ = proc.communicate(timeout=timeout)
    finally:
        proc.kill()
        proc.wait()
        proc.stdout.close()
    return out


def replay(url: str, backend) -> list[dc.Message]:
    out = []
    with dc.Subscriber(url, backend=backend, from_start=True) as sub:
        while True:
            try:
                out.append(sub.recv(timeout=0))
            except dc.Timeout:
                return out


def test_joint_state_columns_readable_with_plain_h5py(tmp_path: Path, backend) -> None:
    path = tmp_path / "log.h5"
    with dc.Publisher(url_of(path), backend=backend) as pub:
        assert isinstance(pub, hdf5.Hdf5Publisher)
        for i in range(100):
            assert pub.send(joint_state(i)) == i
        pub.send_many([joint_state(i) for i in range(100, 250)])
    with h5py.File(path, "r") as f:
        assert f.attrs["datacomms_kind"] == "columns"
        assert json.loads(f.attrs["datacomms_columns"]) == list(joint_state(0))
        assert f["seq"].dtype == np.int64 and f["timestamp_ns"].dtype == np.int64
        np.testing.assert_array_equal(f["seq"][:], np.arange(250))
        np.testing.assert_array_equal(f["data/joint_3"][:], np.arange(250) + 3 / 16.0)
        assert np.all(np.diff(f["timestamp_ns"][:]) >= 0)
    msgs = replay(url_of(path), backend)
    assert [m.seq for m in msgs] == list(range(250))
    assert all(m.data == joint_state(m.seq) for m in msgs)


def test_array_layout_and_frames_layout(tmp_path: Path, backend) -> None:
    frames = [np.full((4, 5), i, np.uint16) for i in range(7)]
    with dc.Publisher(url_of(tmp_path / "a.h5"), backend=backend) as pub:
        for fr in frames[:3]:
            pub.send(fr)
        pub.send_many(frames[3:])
        with pytest.raises(dc.FrameError, match="layout is 'array'"):
            pub.send(np.zeros((5, 4), np.uint16))
        assert pub.send(frames[0]) == 7  # the refused message took no seq
    with h5py.File(tmp_path / "a.h5", "r") as f:
        assert f["data"].shape == (8, 4, 5) and f["data"].dtype == np.uint16
    got = replay(url_of(tmp_path / "a.h5"), backend)
    assert [int(m.data[0, 0]) for m in got] == [0, 1, 2, 3, 4, 5, 6, 0]

    mixed = [b"raw", {"name": "x", "v": [1, 2]}, "text", np.arange(3.0), {"img": np.ones((2, 2), np.uint8)}]
    with dc.Publisher(url_of(tmp_path / "f.h5"), backend=backend) as pub:
        pub.send(mixed[0])
        pub.send_many(mixed[1:])
    got = replay(url_of(tmp_path / "f.h5"), backend)
    assert bytes(got[0].data) == b"raw" and got[1].data == mixed[1] and got[2].data == "text"
    np.testing.assert_array_equal(got[3].data, mixed[3])
    np.testing.assert_array_equal(got[4].data["img"], mixed[4]["img"])
    with h5py.File(tmp_path / "f.h5", "r") as f:
        assert f.attrs["datacomms_kind"] == "frames" and f["data"].shape == (5,)


def test_first_message_that_no_layout_of_its_kind_can_hold(tmp_path: Path, backend) -> None:
    """Zero-size arrays are recorded as frames (an HDF5 chunk has no side of length 0), and a
    first message that does not fit a layout chosen with layout= is dc.FrameError that leaves
    no file. They used to raise h5py's or Python's own errors, and layout='columns' made a
    float32 column of any value it could not type."""
    url = url_of(tmp_path / "zero.h5")
    with dc.Publisher(url, backend=backend) as pub:
        assert pub.send(np.zeros((0, 3))) == 0
        assert pub.send(np.ones(2)) == 1
    got = replay(url, backend)
    assert got[0].data.shape == (0, 3) and got[1].data.tolist() == [1.0, 1.0]
    with h5py.File(tmp_path / "zero.h5", "r") as f:
        assert f.attrs["datacomms_kind"] == "frames"
    misfits = [("array", np.zeros(0)), ("array", np.zeros((2, 0))), ("array", {"a": 1.0}), ("array", b"x"),
               ("array", np.array(["text"])), ("columns", {"a": "text"}), ("columns", {"a": 1 << 70}),
               ("columns", {}), ("columns", {"a/b": 1.0}), ("columns", np.zeros(3))]
    for i, (layout, first) in enumerate(misfits):
        path = tmp_path / f"{i}.h5"
        with dc.Publisher(url_of(path), backend=backend, layout=layout) as pub:
            with pytest.raises(dc.FrameError, match=f"layout '{layout}'"):
                pub.send(first)
        assert not path.exists(), (layout, first)
    assert sorted(os.listdir(tmp_path)) == ["zero.h5"]


def test_bad_batch_records_nothing(tmp_path: Path, backend) -> None:
    with dc.Publisher(url_of(tmp_path / "log.h5"), backend=backend) as pub:
        pub.send({"a": 1.0, "b": 2.0})
        with pytest.raises(dc.FrameError):
            pub.send_many([{"a": 1.0, "b": 2.0}, {"a": 1.0}])
        for bad in ({"a": 1.0, "b": "text"}, {"a": 1.0, "c": 2.0}, {"a": None, "b": 2.0}, {"a": [1.0], "b": 2.0},
                    {"a": [1.0, 2.0], "b": 2.0}, {"a": "1.5", "b": "2"}):
            with pytest.raises(dc.FrameError):
                pub.send_many([{"a": 5.0, "b": 6.0}, bad])
        with pytest.raises(dc.FrameError):
            pub.send({"a": 1.0, "c": 2.0})
        assert pub.send_many([{"a": 3.0, "b": 4}]) == 1
    assert [m.data for m in replay(url_of(tmp_path / "log.h5"), backend)] == [{"a": 1.0, "b": 2.0},
                                                                           {"a": 3.0, "b": 4.0}]


def test_bad_batch_errors_name_the_fault(tmp_path: Path, backend) -> None:
    """send_many's FrameError says what is wrong, the same on both backends; numbers of
    any kind numpy takes are accepted into float columns."""
    with dc.Publisher(url_of(tmp_path / "log.h5"), backend=backend) as pub:
        pub.send({"a": 1.0, "b": 2.0})
        with pytest.raises(dc.FrameError, match=r"takes dicts with keys \['a', 'b'\]"):
            pub.send_many([{"a": 1.0, "b": 2.0}, [1.0, 2.0]])
        with pytest.raises(dc.FrameError, match="an item lacks the key 'b'"):
            pub.send_many([{"a": "not a number", "b": 1.0}, {"a": 1.0, "c": 2.0}])
        for bad in (np.complex64(1), 2 ** 64, "1.5", np.array([1.0]), None):
            with pytest.raises(dc.FrameError, match="take one number each"):
                pub.send_many([{"a": 5.0, "b": 6.0}, {"a": bad, "b": 1.0}])
        assert pub.send_many([{"a": np.float32(0.5), "b": np.int16(3)}, {"a": True, "b": 2 ** 63}]) == 2
    got = [m.data for m in replay(url_of(tmp_path / "log.h5"), backend)]
    assert got == [{"a": 1.0, "b": 2.0}, {"a": 0.5, "b": 3.0}, {"a": 1.0, "b": 2.0 ** 63}]


def test_value_its_column_cannot_hold_is_refused_and_the_recording_goes_on(tmp_path: Path, backend) -> None:
    """A number outside its column's dtype is refused when sent, using up no seq; it used to
    be staged and then fail every flush (close included), losing everything sent after it."""
    path = tmp_path / "log.h5"
    with dc.Publisher(url_of(path), backend=backend, flush_interval=0.05) as pub:
        assert pub.send({"n": np.int32(3), "u": np.uint8(1), "x": 1.0}) == 0
        for bad in ({"n": 2 ** 31, "u": 1, "x": 1.0}, {"n": np.int64(-2 ** 40), "u": 1, "x": 1.0},
                    {"n": 3, "u": 300, "x": 1.0}, {"n": 3, "u": -1, "x": 1.0}, {"n": 3, "u": 1, "x": 10 ** 400}):
            with pytest.raises(dc.FrameError, match="cannot take"):
                pub.send(bad)
        with pytest.raises(dc.FrameError, match="outside its range"):
            pub.send_many([{"n": 4, "u": 2, "x": 2.0}, {"n": 2 ** 40, "u": 2, "x": 2.0}])
        assert pub.send({"n": -2 ** 31, "u": np.uint8(255), "x": 2 ** 70}) == 1
        pub.flush()
    with h5py.File(path, "r") as f:
        assert f["seq"][:].tolist() == [0, 1]
        assert f["data/n"][:].tolist() == [3, -2 ** 31]
        assert f["data/u"][:].tolist() == [1, 255]
        assert f["data/x"][:].tolist() == [1.0, 2.0 ** 70]


def test_float32_column_stores_what_it_cannot_hold_as_inf_without_a_warning(tmp_path: Path, backend) -> None:
    """A float32 column turns a number beyond its range into an infinity (docs/files.md). The
    cast used to raise numpy's RuntimeWarning in the flush: with warnings as errors (as in this
    test run) that failed the send, and every later flush, the timer's included."""
    path = tmp_path / "log.h5"
    with dc.Publisher(url_of(path), backend=backend, flush_interval=0) as pub:
        assert pub.send({"x": np.float32(1.0), "n": 1}) == 0
        assert pub.send({"x": 1e300, "n": 2}) == 1
        assert pub.send({"x": -10 ** 300, "n": 3}) == 2
        assert pub.send_many([{"x": np.float64(1e39), "n": 4}, {"x": 2.0, "n": 5}]) == 4
    with dc.Publisher(url_of(tmp_path / "f.h5"), backend=backend, flush_interval=0.05) as pub:
        assert pub.send({"x": np.float32(1.0), "y": np.float32(1.0)}) == 0
        assert pub.send_many([{"x": 1e300, "y": 1.0}]) == 1   # all-float columns: cast by the Writer
        assert pub.send({"x": -1e300, "y": 3.0}) == 2         # left to the timer
        deadline = time.monotonic() + 10
        while pub._due is not None and time.monotonic() < deadline:
            time.sleep(0.01)
        assert pub._timer.is_alive()
        assert pub.send({"x": 4.0, "y": 4.0}) == 3
    with h5py.File(path, "r") as f:
        assert f["data/x"].dtype == np.float32
        assert f["data/x"][:].tolist() == [1.0, np.inf, -np.inf, np.inf, 2.0]
        assert f["data/n"][:].tolist() == [1, 2, 3, 4, 5]
    with h5py.File(tmp_path / "f.h5", "r") as f:
        assert f["data/x"][:].tolist() == [1.0, np.inf, -np.inf, 4.0]
        assert f["data/y"][:].tolist() == [1.0, 1.0, 3.0, 4.0]


def test_full_disk_is_a_clear_error_and_the_file_is_let_go(tmp_path: Path, backend_name: str) -> None:
    """A recording that fills its file system (a 1 MiB tmpfs in a private mount namespace): the
    send that meets the full disk raises dc.DataCommsError saying so, and so do later sends; the
    publisher lets go of the file and its lock at once, so another process appends once there is
    room again, after the rows flushed before (a frames recording may lose its last rows, see
    docs/files.md). When the timer's flush meets it, the timer ends and close() raises it. The
    send used to raise HDF5's RuntimeError, the timer died silently, and close() raised and kept
    both descriptors, so other publishers were refused until the process exited."""
    if shutil.which("unshare") is None or subprocess.run(["unshare", "-rm", "true"],
                                                          stderr=subprocess.DEVNULL).returncode != 0:
        pytest.skip("no private mount namespace here (unshare -rm) to mount a small tmpfs")
    d = tmp_path / "small"
    d.mkdir()
    path = d / "r.h5"
    script = (f'mount -t tmpfs -o size=1m tmpfs "{d}" && '
              f'exec "{sys.executable}" "{WORKERS}" hdf5-full-disk "{url_of(path)}" {backend_name}')
    out = subprocess.run(["unshare", "-rm", "sh", "-c", script], capture_output=True, text=True, timeout=120)
    lines = out.stdout.splitlines()
    assert out.returncode == 0 and len(lines) == 8, (out.stdout, out.stderr)
    full = f"cannot write {path}: no space left on device. This publisher is closed"
    assert lines[0].startswith(f"send True: {full}"), lines[0]
    assert lines[1].startswith(f"later send: {full}"), lines[1]
    assert lines[2] == "closed, fds on the file 0, threads 1"
    m = re.fullmatch(r"appended (\d+), replayed (\d+) in order True", lines[3])
    assert m and int(m[1]) > 10 and int(m[2]) == int(m[1]) + 1, lines[3]
    assert lines[4] == "timer let go: fds on the file 0"
    assert lines[5].startswith(f"close: {full}"), lines[5]
    assert lines[6:] == ["closed, threads 1", "appended 1, replayed 2 in order True"]


def test_join_latest_and_skips(tmp_path: Path, backend) -> None:
    url = url_of(tmp_path / "log.h5")
    with dc.Publisher(url, backend=backend) as pub:
        pub.send_many([joint_state(i) for i in range(10)])
    with dc.Subscriber(url, backend=backend) as sub:
        assert sub.recv(timeout=0).seq == 9  # a late joiner gets the current value, not the history
        with pytest.raises(dc.Timeout):
            sub.recv(timeout=0)
    with dc.Subscriber(url, backend=backend, from_start=True) as sub:
        assert sub.recv(timeout=0).seq == 0
        assert sub.recv(timeout=0).seq == 1
        assert sub.latest(timeout=0).seq == 9
        assert (sub.stats.received, sub.stats.skipped, sub.stats.lost) == (3, 7, 0)
        with pytest.raises(dc.Timeout):
            sub.latest(timeout=0)


def test_missing_file_waits_and_not_ours_errors(tmp_path: Path, backend) -> None:
    with dc.Subscriber(url_of(tmp_path / "later.h5"), backend=backend) as sub:
        with pytest.raises(dc.Timeout):
            sub.recv(timeout=0.05)
    (tmp_path / "text.h5").write_text("hello, not hdf5")
    with dc.Subscriber(url_of(tmp_path / "text.h5"), backend=backend) as sub:
        with pytest.raises(dc.FrameError, match="not an HDF5 file"):
            sub.recv(timeout=1)
    with pytest.raises(dc.FrameError, match="not an HDF5 file"):
        dc.Publisher(url_of(tmp_path / "text.h5"), backend=backend)
    with h5py.File(tmp_path / "other.h5", "w") as f:
        f["x"] = np.arange(3)
    with dc.Subscriber(url_of(tmp_path / "other.h5"), backend=backend) as sub:
        with pytest.raises(dc.FrameError, match="not a datacomms HDF5 recording"):
            sub.latest(timeout=1)
    with pytest.raises(dc.FrameError, match="not a datacomms HDF5 recording"):
        dc.Publisher(url_of(tmp_path / "other.h5"), backend=backend)
    with h5py.File(tmp_path / "other.h5", "r") as f:  # and it was left untouched
        assert list(f) == ["x"]


@pytest.mark.parametrize("layout", ["array", "frames"])
def test_replay_of_big_rows_reads_ahead_within_a_budget(tmp_path: Path, backend_name: str, layout: str) -> None:
    """A subscriber replaying 2 MiB rows reads ahead a bounded number of bytes, not up to
    1,024 rows: its first recv used to take the whole 200 MiB recording into memory (8 GiB
    for a camera's 8 MiB frames)."""
    url = url_of(tmp_path / "cam.h5")
    frame = np.zeros(1 << 18)   # 2 MiB
    with dc.Publisher(url, backend=backend_name, layout=layout) as pub:
        for i in range(100):
            frame[0] = i
            pub.send(frame if layout == "array" else frame.tobytes())
    out = finish(child("hdf5-replay-memory", url, backend_name)).split()
    assert out[0] == "grew" and int(out[1]) < 64, out


def test_a_damaged_frame_is_reported_once_and_passed_over(tmp_path: Path, backend) -> None:
    """A frames row that does not decode is dc.FrameError once, when its turn comes; the rows
    around it are delivered and its seq counts as lost. It used to fail every recv from the
    read that held it on, its good neighbours included: the follower was stuck for good."""
    path = tmp_path / "f.h5"
    url = url_of(path)
    with dc.Publisher(url, backend=backend, layout="frames") as pub:
        for i in range(10):
            pub.send(f"message {i}")
    with h5py.File(path, "r+") as f:
        f["data"][5] = np.frombuffer(b"not a datacomms frame, just bytes", np.uint8)
        f["data"][9] = np.frombuffer(b"nor this", np.uint8)
    got: list[object] = []
    with dc.Subscriber(url, backend=backend, from_start=True) as sub:
        while True:
            try:
                got.append(sub.recv(timeout=0.1).seq)
            except dc.FrameError as exc:
                got.append("bad " + re.search(r"frame of seq (\d+) does not decode", str(exc)).group(1))
            except dc.Timeout:
                break
        assert (sub.stats.received, sub.stats.lost) == (8, 1)
    assert got == [0, 1, 2, 3, 4, "bad 5", 6, 7, 8, "bad 9"]
    with dc.Subscriber(url, backend=backend) as sub:
        with pytest.raises(dc.FrameError, match="seq 9"):
            sub.latest(timeout=1)
        with pytest.raises(dc.Timeout):
            sub.latest(timeout=0.05)


def test_fifo_at_path_is_an_error_not_a_hang(tmp_path: Path, backend) -> None:
    """A FIFO at PATH is dc.FrameError for a subscriber and a publisher; both used to wait
    forever in open() for a writer to the FIFO, past any timeout."""
    path = tmp_path / "log.h5"
    os.mkfifo(path)
    url = url_of(path)

    def work(out: list[Any]) -> None:
        with dc.Subscriber(url, backend=backend) as sub:
            with pytest.raises(dc.FrameError, match="not a regular file"):
                sub.recv(timeout=1)
        with pytest.raises(dc.FrameError, match="not a regular file"):
            dc.Publisher(url, backend=backend)
        out.append("done")

    assert run_bounded(path, work) == ["done"]


def test_damaged_or_misshapen_files_are_frame_errors(tmp_path: Path, backend) -> None:
    """A directory, HDF5 with a damaged superblock or object headers, and HDF5 with the
    datacomms attributes over the wrong objects are dc.FrameError for a subscriber and (but
    for the superblock, which h5py refuses with OSError) a publisher. They used to raise
    IsADirectoryError, RuntimeError, KeyError, ValueError, TypeError or AttributeError."""
    good = tmp_path / "good.h5"
    with dc.Publisher(url_of(good), backend=backend) as pub:
        pub.send_many([joint_state(i) for i in range(100)])
    (tmp_path / "dir.h5").mkdir()
    (tmp_path / "superblock.h5").write_bytes(good.read_bytes()[:8] + b"\xff" * 40)
    raw = bytearray(good.read_bytes())
    raw[48:2048] = b"\xff" * 2000
    (tmp_path / "headers.h5").write_bytes(raw)
    with h5py.File(tmp_path / "version.h5", "w", libver="latest") as f:
        f.attrs["datacomms_layout"] = "one"
    with h5py.File(tmp_path / "nocolumns.h5", "w", libver="latest") as f:
        f.attrs["datacomms_layout"] = 1
        f.attrs["datacomms_kind"] = "columns"
        for name in ("seq", "timestamp_ns"):
            f.create_dataset(name, (0,), np.int64, maxshape=(None,), chunks=(16,))
        f.create_group("data")
    with h5py.File(tmp_path / "seqgroup.h5", "w", libver="latest") as f:
        f.attrs["datacomms_layout"] = 1
        f.attrs["datacomms_kind"] = "frames"
        f.create_group("seq")
        f["timestamp_ns"] = np.arange(3)
        f["data"] = np.arange(3)
    deep = tmp_path / "deepcolumns.h5"   # json.loads of it raised RecursionError
    deep.write_bytes(good.read_bytes())
    with h5py.File(deep, "a", libver="latest") as f:
        f.attrs["datacomms_columns"] = "[" * 100_000 + "]" * 100_000
    for name in ("dir", "superblock", "headers", "version", "nocolumns", "seqgroup", "deepcolumns"):
        url = url_of(tmp_path / f"{name}.h5")
        with dc.Subscriber(url, backend=backend) as sub:
            with pytest.raises(dc.FrameError, match="not a datacomms HDF5 recording"):
                sub.recv(timeout=1)
        if name != "superblock":
            with pytest.raises(dc.FrameError, match="not a datacomms HDF5 recording"):
                dc.Publisher(url, backend=backend)


def test_subscriber_in_the_publishers_process(tmp_path: Path, backend) -> None:
    """A subscriber follows a recording its own process writes (docs/files.md, one process);
    it used to wait forever: HDF5 refused to open the file with locks a second time without."""
    url = url_of(tmp_path / "log.h5")
    with dc.Publisher(url, backend=backend) as pub:
        pub.send_many([joint_state(i) for i in range(3)])
        pub.flush()
        with dc.Subscriber(url, backend=backend, from_start=True) as sub:
            assert [sub.recv(timeout=5).seq for _ in range(3)] == [0, 1, 2]
            pub.send(joint_state(3))
            pub.flush()
            msg = sub.recv(timeout=5)
            assert msg.seq == 3 and msg.data == joint_state(3)


def test_a_read_retried_on_a_file_not_ready_to_reopen_goes_on_where_it_was(tmp_path: Path, backend,
                                                                           monkeypatch) -> None:
    """A SWMR read that HDF5 cannot do yet closes the file and opens it again. When that
    open had to wait (a live writer's file shorter than its superblock says, mid-flush),
    the open at the next poll took the file for a new one and read it again from row 0:
    a follower of the soak test saw seq 720155 followed by seq 0."""
    url = url_of(tmp_path / "log.h5")
    with dc.Publisher(url, backend=backend) as pub:
        pub.send_many([joint_state(i) for i in range(10)])
        pub.flush()
        with dc.Subscriber(url, backend=backend, from_start=True) as sub:
            assert [sub.recv(timeout=5).seq for _ in range(4)] == [0, 1, 2, 3]
            pub.send_many([joint_state(i) for i in range(10, 20)])
            pub.flush()
            real_read, real_is_hdf5 = hdf5.read_rows, hdf5.is_hdf5
            trouble = {"read": 1, "open": 1}

            def read_rows(*args: Any) -> Any:
                if trouble["read"]:
                    trouble["read"] -= 1
                    raise OSError("len not positive after adjustment for EOA")
                return real_read(*args)

            def is_hdf5(path: Any) -> Any:
                if trouble["open"]:
                    trouble["open"] -= 1
                    return None   # not ready: the open waits for the next poll
                return real_is_hdf5(path)

            monkeypatch.setattr(hdf5, "read_rows", read_rows)
            monkeypatch.setattr(hdf5, "is_hdf5", is_hdf5)
            got = [sub.recv(timeout=5).seq for _ in range(16)]
            assert got == list(range(4, 20)) and trouble == {"read": 0, "open": 0}
            assert sub.stats.lost == 0


def test_one_writer_per_file_and_unknowable_subscribers(tmp_path: Path, backend) -> None:
    url = url_of(tmp_path / "log.h5")
    with dc.Publisher(url, backend=backend) as pub:
        pub.send(1.5)
        with pytest.raises(dc.DataCommsError, match="another publisher"):
            dc.Publisher(url, backend=backend)
        with pytest.raises(dc.DataCommsError, match="cannot know its subscribers"):
            pub.wait_for_subscribers()
    with dc.Publisher(url, backend=backend) as pub:
        assert pub.send(2.5) == 1
    with pytest.raises(dc.Closed):
        pub.send(3.5)


def test_reader_first_follows_live_writer_process(tmp_path: Path, backend_name: str) -> None:
    """The subscriber starts before the file exists; a writer process at 300 Hz
    with the default flush policy; every message arrives, in order, none lost."""
    url = url_of(tmp_path / "live.h5")
    n = 600
    with dc.Subscriber(url, backend=backend_name) as sub:
        writer = child("hdf5-writer", url, backend_name, str(n), "300", str(hdf5.DEFAULT_FLUSH_INTERVAL))
        try:
            seqs = []
            for _ in range(n):
                msg = sub.recv(timeout=20)
                assert msg.data == joint_state(msg.seq)
                seqs.append(msg.seq)
        finally:
            assert finish(writer).split() == ["ready", "done"]
        assert seqs == list(range(n))
        assert sub.stats.lost == 0 and sub.stats.received == n


@pytest.mark.skipif(_aio._libc() is None, reason="no inotify here")
def test_flush_wakes_a_blocked_recv(tmp_path: Path, backend_name: str, monkeypatch) -> None:
    """A blocking recv sleeps on inotify: with the fallback look pushed out past the
    recv timeout, only the writer's flushes can wake it, and every message arrives."""
    monkeypatch.setattr(hdf5, "SYNC_SLICE", 3600.0)
    url = url_of(tmp_path / "woken.h5")
    with dc.Subscriber(url, backend=backend_name) as sub:
        writer = child("hdf5-writer", url, backend_name, "6", "20", "0.002")
        try:
            assert [sub.recv(timeout=30).seq for _ in range(6)] == list(range(6))
            assert sub._sync_w.watching
        finally:
            assert finish(writer).split() == ["ready", "done"]


def test_close_ends_a_blocked_recv(tmp_path: Path, backend) -> None:
    sub = dc.Subscriber(url_of(tmp_path / "never.h5"), backend=backend)
    raised = []

    def wait() -> None:
        try:
            sub.recv()
        except dc.Closed:
            raised.append(True)
    t = threading.Thread(target=wait)
    t.start()
    try:
        t.join(0.3)  # let it go to sleep; the test holds without this
    finally:
        sub.close()
        t.join(30)
    assert not t.is_alive() and raised == [True]


def test_close_from_another_thread_while_recv_follows_a_writer(tmp_path: Path, backend_name: str) -> None:
    """close() while another thread's recv follows a live writer: the recv raises dc.Closed
    and no descriptor stays open. The recv used to read an inotify descriptor close() had just
    closed (EBADF), and to make a new watch after close() that nothing ever closed."""
    url = url_of(tmp_path / "live.h5")
    writer = child("hdf5-writer", url, backend_name, "1000000", "2000", "0.001")
    try:
        assert writer.stdout.readline().split() == ["ready"]
        fds = len(os.listdir("/proc/self/fd"))
        close_while_reading(url, backend_name, 200, 0.0005)
        assert len(os.listdir("/proc/self/fd")) == fds
    finally:
        writer.kill()
        finish(writer)


def test_follower_reads_live_rows_across_chunks(tmp_path: Path, backend_name: str) -> None:
    """A follower reads rows that seq counts without refreshing the other datasets
    until rows reach past the chunks they held (4,096 rows): across several chunk
    boundaries of a live writer, every row arrives with its own data."""
    url = url_of(tmp_path / "chunks.h5")
    n = 15 * 700
    with dc.Subscriber(url, backend=backend_name) as sub:
        writer = child("hdf5-batches", url, backend_name, "15", "700")
        try:
            got = [sub.recv(timeout=30) for _ in range(n)]
        finally:
            assert finish(writer).split() == ["ready", "done"]
        assert sub._reader.lazy
    assert [m.seq for m in got] == list(range(n))
    assert all(m.data == joint_state(m.seq) for m in got)


def test_recording_without_seq_last_is_read_with_refreshes(tmp_path: Path, backend) -> None:
    """A recording whose writer did not promise to flush seq last (no datacomms_seq_last
    attribute) is followed by refreshing every dataset, and reads the same."""
    path = tmp_path / "old.h5"
    with dc.Publisher(url_of(path), backend=backend) as pub:
        pub.send_many([joint_state(i) for i in range(50)])
    with h5py.File(path, "a") as f:
        assert f.attrs["datacomms_seq_last"] == 1
        del f.attrs["datacomms_seq_last"]
    with dc.Subscriber(url_of(path), backend=backend, from_start=True) as sub:
        got = [sub.recv(timeout=0) for _ in range(50)]
        assert not sub._reader.lazy
    assert [m.data for m in got] == [joint_state(i) for i in range(50)]
    with dc.Publisher(url_of(path), backend=backend) as pub:  # an appending writer makes the promise again
        pub.send(joint_state(50))
    with h5py.File(path, "r") as f:
        assert f.attrs["datacomms_seq_last"] == 1


def test_late_reader_follows_a_live_writer_of_bytes(tmp_path: Path, backend_name: str) -> None:
    """Found by the soak test: variable-length rows (bytes payloads) a SWMR reader in
    another process already counts can point past the end of the file it knows, and
    reading them raised OSError ("len not positive after adjustment for EOA") out of
    recv. The reader now reopens the file and carries on: every message, in order."""
    url = url_of(tmp_path / "bytes.h5")
    writer = subprocess.Popen([sys.executable, WORKERS, "hdf5-bytes-until-killed", url, backend_name],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert writer.stdout.readline().strip() == "ready"
        with dc.Subscriber(url, backend=backend_name) as sub:
            last = None
            for _ in range(5000):
                m = sub.recv(timeout=20)
                assert last is None or m.seq == last + 1
                assert bytes(m.data) == m.seq.to_bytes(8, "little") * (1 + m.seq % 8)
                last = m.seq
            assert sub.stats.lost == 0
    finally:
        writer.kill()
        finish(writer)


def test_idle_publisher_still_flushes(tmp_path: Path, backend_name: str) -> None:
    """One message, then silence: the timer must flush it for a reader in another process."""
    url = url_of(tmp_path / "idle.h5")
    with dc.Publisher(url, backend=backend_name, flush_interval=0.02) as pub:
        pub.send(joint_state(0))
        reader = child("hdf5-reader", url, backend_name, "1")
        out = finish(reader, timeout=30).splitlines()
        assert out[0] == "ready" and json.loads(out[1]) == {"seqs_ok": True, "first": 0, "lost": 0}


class _Clock:
    """A monotonic clock the test moves by hand (time_ns stays real)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now

    def time_ns(self) -> int:
        return time.time_ns()


def test_flush_schedule_follows_a_steady_stream(tmp_path: Path, backend, monkeypatch) -> None:
    """A stream faster than the flush interval is flushed by its own sends, at most once per
    interval. The timer flushes what the sends leave pending 0.9 interval after the oldest
    of it was sent (never sooner than an interval after the last flush), not one interval
    after the last flush, where it would race the stream's next send (docs/files.md)."""
    clock = _Clock()
    monkeypatch.setattr(hdf5, "time", clock)
    flushes: list[tuple[float, int]] = []
    real_flush = hdf5.Hdf5Publisher._flush

    def spy(self: hdf5.Hdf5Publisher) -> None:
        flushes.append((round(clock.now - 1000.0, 3), self._seq))
        real_flush(self)

    monkeypatch.setattr(hdf5.Hdf5Publisher, "_flush", spy)
    with dc.Publisher(url_of(tmp_path / "s.h5"), backend=backend, flush_interval=0.03) as pub:
        for i in range(6):   # one message every 2/3 interval, like 300 Hz at the default 5 ms
            clock.now = 1000.0 + 0.02 * i
            pub.send(joint_state(i))
        # flushed by the sends at 0, 0.04 and 0.08 (each an interval or more after the last flush)
        assert flushes == [(0.0, 1), (0.04, 3), (0.08, 5)]
        clock.now = 1000.115   # past last flush + interval (0.11), before 0.9 interval after seq 5 (0.127)
        time.sleep(0.2)        # the timer looks again meanwhile (its nap is the fake 0.03 s at most)
        assert flushes == [(0.0, 1), (0.04, 3), (0.08, 5)]
        clock.now = 1000.1271   # just past the deadline (float sums)
        deadline = time.monotonic() + 10
        while len(flushes) < 4 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert flushes[3:] == [(0.127, 6)]
    assert [m.seq for m in replay(url_of(tmp_path / "s.h5"), backend)] == list(range(6))


def test_sigkilled_writer_leaves_readable_file_and_append_continues(tmp_path: Path, backend_name: str) -> None:
    path = tmp_path / "crash.h5"
    url = url_of(path)
    writer = child("hdf5-until-killed", url, backend_name)
    try:
        flushed = -1
        while flushed < 300:
            line = writer.stdout.readline()
            assert line.startswith("flushed "), line
            flushed = int(line.split()[1])
        os.kill(writer.pid, signal.SIGKILL)
    finally:
        finish(writer)
    assert writer.returncode == -signal.SIGKILL
    msgs = replay(url, backend_name)  # SWMR readers open a killed writer's file as it is
    assert len(msgs) >= flushed + 1
    assert [m.seq for m in msgs] == list(range(len(msgs)))
    assert all(m.data == joint_state(m.seq) for m in msgs)
    with dc.Publisher(url, backend=backend_name) as pub:
        assert pub.send(joint_state(len(msgs))) == len(msgs)
    with h5py.File(path, "r") as f:  # a clean close leaves a file any HDF5 tool opens
        np.testing.assert_array_equal(f["seq"][:], np.arange(len(msgs) + 1))


@pytest.mark.parametrize("keep", [0.02, 0.5])
def test_truncated_recording_is_a_frame_error(tmp_path: Path, backend_name: str, keep: float) -> None:
    """A recording cut short (a partial copy) is dc.FrameError for a subscriber and a publisher.
    SWMR reading skips HDF5's own size check: a follower returned rows of zeros read past
    the end, or hung in HDF5's retries long past its timeout."""
    full = tmp_path / "full.h5"
    with dc.Publisher(url_of(full), backend=backend_name) as pub:
        pub.send_many([joint_state(i) for i in range(5000)])
    data = full.read_bytes()
    cut = tmp_path / "cut.h5"
    cut.write_bytes(data[:int(len(data) * keep)])
    reader = child("hdf5-recv-once", url_of(cut), backend_name, "1")
    assert finish(reader, timeout=60).split() == ["FrameError"]
    with pytest.raises(dc.FrameError, match="truncated"):
        dc.Publisher(url_of(cut), backend=backend_name)
    reader = child("hdf5-recv-once", url_of(full), backend_name, "1")
    assert finish(reader, timeout=60).split() == ["seq", "4999"]


def test_recover_makes_a_killed_writers_file_plain_readable(tmp_path: Path, backend_name: str) -> None:
    path = tmp_path / "crash.h5"
    writer = child("hdf5-until-killed", url_of(path), backend_name)
    try:
        assert writer.stdout.readline().startswith("flushed ")
        os.kill(writer.pid, signal.SIGKILL)
    finally:
        finish(writer)
    assert hdf5.recover(str(path)) is True
    with h5py.File(path, "r") as f:
        assert f["seq"].shape[0] >= 50
    assert hdf5.recover(str(path)) is False
