"""The Stats object a network subscriber keeps: the backend's compiled one
when the backend has it (backend.stats), else the reference in datacomms.stats."""

from __future__ import annotations

from typing import Any


def new_stats(be: Any) -> Any:
    mod = getattr(be, "stats", None)
    if mod is not None and hasattr(mod, "Stats"):
        return mod.Stats()
    from ..stats import Stats
    return Stats()
