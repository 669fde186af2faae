"""URL parsing and dispatch of a URL's scheme to its transport."""

from __future__ import annotations

import importlib
from typing import NamedTuple

from .errors import DataCommsError

# scheme -> (module, publisher class, subscriber class); modules load on first use.
TRANSPORTS: dict[str, tuple[str, str, str]] = {
    "shm": ("datacomms.transports.shm", "ShmPublisher", "ShmSubscriber"),
    "tcp": ("datacomms.transports.tcp", "TcpPublisher", "TcpSubscriber"),
    "udp": ("datacomms.transports.udp", "UdpPublisher", "UdpSubscriber"),
    "json": ("datacomms.transports.jsonfile", "JsonPublisher", "JsonSubscriber"),
    "hdf5": ("datacomms.transports.hdf5", "Hdf5Publisher", "Hdf5Subscriber"),
    "zenoh": ("datacomms.transports.zenohbus", "ZenohPublisher", "ZenohSubscriber"),
}


class URL(NamedTuple):
    scheme: str
    rest: str
    raw: str


def parse(url: str) -> URL:
    """Splits 'scheme://rest', checking there is a scheme and something after it."""
    if not isinstance(url, str):
        raise DataCommsError(f"a datacomms URL is a string like 'shm://name', not {type(url).__name__}")
    scheme, sep, rest = url.partition("://")
    if not sep or not scheme or not rest:
        raise DataCommsError(f"bad URL {url!r}: expected scheme://address, e.g. shm://joints or tcp://127.0.0.1:8000")
    return URL(scheme.lower(), rest, url)


def resolve(url: str, role: str) -> tuple[URL, type]:
    """The parsed URL and the class implementing role ('publisher' or 'subscriber') for its scheme."""
    u = parse(url)
    entry = TRANSPORTS.get(u.scheme)
    if entry is None:
        known = ", ".join(f"{s}://" for s in sorted(TRANSPORTS)) or "none"
        raise DataCommsError(f"unknown URL scheme {u.scheme!r} in {url!r}; known schemes: {known}")
    module = importlib.import_module(entry[0])
    return u, getattr(module, entry[1] if role == "publisher" else entry[2])
