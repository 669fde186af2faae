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


@pytest.fixture(scope="session", autouse=True)
def neutral_cwd(tmp_path_factory: pytest.TempPathFactory):
    """Runs the suite outside the checkout, so child processes (python -c, -m,
    spawn) import the installed package, never the uncompiled source tree."""
    old = os.getcwd()
    os.chdir(tmp_path_factory.mktemp("cwd"))
    yield
    os.chdir(old)


@pytest.fixture(params=_backend_params())
def backend(request: pytest.FixtureRequest) -> dc.backend.Backend:
    """The backend under test; parametrised over cython and python."""
    return dc.backend.get(request.param)


@pytest.fixture
def backend_name(backend: dc.backend.Backend) -> str:
    return backend.name


# Every name the shm_name fixture hands out in this run; the leak check looks
# for exactly these, so other programs' segments (or a parallel test run) never
# make a test fail.
_ISSUED: set[str] = set()


def _leftovers() -> set[str]:
    try:
        present = set(os.listdir("/dev/shm"))
    except FileNotFoundError:
        return set()
    return {n for n in present if any(name in n for name in _ISSUED)}


@pytest.fixture
def shm_name() -> str:
    """A shared-memory name no other test (or earlier run) uses."""
    name = "t" + uuid.uuid4().hex[:12]
    _ISSUED.add(name)
    return name


@pytest.fixture(autouse=True)
def no_shm_leak():
    """No test leaves a segment of a name this run handed out behind in /dev/shm."""
    before = _leftovers()
    yield
    leaked = _leftovers() - before
    assert not leaked, f"test left shared-memory segments behind: {sorted(leaked)}"
