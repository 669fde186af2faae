"""Benchmarks run apart from the tests: `pytest benchmarks/` (see BENCHMARKS.md)."""

from __future__ import annotations

import json
from typing import Any, Callable

import pytest

import datacomms as dc

BACKENDS = ["cython", "python"]


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> dc.backend.Backend:
    return dc.backend.get(request.param)


def joint_state() -> dict:
    """The seed scenario's message: a timestamp and eight joint positions."""
    return {"timestamp": 1732400000.123456, **{f"joint_{i}": 0.1 * i + 0.0123 for i in range(1, 9)}}


def run_once(benchmark: Any, fn: Callable[[], Any]) -> Any:
    """Runs a whole scenario once under pytest-benchmark; its figures go to extra_info and stdout."""
    result = benchmark.pedantic(fn, rounds=1, iterations=1)
    benchmark.extra_info["result"] = result
    print(json.dumps(result, indent=1))
    return result
