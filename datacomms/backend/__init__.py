"""Backend selection, the pyzmq way.

Two packages, ``backend.cython`` and ``backend.python``, hold modules of the
same names exposing the same API (``API`` below lists it; the loader checks
it). ``DATACOMMS_BACKEND=cython|python`` picks one and never falls back
silently; ``DATACOMMS_NO_EXTENSIONS=1`` means python, as it does at build
time; unset, the compiled backend is used when it is built, else the pure
Python one with one warning and the reason in ``fallback_reason``.

Transports take a backend as a parameter (``get(name)``), so one process can
run both side by side.
"""

from __future__ import annotations

import importlib
import os
import warnings
from types import ModuleType

NAMES = ("cython", "python")

# The names every backend module must export, module by module.
API: dict[str, tuple[str, ...]] = {
    "framing": (
        "HEADER_SIZE", "VERSION", "KIND_RAW", "KIND_ARRAY", "KIND_JSON", "KIND_JSON_BUFFERS",
        "FLAG_CONTROL", "DEFAULT_MAX_FRAME_SIZE", "pack_header", "unpack_header", "encode",
        "encode_bytes", "decode", "dumps_json", "loads_json",
    ),
    "stats": ("Stats",),
    "sendloop": ("SendLoop",),
    "ring": ("Writer", "Reader", "Loan"),
    "streamreader": ("FrameReader", "DirectRecv", "Gate", "SMALL_COPY", "describe_garbage", "take_frame"),
    "columns": ("fill_columns",),
    "zenohq": ("Sender", "SampleQueue"),
}


class Backend:
    """One loaded backend: ``name`` and one attribute per module of ``API``."""

    def __init__(self, name: str, modules: dict[str, ModuleType]) -> None:
        self.name = name
        for mod_name, mod in modules.items():
            setattr(self, mod_name, mod)

    def __repr__(self) -> str:
        return f"<datacomms backend {self.name!r}>"


_loaded: dict[str, Backend] = {}

_BUILD_HINT = ("build it with `pip install .` from a checkout (it needs a C compiler and Cython), "
               "without DATACOMMS_NO_EXTENSIONS set, or pick DATACOMMS_BACKEND=python")


def get(name: str | Backend | None = None) -> Backend:
    """The backend called name (a Backend passes through; None: the default one)."""
    if isinstance(name, Backend):
        return name
    if name is None:
        return _default
    if name not in NAMES:
        raise ValueError(f"unknown datacomms backend {name!r}; choose one of {', '.join(NAMES)}")
    backend = _loaded.get(name)
    if backend is None:
        backend = _loaded[name] = _load(name)
    return backend


def _load(name: str) -> Backend:
    modules = {}
    for mod_name, names in API.items():
        try:
            mod = importlib.import_module(f"{__name__}.{name}.{mod_name}")
        except ImportError as exc:
            if name == "cython":
                raise ImportError(f"the cython backend of datacomms is not built ({exc}); {_BUILD_HINT}") from exc
            raise
        missing = [n for n in names if not hasattr(mod, n)]
        if missing:
            raise ImportError(f"datacomms backend {name!r} module {mod_name} lacks {', '.join(missing)}")
        modules[mod_name] = mod
    return Backend(name, modules)


def _select() -> tuple[Backend, str | None]:
    requested = os.environ.get("DATACOMMS_BACKEND", "").strip().lower()
    if requested:
        if requested not in NAMES:
            raise ImportError(f"DATACOMMS_BACKEND={requested!r} is not one of {', '.join(NAMES)}")
        return get(requested), None
    if os.environ.get("DATACOMMS_NO_EXTENSIONS", "") not in ("", "0"):
        return get("python"), "DATACOMMS_NO_EXTENSIONS is set"
    try:
        return get("cython"), None
    except ImportError as exc:
        reason = str(exc)
    warnings.warn(f"datacomms is running its pure-Python backend: {reason}", RuntimeWarning, stacklevel=3)
    return get("python"), reason


_default: Backend
_default, fallback_reason = _select()
name: str = _default.name
