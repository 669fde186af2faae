"""Coverage-guided fuzzing of the frame decoder (atheris / libFuzzer), differential:
both backends get every input; each must either decode it or raise FrameError,
and they must agree on which, and on what the frame says.

    python tests/fuzz/fuzz_frame.py -max_total_time=60 tests/fuzz/corpus/frame

Coverage guidance sees the Python reference and the shared meta checks; the
compiled decoder runs on the same inputs, so a crash or an out-of-bounds read
there (run it under the sanitizer build, see .ci/run) still shows.
"""

from __future__ import annotations

import sys

import atheris

with atheris.instrument_imports():
    import datacomms as dc
    from datacomms.backend import _meta  # noqa: F401  (instrumented for coverage)
    from datacomms.backend.python import framing as py_framing

cy_framing = dc.backend.get("cython").framing


def _outcome(framing, data: bytes):
    try:
        value, seq, ts, flags, n = framing.decode(data, 0, 1 << 20)
    except dc.FrameError:
        return None
    return type(value).__name__, seq, ts, flags, n


def test_one_input(data: bytes) -> None:
    a, b = _outcome(py_framing, data), _outcome(cy_framing, data)
    if a != b:
        raise AssertionError(f"backends disagree on {data[:80]!r}...: python {a}, cython {b}")


if __name__ == "__main__":
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()
