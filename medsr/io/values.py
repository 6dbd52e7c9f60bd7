"""Casting intensities to a stored dtype."""

from __future__ import annotations

import numpy as np

from medsr.errors import MedsrError

DTYPES = ("uint8", "int8", "uint16", "int16", "uint32", "int32", "float32", "float64")


def check_dtype(dtype: str) -> np.dtype:
    """Validate a user-given output dtype name."""
    if dtype not in DTYPES:
        raise MedsrError(f"unsupported --dtype {dtype!r}; choose one of {', '.join(DTYPES)}")
    return np.dtype(dtype)


def cast_to(array: np.ndarray, dtype: np.dtype | str) -> np.ndarray:
    """Cast to ``dtype``; integer targets are rounded and clipped to the type's range."""
    dtype = np.dtype(dtype)
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        work = np.rint(array)
        np.clip(work, info.min, info.max, out=work)
        return work.astype(dtype)
    return array.astype(dtype, copy=False)
