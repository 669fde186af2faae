# Stub of the compiled SampleQueue; the Python twin (backend/python/zenohq.py) is the reference.
import threading
from typing import Any


class SampleQueue:
    name: str
    size: int
    nbytes: int
    block: Any
    waiter: Any
    lock: threading.Lock
    overflows: int
    closed: bool
    def __init__(self, name: str, size: int, nbytes: int, block: Any) -> None: ...
    def on_sample(self, sample: Any) -> None: ...
    def get(self, deadline: float | None, timeout: float | None) -> tuple[bytes, Any, str]: ...
    def get_all(self, deadline: float | None, timeout: float | None) -> list[tuple[bytes, Any, str]]: ...
    def arm(self) -> bool: ...
    def close(self) -> None: ...
