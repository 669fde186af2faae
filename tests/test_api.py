"""The public surface that needs no transport: errors, Message, URL dispatch."""

from __future__ import annotations

import pytest

import datacomms as dc


def test_error_hierarchy():
    assert issubclass(dc.Timeout, dc.DataCommsError) and issubclass(dc.Timeout, TimeoutError)
    assert issubclass(dc.Closed, dc.DataCommsError)
    assert issubclass(dc.FrameError, dc.DataCommsError) and issubclass(dc.FrameError, ValueError)


def test_message_fields_and_repr():
    m = dc.Message(b"abc", 3, 99)
    assert (m.data, m.seq, m.timestamp_ns) == (b"abc", 3, 99)
    assert "seq=3" in repr(m) and "bytes" in repr(m)
    with pytest.raises(AttributeError):
        m.other = 1  # slots: no stray attributes


@pytest.mark.parametrize("cls", [dc.Publisher, dc.Subscriber])
def test_unknown_scheme_is_named(cls):
    with pytest.raises(dc.DataCommsError, match="unknown URL scheme 'carrier'"):
        cls("carrier://pigeon")


@pytest.mark.parametrize("url", ["joints", "shm://", "://x", 5])
def test_malformed_url(url):
    with pytest.raises(dc.DataCommsError, match="URL"):
        dc.Publisher(url)


def test_version_and_typed():
    import importlib.resources

    assert dc.__version__
    assert importlib.resources.files("datacomms").joinpath("py.typed").is_file()
