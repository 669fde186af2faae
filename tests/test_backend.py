"""Backend selection and API parity between the two backends."""

from __future__ import annotations

import inspect
import os
import subprocess
import sys
import tempfile

import pytest

import datacomms as dc
from conftest import NO_EXTENSIONS


def run_py(code: str, **env: str) -> subprocess.CompletedProcess:
    e = {k: v for k, v in os.environ.items() if not k.startswith("DATACOMMS_")}
    e.update(env)
    # from a neutral directory, so the installed package is imported, not a checkout's source tree
    return subprocess.run([sys.executable, "-c", code], env=e, capture_output=True, text=True, timeout=60,
                          cwd=tempfile.gettempdir())


@pytest.mark.skipif(NO_EXTENSIONS, reason="DATACOMMS_NO_EXTENSIONS=1: the build was asked to skip compiling")
def test_default_backend_is_cython_in_a_normal_install():
    """The guard: a build that silently failed to compile fails here."""
    r = run_py("import datacomms as dc; print(dc.backend.name, dc.backend.fallback_reason)")
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["cython", "None"]
    assert "RuntimeWarning" not in r.stderr


def test_env_var_picks_python():
    r = run_py("import datacomms as dc; print(dc.backend.name)", DATACOMMS_BACKEND="python")
    assert r.stdout.strip() == "python", r.stderr


def test_no_extensions_at_run_time_means_python_with_a_reason():
    r = run_py("import datacomms as dc; print(dc.backend.name); print(dc.backend.fallback_reason)",
               DATACOMMS_NO_EXTENSIONS="1")
    assert r.stdout.splitlines() == ["python", "DATACOMMS_NO_EXTENSIONS is set"], r.stderr


def test_unknown_backend_name_is_an_import_error():
    r = run_py("import datacomms", DATACOMMS_BACKEND="fortran")
    assert r.returncode != 0 and "fortran" in r.stderr and "ImportError" in r.stderr


def test_missing_cython_backend_says_how_to_build_it(tmp_path):
    """Asking for cython where it is not built is an ImportError naming the fix, never a silent fallback."""
    code = ("import sys, importlib.abc\n"
            "class Block(importlib.abc.MetaPathFinder):\n"
            "    def find_spec(self, name, path, target=None):\n"
            "        if name.startswith('datacomms.backend.cython.'):\n"
            "            raise ImportError('blocked for the test')\n"
            "sys.meta_path.insert(0, Block())\n"
            "import datacomms\n")
    r = run_py(code, DATACOMMS_BACKEND="cython")
    assert r.returncode != 0
    assert "not built" in r.stderr and "pip install" in r.stderr
    r = run_py(code + "print(datacomms.backend.name); print(datacomms.backend.fallback_reason)")
    assert r.returncode == 0 and r.stdout.splitlines()[0] == "python"
    assert "not built" in r.stdout and "RuntimeWarning" in r.stderr


def test_get_accepts_names_and_backends():
    b = dc.backend.get("python")
    assert dc.backend.get(b) is b and b.name == "python"
    with pytest.raises(ValueError):
        dc.backend.get("nope")


@pytest.mark.skipif(NO_EXTENSIONS, reason="DATACOMMS_NO_EXTENSIONS=1")
@pytest.mark.parametrize("module", sorted(dc.backend.API))
def test_api_parity(module):
    """Both backends export the declared names, with the same call signatures."""
    py = getattr(dc.backend.get("python"), module)
    cy = getattr(dc.backend.get("cython"), module)
    for name in dc.backend.API[module]:
        a, b = getattr(py, name), getattr(cy, name)
        if callable(a) and not isinstance(a, type):
            assert list(inspect.signature(a).parameters) == list(inspect.signature(b).parameters), name
        elif isinstance(a, type):
            public = {n for n in dir(a) if not n.startswith("_")}
            assert public <= set(dir(b)), (name, public - set(dir(b)))
        else:
            assert a == b, name
