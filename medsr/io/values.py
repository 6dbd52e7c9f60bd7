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


#: elements rounded at a time for an integer cast (bounds the float copy to ~16 MiB)
CAST_CHUNK = 4 * 2**20


def cast_to(array: np.ndarray, dtype: np.dtype | str) -> np.ndarray:
    """Cast to ``dtype``; integer targets are rounded and clipped to the type's range, a chunk
    at a time, so no full-size float copy is made."""
    dtype = np.dtype(dtype)
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        src = np.asarray(array)
        out = np.empty(src.shape, dtype=dtype)
        if src.ndim == 0:
            return np.clip(np.rint(src), info.min, info.max).astype(dtype)
        rows = max(1, CAST_CHUNK // max(1, src[0].size))
        for start in range(0, src.shape[0], rows):
            work = np.rint(src[start:start + rows])
            np.clip(work, info.min, info.max, out=work)
            out[start:start + rows] = work
        return out
    return array.astype(dtype, copy=False)
