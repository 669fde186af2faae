"""Shared fixtures: the backend every backend-level test runs on, unique names
for shared-memory segments, and a check that no test leaves one behind."""

from __future__ import annotations

import os
import uuid

import pytest

import datacomms as dc

NO_EXTENSIONS = os.environ.get("DATACOMMS_NO_EXTENSIONS", "") not in ("", "0")
# The backends this run can load: cross-backend tests pair each with each.
AVAILABLE = ["python"] if NO_EXTENSIONS else ["cython", "python"]


def _backend_params() -> list:
    # A missing Cython backend fails the run, except under an explicit DATACOMMS_NO_EXTENSIONS=1.
    if NO_EXTENSIONS:
        return [pytest.param("cython", marks=pytest.mark.skip(reason="DATACOMMS_NO_EXTENSIONS=1")), "python"]
    return ["cython", "python"]


@pytest.fixture(params=_backend_params())
def backend(request: pytest.FixtureRequest) -> dc.backend.Backend:
    """The backend under test; parametrised over cython and python."""
    return dc.backend.get(request.param)


@pytest.fixture
def backend_name(backend: dc.backend.Backend) -> str:
    return backend.name


def _shm_entries() -> set[str]:
    try:
        return {n for n in os.listdir("/dev/shm") if n.startswith("dc")}
    except FileNotFoundError:
        return set()


@pytest.fixture
def shm_name() -> str:
    """A shared-memory name no other test (or earlier run) uses."""
    return "t" + uuid.uuid4().hex[:12]


@pytest.fixture(autouse=True)
def no_shm_leak():
    """Every test leaves /dev/shm as it found it."""
    before = _shm_entries()
    yield
    leaked = _shm_entries() - before
    assert not leaked, f"test left shared-memory segments behind: {sorted(leaked)}"
