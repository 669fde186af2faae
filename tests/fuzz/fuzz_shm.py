"""Coverage-guided fuzzing of the shm:// record reader: a ring segment is
built in memory with the ring writer, the input scribbles on it, and both
backends' Readers read it.

    python tests/fuzz/fuzz_shm.py -max_total_time=600 tests/fuzz/corpus/shm

Input layout (atheris.FuzzedDataProvider): the writer's backend and mode,
the messages it sends (sizes and kinds), then a list of (where, bytes)
scribbles over the shared header lines, the subscriber slots and the ring,
then the sequence of calls each reader makes (recv or latest, copying or
zero-copy). Every call with timeout=0 must return a Message or raise a
dc.DataCommsError (FrameError for a bad record, Timeout when nothing is
left, Closed when the closed flag was scribbled on): never another
exception, never a crash, never a hang (libFuzzer's -timeout catches
those). Without scribbles the readers must get exactly what was sent.
"""

from __future__ import annotations

import struct
import sys

import atheris

with atheris.instrument_imports():
    import datacomms as dc
    from datacomms.backend import _meta  # noqa: F401  (instrumented for coverage)
    from datacomms.backend import _segment as S
    from datacomms.backend.python import ring  # noqa: F401  (its reader half too)

import numpy as np

BACKENDS = (dc.backend.get("python"), dc.backend.get("cython"))
MAX_SUBS = 2
CAPACITIES = (1 << 12, 1 << 13)
DATA = S.data_offset(MAX_SUBS)
HEADER_WORDS = (S.OFF_TAIL, S.OFF_INTENT, S.OFF_HEAD, S.OFF_CLOSED, S.OFF_LATEST_LOCK, S.OFF_LATEST_POS,
                S.OFF_LATEST_LEN, S.OFF_LATEST_SEQ, S.OFF_SLOTS + S.SLOT_CURSOR,
                S.OFF_SLOTS + S.SLOT_SIZE + S.SLOT_CURSOR, S.OFF_SLOTS + S.SLOT_JOIN_SEQ)


def message(fdp: atheris.FuzzedDataProvider, i: int) -> object:
    kind = fdp.ConsumeIntInRange(0, 3)
    n = fdp.ConsumeIntInRange(0, 1500)
    if kind == 0:
        return bytes([i & 0xFF]) * n
    if kind == 1:
        return np.full(n // 8, i, dtype=np.int64)
    if kind == 2:
        return {"i": i, "s": "x" * (n % 100)}
    return {"i": i, "a": np.arange(n // 4, dtype=np.float32)}


def build(fdp: atheris.FuzzedDataProvider) -> tuple[bytearray, list, int]:
    cap = CAPACITIES[fdp.ConsumeIntInRange(0, 1)]
    block = fdp.ConsumeBool()
    writer_backend = BACKENDS[fdp.ConsumeIntInRange(0, 1)]
    buf = bytearray(S.segment_size(cap, MAX_SUBS))
    S.init_segment(buf, cap, MAX_SUBS, block, 1, 1)
    for i in range(MAX_SUBS):  # both subscribers joined before the first message
        struct.pack_into("<I", buf, S.OFF_SLOTS + i * S.SLOT_SIZE + S.SLOT_STATE, S.SLOT_ACTIVE)
    w = writer_backend.ring.Writer(buf)
    sent = []
    try:
        for i in range(fdp.ConsumeIntInRange(0, 30)):
            msg = message(fdp, i)
            try:
                w.send(msg, timeout=0)
            except (dc.Timeout, dc.FrameError):  # block mode full, or larger than the ring
                break
            sent.append(msg)
        if fdp.ConsumeBool():
            w.close()
    finally:
        del w
    return buf, sent, cap


def scribble(fdp: atheris.FuzzedDataProvider, buf: bytearray, cap: int) -> int:
    count = fdp.ConsumeIntInRange(0, 4)
    for _ in range(count):
        if fdp.ConsumeBool():
            where = HEADER_WORDS[fdp.ConsumeIntInRange(0, len(HEADER_WORDS) - 1)]
            blob = fdp.ConsumeBytes(8)
        else:
            where = DATA + fdp.ConsumeIntInRange(0, cap - 1)
            blob = fdp.ConsumeBytes(fdp.ConsumeIntInRange(1, 64))
        blob = blob[:len(buf) - where]
        buf[where:where + len(blob)] = blob
    return count


def same(a: object, b: object) -> bool:
    if isinstance(b, np.ndarray):
        return isinstance(a, np.ndarray) and a.dtype == b.dtype and np.array_equal(a, b)
    if isinstance(b, dict):
        return isinstance(a, dict) and a.keys() == b.keys() and all(same(a[k], b[k]) for k in b)
    if isinstance(b, bytes):
        return bytes(a) == b
    return a == b


def intact(name: str, reader: object, got: list, sent: list, calls: int) -> None:
    """An untouched ring read with recv only: consecutive seqs, each message as sent,
    everything up to the newest once a call found nothing left, and what a lap
    skipped before the first message counted as lost."""
    seqs = [s for s, _ in got]
    if seqs and seqs != list(range(seqs[0], seqs[0] + len(seqs))):
        raise AssertionError(f"{name} reader: seqs {seqs} are not consecutive")
    for seq, value in got:
        if value is not None and not same(value, sent[seq]):
            raise AssertionError(f"{name} reader: message {seq} differs from what was sent")
    if len(got) < calls and sent and (not seqs or seqs[-1] != len(sent) - 1):
        raise AssertionError(f"{name} reader stopped at {seqs[-1:]} of {len(sent)} messages")
    if seqs and reader.stats.lost != seqs[0]:
        raise AssertionError(f"{name} reader: lost {reader.stats.lost}, first seq {seqs[0]}")


def test_one_input(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    buf, sent, cap = build(fdp)
    scribbled = scribble(fdp, buf, cap)
    calls = [(fdp.ConsumeBool(), fdp.ConsumeBool()) for _ in range(fdp.ConsumeIntInRange(1, 40))]
    for slot, backend in enumerate(BACKENDS):
        reader = backend.ring.Reader(buf, slot)
        got = []
        try:
            for use_latest, copy in calls:
                try:
                    m = (reader.latest if use_latest else reader.recv)(timeout=0, copy=copy)
                except dc.DataCommsError:
                    continue
                got.append((m.seq, m.data if copy else None))
                del m
            if not scribbled and not any(latest for latest, _ in calls):
                intact(backend.name, reader, got, sent, len(calls))
        finally:
            reader.close()


if __name__ == "__main__":
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()
