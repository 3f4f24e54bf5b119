"""Gaia DR3 XP continuous mean spectra tables (``xp_continuous_mean_spectrum``): ECSV, CSV or FITS.

Columns: ``source_id`` (int64, kept as object_id), ``bp_coefficients`` and
``rp_coefficients`` (55 Hermite coefficients each), ``bp_coefficient_errors`` and
``rp_coefficient_errors``; ``ra``/``dec`` are required here (the archive's XP table has no
positions: join it with ``gaia_source`` first) because every catalog row needs a place on the
sky. Arrays may be native vector columns (FITS, ECSV) or text such as ``"[0.1, 0.2, ...]"``
(the archive's CSV). Written as MMU does: ``coeff`` = 55 BP then 55 RP, ``coeff_error`` alike.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from astropy.table import Table

from engine.data import schema
from engine.data.readers import columns as cols
from engine.data.readers.base import FileScan, check_positions, check_unique_ids, fail

ARRAY_COLUMNS = ("bp_coefficients", "rp_coefficients", "bp_coefficient_errors", "rp_coefficient_errors")


def looks_like_table(names) -> bool:
    return cols.find(names, "bp_coefficients") is not None or cols.find(names, "rp_coefficients") is not None


def read_table(path: Path) -> Table:
    fmt = {".ecsv": "ascii.ecsv", ".csv": "ascii.csv"}.get(path.suffix.lower())
    try:
        if fmt is None:
            return Table.read(path, memmap=True)
        return Table.read(path, format=fmt)
    except Exception as exc:
        raise fail(path, None, f"cannot read as a table (truncated or corrupt?): {exc}") from exc


def _vectors(path: Path, table: Table, name: str) -> np.ndarray:
    col = cols.find(table.colnames, name)
    if col is None:
        raise fail(path, name, f"missing column; Gaia XP tables need {list(ARRAY_COLUMNS)}")
    values = table[col]
    if values.dtype.kind in "iuf" and values.ndim == 2:
        arr = np.asarray(values, np.float64)
    else:
        try:
            arr = np.stack([_parse(v) for v in values])
        except ValueError as exc:
            raise fail(path, col, f"cannot parse coefficient arrays: {exc}") from exc
    if arr.shape[1:] != (schema.XP_N_COEFF,):
        raise fail(path, col, f"shape {arr.shape}, expected (n, {schema.XP_N_COEFF})")
    return arr


def _parse(value) -> np.ndarray:
    if value is np.ma.masked:  # an empty CSV field: a source without XP spectra
        return np.full(schema.XP_N_COEFF, np.nan)
    if isinstance(value, np.ndarray | list | tuple):
        return np.asarray(value, np.float64)
    text = value.decode() if isinstance(value, bytes) else str(value)
    text = text.strip().strip("[]()")
    parts = [p for p in text.replace(",", " ").split() if p and p not in ("--", "null", "nan", "NaN")]
    if not parts:  # the archive leaves the field empty for sources without XP spectra
        return np.full(schema.XP_N_COEFF, np.nan)
    return np.array([float(p) for p in parts], np.float64)


def scan(path: Path, table: Table | None = None) -> FileScan:
    table = read_table(path) if table is None else table
    n = len(table)
    if n == 0:
        raise fail(path, None, "table has no rows")
    id_col = cols.find(table.colnames, "source_id")
    if id_col is None:
        raise fail(path, "source_id", "missing column")
    if table[id_col].dtype.kind not in "iu":
        raise fail(path, id_col, f"dtype {table[id_col].dtype}, expected int64 Gaia source_id")
    ids = np.asarray(table[id_col], np.int64)
    check_unique_ids(path, id_col, ids)
    ra_col, dec_col = cols.find(table.colnames, "ra"), cols.find(table.colnames, "dec")
    if ra_col is None or dec_col is None:
        raise fail(
            path,
            "ra" if ra_col is None else "dec",
            "missing column; join the XP table with gaia_source for positions",
        )
    ra, dec = check_positions(path, np.asarray(table[ra_col]), np.asarray(table[dec_col]), ra_col, dec_col)
    bp, rp, bpe, rpe = (_vectors(path, table, c) for c in ARRAY_COLUMNS)
    coeff = np.concatenate([bp, rp], axis=1)
    keep = np.isfinite(coeff).any(axis=1)
    if not keep.any():
        raise fail(path, "bp_coefficients", f"all {n} sources are NaN-only")

    def get(name):
        c = cols.find(table.colnames, name)
        return None if c is None or table[c].dtype.kind not in "iuf" else np.asarray(table[c], np.float64)

    scalars = cols.scalar_columns("xp_gaia", get)
    probs = {
        k: get(k)
        for k in (
            "classprob_dsc_combmod_star",
            "classprob_dsc_combmod_quasar",
            "classprob_dsc_combmod_galaxy",
        )
    }
    kind = cols.kind_from_gaia({k: v for k, v in probs.items() if v is not None}, n)
    sel = np.flatnonzero(keep)
    catalog = (
        pd.DataFrame(
            {"object_id": ids, "name": [str(i) for i in ids], "ra": ra, "dec": dec, "kind": kind, **scalars}
        )
        .iloc[sel]
        .reset_index(drop=True)
    )
    coeff_err = np.concatenate([bpe, rpe], axis=1)

    def read(chunk: int):
        for start in range(0, len(sel), chunk):
            rows = sel[start : start + chunk]
            yield (
                ids[rows],
                {"coeff": coeff[rows].astype(np.float32), "coeff_error": coeff_err[rows].astype(np.float32)},
            )

    return FileScan(
        path=path,
        source="xp_gaia",
        catalog=catalog,
        rows=sel,
        read_arrays=read,
        n_skipped=int(n - keep.sum()),
        kind_label=f"Gaia XP table ({path.suffix.lstrip('.') or 'fits'})",
    )
