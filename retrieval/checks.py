"""Input checks shared by the package: every bad input becomes a ValueError that names what is
wrong and what would be accepted, before any index is built."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

# rows checked for NaN/inf at once: bounds the temporary boolean array, whatever the database size
_FINITE_CHECK_BYTES = 256 << 20


def check_codes(x, name: str) -> None:
    """Check that ``x`` is a non-empty 2-D floating array-like ``[n, d]`` with finite values.

    Args:
        x: np.ndarray, np.memmap or any array-like with ``shape``, ``dtype`` and row slicing.
        name: what the caller calls it ("database", "queries"), used in the messages.

    Raises:
        ValueError: not 2-D, empty, not floating point, or containing NaN or inf (the first bad
            row is named). Memmaps are read chunk by chunk for the check.
    """
    shape = getattr(x, "shape", None)
    if shape is None or len(shape) != 2:
        raise ValueError(f"{name} must be a 2-D float array [n, d]; got shape {shape}")
    n, d = shape
    if n == 0 or d == 0:
        raise ValueError(f"{name} is empty (shape {tuple(shape)}); it needs at least one row and one dimension")
    dtype = np.dtype(getattr(x, "dtype", np.float64))
    if dtype.kind != "f":
        raise ValueError(f"{name} must hold floats (float16, float32 or float64); got dtype {dtype}")
    rows = max(1, _FINITE_CHECK_BYTES // (d * dtype.itemsize))
    for i0 in range(0, n, rows):
        block = np.asarray(x[i0 : i0 + rows])
        bad = ~np.isfinite(block).all(axis=1)
        if bad.any():
            row = i0 + int(np.argmax(bad))
            raise ValueError(f"{name} row {row} contains NaN or inf; codes must be finite numbers")


def check_same_width(queries, database) -> int:
    """Return the common width ``d`` of ``queries [nq, d]`` and ``database [nb, d]``."""
    dq, db = queries.shape[1], database.shape[1]
    if dq != db:
        raise ValueError(
            f"queries have {dq} dimensions but the database has {db}; both must be codes of the same length"
        )
    return int(db)


def check_R(R, n_database: int) -> int:
    """Return ``R`` as an int after checking ``1 <= R <= n_database``."""
    if isinstance(R, bool) or not isinstance(R, (int, np.integer)):
        raise ValueError(f"R must be a positive integer; got {R!r}")
    if R < 1:
        raise ValueError(f"R must be at least 1; got {R}")
    if R > n_database:
        raise ValueError(
            f"R = {R} is larger than the database ({n_database} rows); use R <= {n_database} or a larger database"
        )
    return int(R)


def check_dims(dims: Sequence[int] | None, code_length: int) -> list[int] | None:
    """Return ``dims`` as sorted unique ints in ``[1, code_length]`` (None stays None)."""
    if dims is None:
        return None
    out = []
    for m in dims:
        if isinstance(m, bool) or not isinstance(m, (int, np.integer)):
            raise ValueError(f"code lengths must be integers in [1, {code_length}]; got {m!r}")
        if m < 1 or m > code_length:
            raise ValueError(
                f"code length {m} is outside [1, {code_length}] (the codes have {code_length} dimensions)"
            )
        out.append(int(m))
    if not out:
        raise ValueError(f"dims is empty; give at least one code length in [1, {code_length}] or None for the default")
    return sorted(set(out))


def check_positive_int(value, name: str) -> int:
    """Return ``value`` as an int after checking it is >= 1."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive integer; got {value!r}")
    return int(value)


def check_non_negative_int(value, name: str) -> int:
    """Return ``value`` as an int after checking it is >= 0."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
        raise ValueError(f"{name} must be an integer >= 0; got {value!r}")
    return int(value)
