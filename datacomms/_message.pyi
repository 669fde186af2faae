# Stub of the compiled Message; the reference is datacomms/message.py.
from typing import Any

class Message:
    data: Any
    seq: int | None
    timestamp_ns: int
    source: str | None
    def __init__(self, data: Any, seq: int | None, timestamp_ns: int, source: str | None = None) -> None: ...
