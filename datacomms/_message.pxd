# dc.Message, compiled; the reference is datacomms/message.py.
cdef class Message:
    cdef public object data, seq, timestamp_ns, source

cdef Message make_message(object data, object seq, object timestamp_ns, object source)
