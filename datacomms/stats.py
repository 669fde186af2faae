"""``dc.Stats``: the statistics type every subscriber exposes as ``sub.stats``.

The reference implementation lives in backend/python/stats.py; the Cython
backend has a compiled twin with the same interface, registered as a virtual
subclass so ``isinstance(sub.stats, dc.Stats)`` holds for both.
"""

from __future__ import annotations

import abc

from .backend.python.stats import Stats as _ReferenceStats


class Stats(abc.ABC):
    """What one subscriber has received, lost, skipped, and how fast and late it came.

    See backend/python/stats.py for the meaning of every field.
    """


Stats.register(_ReferenceStats)

try:
    from .backend.cython.stats import Stats as _CompiledStats
except ImportError:  # the compiled backend is not built
    pass
else:
    Stats.register(_CompiledStats)
