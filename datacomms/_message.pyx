# cython: language_level=3
"""dc.Message, compiled: the same four attributes as the reference class in
datacomms/message.py, which exports this type when it is built, so there is
one Message type per process whichever backend made it. Readers in the
Cython backend build it with make_message (no Python-level call)."""


cdef class Message:
    """One received message (see datacomms/message.py)."""

    def __init__(self, data, seq, timestamp_ns, source=None):
        self.data = data
        self.seq = seq
        self.timestamp_ns = timestamp_ns
        self.source = source

    def __repr__(self):
        kind = type(self.data).__name__
        src = "" if self.source is None else f", source={self.source!r}"
        return f"Message(seq={self.seq}, timestamp_ns={self.timestamp_ns}{src}, data=<{kind}>)"


cdef Message make_message(object data, object seq, object timestamp_ns, object source):
    cdef Message m = Message.__new__(Message)
    m.data = data
    m.seq = seq
    m.timestamp_ns = timestamp_ns
    m.source = source
    return m
