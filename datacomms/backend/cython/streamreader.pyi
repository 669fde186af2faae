# Stub of the compiled stream reader; the Python twin (backend/python/streamreader.py) is the reference.
from typing import Any, Callable

from ...message import Message

SMALL_COPY: int
HTTP_STARTS: tuple[bytes, ...]
TLS_START: bytes

def describe_garbage(head: bytes) -> str: ...

class FrameReader:
    framing: Any
    max_frame_size: int
    chunk: int
    buf: bytearray
    start: int
    end: int
    need: int
    spare: bytearray | None
    epoch: str | None
    seen: dict[str, int]
    expect: int | None
    source: str | None
    def __init__(self, framing: Any, max_frame_size: int, chunk: int = ...) -> None: ...
    def fill(self, sock: Any) -> int: ...
    def fill_fd(self, fd: int) -> int: ...
    def wait_fd(self, fd: int, wake_fd: int, timeout: float | None, spin_ns: int = 0,
                poll_first: bool = False) -> int: ...
    def next(self) -> tuple[Any, int, int, int] | None: ...
    def take(self, on_control: Callable[[Any], None], stats: Any, record: bool = True) -> Message | None: ...


class Gate:
    closed: bool
    busy: int
    def enter(self) -> bool: ...
    def leave(self) -> bool: ...
    def close(self) -> bool | None: ...


class DirectRecv:
    last_rx: float
    retired: bool
    def __init__(self, reader: FrameReader, on_control: Callable[[Any], None], stats: Any,
                 slow: Callable[[float | None, Exception | None, float | None], Message], fd: int = -1,
                 wake_fd: int = -1, gate: Gate | None = None, spin_ns: int = 0, dead_after: float = 1.0,
                 block: bool = False) -> None: ...
    def recv(self, timeout: float | None = None) -> Message: ...

def take_frame(frame: Any, source: Any, seen: dict[Any, int], stats: Any, max_frame_size: int,
               skipped: int = 0, origin: str | None = None) -> Message | None: ...
