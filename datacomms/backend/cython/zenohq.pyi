# Stub of the compiled Sender, SampleQueue and ChannelQueue; the Python twin (backend/python/zenohq.py) is the reference.
import threading
from typing import Any

from ...message import Message


class Sender:
    name: str
    put: Any
    large: Any
    large_min: int
    seq: int
    closed: bool
    why: str
    @property
    def busy(self) -> int: ...
    def __init__(self, name: str, put: Any, large: Any, large_min: int) -> None: ...
    def send(self, data: Any, timeout: float | None = None) -> int: ...


class SampleQueue:
    name: str
    size: int
    nbytes: int
    block: Any
    waiter: Any
    lock: threading.Lock
    overflows: int
    bad_frames: int
    duplicates: int
    closed: bool
    why: str
    stats: Any
    max_frame_size: int
    seen: dict[Any, int]
    pending_skip: dict[Any, int]
    def __init__(self, name: str, size: int, nbytes: int, block: Any, stats: Any, max_frame_size: int) -> None: ...
    def on_sample(self, sample: Any) -> None: ...
    def retire(self, source: Any) -> None: ...
    def get(self, deadline: float | None, timeout: float | None) -> tuple[bytes, Any, str]: ...
    def accept(self, frame: bytes, source: Any, key: str) -> Message | None: ...
    def recv(self, timeout: float | None = None) -> Message: ...
    def get_all(self, deadline: float | None, timeout: float | None) -> list[tuple[bytes, Any, str]]: ...
    def arm(self) -> bool: ...
    def close(self) -> None: ...


class ChannelQueue(SampleQueue):
    handler: Any
    def attach(self, handler: Any, error: Any) -> None: ...
    def drain(self, seconds: float = 1.0) -> None: ...
