"""backend.<name>.columns.fill_columns: dicts of numbers to one float64 row per key
(the hdf5:// send_many fast path). Both backends take the same values and raise the
same errors, in the same order of precedence."""

from __future__ import annotations

import json
from decimal import Decimal
from fractions import Fraction

import numpy as np
import pytest

import datacomms as dc
from conftest import NO_EXTENSIONS

KEYS = ("timestamp", "joint_1", "joint_2")

# values every backend takes (second element: the float it becomes)
GOOD = [
    (1.5, 1.5), (3, 3.0), (True, 1.0), (False, 0.0), (-(2 ** 63), -(2.0 ** 63)), (2 ** 64 - 1, 2.0 ** 64),
    (np.float32(0.5), 0.5), (np.float16(2), 2.0), (np.int8(-3), -3.0), (np.uint64(7), 7.0), (np.bool_(True), 1.0),
    (np.array(4.0), 4.0), (np.array(5), 5.0), (float("inf"), float("inf")),
]
# values no backend takes
BAD = [
    "1.5", b"1", None, [1.0], [1.0, 2.0], (1.0,), {"x": 1.0}, 1j, np.complex64(1), Decimal(1), Fraction(1, 2),
    2 ** 64, -(2 ** 63) - 1, 10 ** 400, np.datetime64(1, "s"), np.array([1.0]), np.array("x"), object(),
]


def fill(backend, items, keys=KEYS) -> np.ndarray:
    out = np.full((len(keys), len(items)), -1.0)
    backend.columns.fill_columns(items, keys, out)
    return out


def rows(n: int) -> list[dict]:
    return [{"timestamp": i * 0.5, "joint_1": float(i), "joint_2": -i} for i in range(n)]


def test_fills_one_row_per_key(backend) -> None:
    out = fill(backend, rows(5))
    np.testing.assert_array_equal(out, [[0, 0.5, 1, 1.5, 2], [0, 1, 2, 3, 4], [0, -1, -2, -3, -4]])
    assert out.flags.c_contiguous and out.dtype == np.float64


def test_keys_in_any_order_and_key_objects_from_anywhere(backend) -> None:
    """Dicts with their keys in another order, or other key objects (as json.loads
    makes them), or a mixture of both, give the same columns."""
    base = rows(6)
    mixed = [dict(reversed(list(d.items()))) if i % 2 else json.loads(json.dumps(d)) for i, d in enumerate(base)]
    np.testing.assert_array_equal(fill(backend, mixed), fill(backend, base))
    assert fill(backend, [], KEYS).shape == (3, 0)


@pytest.mark.parametrize("value, expected", GOOD, ids=[repr(v)[:20] for v, _ in GOOD])
def test_takes_numbers(backend, value, expected) -> None:
    items = rows(3)
    items[1]["joint_2"] = value
    assert fill(backend, items)[2, 1] == expected


@pytest.mark.parametrize("value", BAD, ids=[repr(v)[:20] for v in BAD])
def test_refuses_what_is_not_a_number(backend, value) -> None:
    items = rows(3)
    items[2]["joint_1"] = value
    with pytest.raises(ValueError, match="not a number"):
        fill(backend, items)


def test_refuses_items_that_are_not_dicts_with_the_keys(backend) -> None:
    for bad in ([1.0, 2.0, 3.0], {"timestamp": 0.0, "joint_1": 1.0}, {**rows(1)[0], "extra": 1.0}, None):
        with pytest.raises(TypeError, match="dicts with the 3 keys"):
            fill(backend, [*rows(2), bad])
    class Sub(dict):
        pass
    with pytest.raises(TypeError):
        fill(backend, [Sub(rows(1)[0])])


def test_error_precedence(backend) -> None:
    """Over the whole batch: not-a-dict first, then the first missing key, then a bad value."""
    bad_value = {"timestamp": "x", "joint_1": 1.0, "joint_2": 2.0}
    missing = {"timestamp": 0.0, "joint_1": 1.0, "joint_9": 2.0}
    with pytest.raises(TypeError):
        fill(backend, [bad_value, missing, {"timestamp": 0.0}])
    with pytest.raises(KeyError) as exc:
        fill(backend, [bad_value, missing])
    assert exc.value.args == ("joint_2",)


def test_checks_out(backend) -> None:
    with pytest.raises(ValueError):
        fill(backend, rows(2), ())
    with pytest.raises((ValueError, TypeError)):
        backend.columns.fill_columns(rows(2), KEYS, np.zeros((3, 3)))
    with pytest.raises((ValueError, TypeError)):
        backend.columns.fill_columns(rows(2), KEYS, np.zeros((3, 2), np.float32))


@pytest.mark.skipif(NO_EXTENSIONS, reason="DATACOMMS_NO_EXTENSIONS=1")
def test_backends_agree_on_random_batches() -> None:
    """Random batches drawn from good and bad values: the same columns or the same error."""
    cy, py = dc.backend.get("cython"), dc.backend.get("python")
    rng = np.random.default_rng(5)
    pool = [v for v, _ in GOOD] + BAD
    for _ in range(300):
        items = rows(int(rng.integers(1, 6)))
        for _ in range(int(rng.integers(0, 3))):
            d = items[int(rng.integers(len(items)))]
            choice = int(rng.integers(len(pool) + 2))
            if choice == len(pool):
                d.pop("joint_1")
                d["other"] = 0.0
            elif choice == len(pool) + 1:
                d.pop("joint_2")
            else:
                d[KEYS[int(rng.integers(3))]] = pool[choice]
        got = []
        for be in (cy, py):
            try:
                got.append(fill(be, items).tolist())
            except (TypeError, KeyError, ValueError) as exc:
                got.append((type(exc).__name__, exc.args))
        assert got[0] == got[1], items
