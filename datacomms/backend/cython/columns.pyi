# Stub of the compiled column filler; the Python twin (backend/python/columns.py) is the reference.
from typing import Any

import numpy as np

def fill_columns(items: list[Any], keys: tuple[str, ...], out: np.ndarray) -> None: ...
