"""datacomms: one publish/subscribe API over shared memory, TCP, UDP, JSON and HDF5 files.

    import datacomms as dc
    with dc.Publisher("shm://joints") as pub:
        seq = pub.send({"timestamp": t, "joint_1": 0.1})
    with dc.Subscriber("shm://joints") as sub:
        msg = sub.recv(timeout=1.0)
"""

from __future__ import annotations

from . import backend
from .errors import Closed, DataCommsError, FrameError, Timeout
from .message import Message
from .pubsub import Publisher, Subscriber
from .stats import Stats

__version__ = "0.1.0"

__all__ = [
    "Closed", "DataCommsError", "FrameError", "Message", "Publisher", "Stats", "Subscriber", "Timeout",
    "backend", "__version__",
]
