"""Published embeddings in a Parquet table (e.g. AION embeddings of Legacy Survey DR10).

One row per object: an int64 id, ra, dec (deg), a list (or fixed-size list) of floats, and
optionally ``kind`` and any schema scalar column (``z``, ``flux_g``, ...). Column names are
mapped with :class:`EmbeddingColumns` (the CLI's ``--id-col`` ... flags). The file is read
in Parquet record batches, so millions of rows never need the whole table in memory: each
batch's vectors go straight into a float16 memory map.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from engine.data import schema
from engine.data.readers.base import fail

BATCH_ROWS = 65_536


@dataclass(frozen=True)
class EmbeddingColumns:
    id_col: str = "object_id"
    ra_col: str = "ra"
    dec_col: str = "dec"
    vector_col: str | None = None  # None: the table's only list-of-float column
    kind_col: str = "kind"


@dataclass
class TableInfo:
    path: Path
    rows: int
    dim: int
    vector_col: str
    kind_col: str | None
    scalar_cols: list[str]


def _is_float_list(t: pa.DataType) -> bool:
    return (pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t)) and (
        pa.types.is_floating(t.value_type) or pa.types.is_integer(t.value_type)
    )


def inspect(path: Path, cols: EmbeddingColumns) -> TableInfo:
    """Validate the table's schema and find the vector length from its first rows."""
    try:
        pf = pq.ParquetFile(path)
    except Exception as exc:
        raise fail(path, None, f"cannot open as Parquet (truncated or not Parquet?): {exc}") from exc
    sch = pf.schema_arrow
    names = sch.names
    for role, name in (("--id-col", cols.id_col), ("--ra-col", cols.ra_col), ("--dec-col", cols.dec_col)):
        if name not in names:
            raise fail(path, name, f"missing column (set {role}); table has {names}")
    if not pa.types.is_integer(sch.field(cols.id_col).type):
        raise fail(path, cols.id_col, f"type {sch.field(cols.id_col).type}, expected int64 ids")
    for name in (cols.ra_col, cols.dec_col):
        if not (pa.types.is_floating(sch.field(name).type) or pa.types.is_integer(sch.field(name).type)):
            raise fail(path, name, f"type {sch.field(name).type}, expected degrees as floats")
    if cols.vector_col is not None:
        if cols.vector_col not in names:
            raise fail(path, cols.vector_col, f"missing column (set --vector-col); table has {names}")
        vector_col = cols.vector_col
        if not _is_float_list(sch.field(vector_col).type):
            raise fail(path, vector_col, f"type {sch.field(vector_col).type}, expected a list of floats")
    else:
        lists = [f.name for f in sch if _is_float_list(f.type)]
        if len(lists) != 1:
            raise fail(
                path, "--vector-col", f"{len(lists)} list-of-float columns {lists}; name the vector column"
            )
        vector_col = lists[0]
    if pf.metadata.num_rows == 0:
        raise fail(path, None, "table has no rows")
    first = next(pf.iter_batches(batch_size=16, columns=[vector_col])).column(0)
    lengths = pc.list_value_length(first).to_numpy(zero_copy_only=False)
    dim = int(np.nanmax(lengths)) if len(lengths) else 0
    if dim < 1:
        raise fail(path, vector_col, "empty vectors")
    kind_col = cols.kind_col if cols.kind_col in names else None
    scalars = [c for c in schema.SCALAR_COLUMNS if c in names and c not in (cols.ra_col, cols.dec_col)]
    return TableInfo(path, pf.metadata.num_rows, dim, vector_col, kind_col, scalars)


@dataclass
class Batch:
    ids: np.ndarray
    ra: np.ndarray
    dec: np.ndarray
    kind: np.ndarray
    vectors: np.ndarray  # (n, dim) float32, rows of NaN where the table had null/non-finite vectors
    scalars: dict[str, np.ndarray]


def batches(info: TableInfo, cols: EmbeddingColumns, batch_rows: int | None = None) -> Iterator[Batch]:
    """Stream the table; raises ValidationError naming the file and column on bad content."""
    path = info.path
    wanted = [cols.id_col, cols.ra_col, cols.dec_col, info.vector_col, *info.scalar_cols]
    if info.kind_col:
        wanted.append(info.kind_col)
    try:
        it = pq.ParquetFile(path).iter_batches(batch_size=batch_rows or BATCH_ROWS, columns=wanted)
        for rb in it:
            yield _convert(info, cols, rb)
    except (OSError, pa.ArrowException) as exc:
        raise fail(path, None, f"cannot read row batch (truncated or corrupt?): {exc}") from exc


def _convert(info: TableInfo, cols: EmbeddingColumns, rb: pa.RecordBatch) -> Batch:
    path = info.path
    n = rb.num_rows
    idc = rb.column(cols.id_col)
    if idc.null_count:
        raise fail(path, cols.id_col, "null ids")
    ids = idc.to_numpy().astype(np.int64)
    ra = rb.column(cols.ra_col).to_numpy(zero_copy_only=False).astype(np.float64)
    dec = rb.column(cols.dec_col).to_numpy(zero_copy_only=False).astype(np.float64)
    bad = ~np.isfinite(ra) | (ra < 0) | (ra >= 360) | ~np.isfinite(dec) | (np.abs(dec) > 90)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise fail(
            path,
            cols.ra_col if not (0 <= ra[i] < 360) else cols.dec_col,
            f"position ({ra[i]!r}, {dec[i]!r}) of id {ids[i]} out of range",
        )
    vec = rb.column(info.vector_col)
    lengths = pc.list_value_length(vec).to_numpy(zero_copy_only=False)
    present = ~np.isnan(lengths.astype(np.float64)) if lengths.dtype.kind == "f" else np.ones(n, bool)
    if vec.null_count:
        present &= ~vec.is_null().to_numpy(zero_copy_only=False)
    if (lengths[present] != info.dim).any():
        i = int(np.flatnonzero(present & (lengths != info.dim))[0])
        raise fail(
            path, info.vector_col, f"vector of id {ids[i]} has {int(lengths[i])} values, others {info.dim}"
        )
    vectors = np.full((n, info.dim), np.nan, np.float32)
    if present.all():
        vectors[:] = vec.flatten().to_numpy(zero_copy_only=False).reshape(n, info.dim)
    elif present.any():
        vectors[present] = (
            vec.filter(pa.array(present)).flatten().to_numpy(zero_copy_only=False).reshape(-1, info.dim)
        )
    if info.kind_col:
        kind = np.array(
            [str(k).lower() if k is not None else "galaxy" for k in rb.column(info.kind_col).to_pylist()],
            object,
        )
        unknown = sorted(set(kind) - set(schema.KINDS))
        if unknown:
            raise fail(path, info.kind_col, f"values {unknown[:5]}; accepted: {list(schema.KINDS)}")
    else:
        kind = np.full(n, "galaxy", object)
    scalars = {c: rb.column(c).to_numpy(zero_copy_only=False).astype(np.float64) for c in info.scalar_cols}
    return Batch(ids, ra, dec, kind, vectors, scalars)
