# cython: language_level=3
"""Dicts of numbers to a float64 matrix, one row per key (the hdf5:// joint-state
fast path of ``send_many``), compiled: one PyDict_GetItem and one C conversion
per value, where the Python twin (backend/python/columns.py, the reference:
same contract, same errors) builds an intermediate matrix with numpy.

Values of exact type float or int take the C path; numpy scalars and 0-d
arrays, rare in a batch, are checked in Python.
"""

cimport cython
from cpython.dict cimport PyDict_GetItem, PyDict_Next, PyDict_Size
from cpython.float cimport PyFloat_AS_DOUBLE
from cpython.long cimport PyLong_AsLongLongAndOverflow, PyLong_AsUnsignedLongLong
from cpython.object cimport PyObject
from cpython.tuple cimport PyTuple_GET_ITEM, PyTuple_GET_SIZE

import numpy as np

cdef extern from "Python.h":
    bint PyDict_CheckExact(object o)
    bint PyFloat_Check(PyObject* o)
    bint PyLong_Check(PyObject* o)

_NUMPY_NUMBERS = (np.bool_, np.integer, np.floating)


cdef bint _int_value(object v, double* x):
    """An int within [-2**63, 2**64) as a double; False (no error set) when out of range."""
    cdef int overflow = 0
    cdef long long s = PyLong_AsLongLongAndOverflow(v, &overflow)
    cdef unsigned long long u
    if overflow == 0:
        x[0] = <double>s
        return True
    if overflow < 0:
        return False
    try:
        u = PyLong_AsUnsignedLongLong(v)
    except OverflowError:
        return False
    x[0] = <double>u
    return True


cdef bint _other_value(object v, double* x):
    """A numpy bool/integer/floating scalar or 0-d array of one, as a double."""
    if isinstance(v, np.ndarray):
        if v.ndim != 0 or v.dtype.kind not in "biuf":
            return False
    elif not isinstance(v, _NUMPY_NUMBERS):
        return False
    x[0] = float(v)
    return True


@cython.boundscheck(False)
def fill_columns(list items, tuple keys, double[:, ::1] out):
    """Writes float(items[i][keys[j]]) into out[j, i] (see backend/python/columns.py)."""
    cdef Py_ssize_t n = len(items), k = PyTuple_GET_SIZE(keys), i, j
    cdef PyObject* v
    cdef object item
    cdef double x = 0.0
    cdef bint bad = False, walk
    cdef double* col
    cdef Py_ssize_t pos
    cdef PyObject* key
    cdef PyObject* dkey
    if out.shape[0] != k or out.shape[1] != n:
        raise ValueError(f"out must be a C-contiguous float64 array of shape {(k, n)}")
    if k == 0:
        raise ValueError("fill_columns needs at least one key")
    if n == 0:
        return
    for i in range(n):
        item = items[i]
        if not PyDict_CheckExact(item) or PyDict_Size(item) != k:
            raise TypeError(f"items must be dicts with the {k} keys {list(keys)}")
    for i in range(n):
        item = items[i]
        col = &out[0, i]
        pos = 0
        walk = True
        for j in range(k):
            key = PyTuple_GET_ITEM(keys, j)
            # Dicts built alike hold the very key objects in the same order: walk
            # the entries comparing pointers, and look keys up only from the
            # first one that differs (other key objects, or another order).
            if walk and not (PyDict_Next(item, &pos, &dkey, &v) and dkey == key):
                walk = False
            if not walk:
                v = PyDict_GetItem(item, <object>key)
                if v == NULL:
                    raise KeyError(<object>key)
            if bad:
                continue  # a missing key further on is reported first, as the Python twin does
            if PyFloat_Check(v):
                col[j * n] = PyFloat_AS_DOUBLE(<object>v)
            elif PyLong_Check(v) and _int_value(<object>v, &x):
                col[j * n] = x
            elif not PyLong_Check(v) and _other_value(<object>v, &x):
                col[j * n] = x
            else:
                bad = True
    if bad:
        raise ValueError("a value is not a number")
