"""What every reader returns: one validated input file as a catalog plus a way to stream its arrays.

Ingest is two passes. ``scan`` validates a whole file (structure, dtypes, shapes, bands, ids,
NaN-only arrays) and returns its catalog, so a bad file is rejected before anything is written;
``read_arrays`` then streams the file's arrays, already in the dataset contract's layout, in
chunks of objects so a large file is never held in memory.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from engine.errors import ValidationError

#: Chunk of objects streamed per array read (an LS 160x160x4 float32 object is ~0.8 MB with ivar).
CHUNK = 256


@dataclass
class FileScan:
    """A validated input file: its catalog (one row per kept object) and how to read its arrays.

    ``catalog`` holds ``object_id`` (int64, the survey's id), ``ra``, ``dec``, ``kind``, any
    scalar columns of the schema it provides, and ``name`` (the survey's own id as text).
    ``rows`` are the file rows kept (objects whose arrays are all NaN are dropped and counted
    in ``n_skipped``). ``read_arrays(chunk)`` yields ``(object_ids, fields)`` in schema layout.
    """

    path: Path
    source: str
    catalog: pd.DataFrame
    rows: np.ndarray
    read_arrays: Callable[[int], Iterator[tuple[np.ndarray, dict[str, np.ndarray]]]]
    n_skipped: int = 0
    notes: list[str] = field(default_factory=list)
    kind_label: str = ""  # e.g. "MMU legacysurvey", "SDSS spec FITS": for the report
    #: optional schema fields this file's chunks carry; ingest writes an optional field only when
    #: every file of the source has it, so the HDF5 datasets stay row-aligned with object_id
    optional_fields: frozenset[str] = frozenset()


def fail(path: Path | str, fld: str | None, message: str) -> ValidationError:
    """One-line validation error naming the file and the field at fault."""
    where = f"{path}" if fld is None else f"{path}: field {fld!r}"
    return ValidationError(f"{where}: {message}")


def require_finite_rows(path: Path, fld: str, arr: np.ndarray) -> np.ndarray:
    """Rows of ``arr`` (objects x ...) that hold at least one finite value; error if none do."""
    flat = arr.reshape(len(arr), -1)
    good = np.isfinite(flat).any(axis=1)
    if len(arr) and not good.any():
        raise fail(path, fld, f"all {len(arr)} objects are NaN-only")
    return good


def check_unique_ids(path: Path, fld: str, ids: np.ndarray) -> None:
    uniq, counts = np.unique(ids, return_counts=True)
    if (counts > 1).any():
        dup = uniq[counts > 1]
        raise fail(path, fld, f"duplicated ids, e.g. {dup[0]!r} appears {counts[counts > 1][0]} times")


def check_positions(path: Path, ra: np.ndarray, dec: np.ndarray, ra_name: str = "ra", dec_name: str = "dec"):
    ra = np.asarray(ra, dtype=np.float64)
    dec = np.asarray(dec, dtype=np.float64)
    bad_ra = ~np.isfinite(ra) | (ra < 0) | (ra >= 360)
    if bad_ra.any():
        raise fail(path, ra_name, f"value {ra[bad_ra][0]!r} out of range; accepted: 0 <= ra < 360 deg")
    bad_dec = ~np.isfinite(dec) | (dec < -90) | (dec > 90)
    if bad_dec.any():
        raise fail(path, dec_name, f"value {dec[bad_dec][0]!r} out of range; accepted: -90 <= dec <= 90 deg")
    return ra, dec
