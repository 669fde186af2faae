"""Dicts of numbers to a float64 matrix, one row per key (the hdf5:// joint-state
fast path of ``send_many``), in pure Python: the readable reference;
backend/cython/columns.pyx is its compiled twin.

``fill_columns(items, keys, out)`` writes ``float(items[i][keys[j]])`` into
``out[j, i]``; out is a C-contiguous float64 array of shape
(len(keys), len(items)), so each row is one column of the recording, ready to
write without a copy. A value is a number when it is a Python float, int
(bool included) within [-2**63, 2**64), a numpy bool, integer or floating
scalar, or a 0-d numpy array of those. Bad input raises, checked in this
order over the whole batch, with nothing but out touched:

- TypeError: an item is not a dict (exactly), or has not len(keys) keys;
- KeyError(key): the first item lacking a key (keys in order) lacks that key;
- ValueError: some value is not a number.
"""

from __future__ import annotations

import operator
from typing import Any

import numpy as np


def fill_columns(items: list[Any], keys: tuple[str, ...], out: np.ndarray) -> None:
    n, k = len(items), len(keys)
    if out.shape != (k, n) or out.dtype != np.float64 or not out.flags.c_contiguous:
        raise ValueError(f"out must be a C-contiguous float64 array of shape {(k, n)}")
    if not k:
        raise ValueError("fill_columns needs at least one key")
    if not n:
        return
    if set(map(type, items)) != {dict} or set(map(len, items)) != {k}:
        raise TypeError(f"items must be dicts with the {k} keys {list(keys)}")
    # one matrix built at C speed; a missing key raises KeyError(key) from the getter
    try:
        mat = np.array(list(map(operator.itemgetter(*keys), items)))
    except ValueError:  # ragged values: sequences among the numbers
        raise ValueError("a value is not a number") from None
    if mat.dtype.kind not in "biuf" or mat.shape != ((n, k) if k > 1 else (n,)):
        raise ValueError("a value is not a number")
    out[...] = mat.reshape(n, k).T
