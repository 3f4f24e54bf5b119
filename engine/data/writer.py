"""Write a dataset folder atomically: everything goes to a temporary sibling folder that is
renamed into place on :meth:`DatasetWriter.commit`, so a crash never leaves a half dataset
and an existing dataset is replaced only by a complete one.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import time
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pandas as pd

from engine.data import schema
from engine.data.store import CATALOG_FILE, INFO_FILE
from engine.errors import DatasetError

SCHEMA_VERSION = 1
_COMPRESS = {"compression": "gzip", "compression_opts": 1, "shuffle": True}


class _SourceFile:
    """Appends rows to one source's HDF5 file; datasets are resizable and chunked per object."""

    def __init__(self, path: Path, src: schema.ArraySource):
        self.path = path
        self.src = src
        self.handle = h5py.File(path, "w")
        self.n = 0
        self.ids: list[np.ndarray] = []

    def append(self, object_ids: np.ndarray, fields: Mapping[str, np.ndarray]) -> None:
        allowed = {*self.src.fields, *self.src.optional_fields}
        unknown = set(fields) - allowed
        if unknown:
            raise DatasetError(f"{self.path.name}: unknown field(s) {sorted(unknown)}; accepted: {sorted(allowed)}")
        missing = set(self.src.fields) - set(fields)
        if missing:
            raise DatasetError(f"{self.path.name}: missing field(s) {sorted(missing)}")
        n = len(object_ids)
        for fname, arr in fields.items():
            arr = np.asarray(arr)
            if arr.shape[0] != n:
                raise DatasetError(f"{self.path.name}: field {fname!r} has {arr.shape[0]} rows for {n} object ids")
            if arr.dtype.kind == "U":
                arr = arr.astype("S")
            self._append(fname, arr)
        self._append("object_id", np.asarray(object_ids, dtype=np.int64))
        self.ids.append(np.asarray(object_ids, dtype=np.int64))
        self.n += n

    def _append(self, fname: str, arr: np.ndarray) -> None:
        if fname not in self.handle:
            compress = _COMPRESS if arr.ndim > 1 and arr.dtype.kind != "S" else {}
            self.handle.create_dataset(
                fname,
                shape=(0, *arr.shape[1:]),
                maxshape=(None, *arr.shape[1:]),
                dtype=arr.dtype,
                chunks=(1, *arr.shape[1:]) if arr.ndim > 1 else (4096,),
                **compress,
            )
        dset = self.handle[fname]
        if dset.shape[1:] != arr.shape[1:]:
            raise DatasetError(f"{self.path.name}: field {fname!r} shape {arr.shape[1:]} != earlier {dset.shape[1:]}")
        start = dset.shape[0]
        dset.resize(start + len(arr), axis=0)
        dset[start:] = arr

    def close(self) -> np.ndarray:
        self.handle.close()
        return np.concatenate(self.ids) if self.ids else np.zeros(0, np.int64)


class DatasetWriter:
    """Build a dataset in ``<out>.tmp-<uuid>`` and move it to ``out`` on commit.

    Use as a context manager: leaving the block with an exception removes the temporary
    folder and leaves any existing ``out`` untouched.
    """

    def __init__(self, out: str | os.PathLike, *, overwrite: bool = False):
        self.out = Path(out)
        if self.out.exists() and not overwrite:
            raise DatasetError(f"{self.out}: already exists (pass overwrite=True / --overwrite to replace it)")
        self.out.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = self.out.parent / f".{self.out.name}.tmp-{uuid.uuid4().hex[:8]}"
        self.tmp.mkdir()
        self._sources: dict[str, _SourceFile] = {}
        self.committed = False

    def append(self, source_name: str, object_ids, **fields: np.ndarray) -> None:
        """Append rows for ``object_ids`` to source ``source_name`` (fields named as in the schema)."""
        src = schema.source(source_name)
        if source_name not in self._sources:
            self._sources[source_name] = _SourceFile(self.tmp / src.filename, src)
        self._sources[source_name].append(np.asarray(object_ids), fields)

    def commit(self, catalog: pd.DataFrame, info: Mapping[str, Any]) -> Path:
        """Validate, write catalog + dataset.json, set ``has_*`` flags, and rename into place."""
        catalog = catalog.reset_index(drop=True).copy()
        missing = [c for c in schema.REQUIRED_COLUMNS if c not in catalog.columns]
        if missing:
            raise DatasetError(f"catalog: missing column(s) {missing}")
        catalog["object_id"] = catalog["object_id"].astype(np.int64)
        if catalog["object_id"].duplicated().any():
            raise DatasetError("catalog: field 'object_id' has duplicates")
        bad_kind = set(catalog["kind"].unique()) - set(schema.KINDS)
        if bad_kind:
            raise DatasetError(f"catalog: field 'kind' has {sorted(bad_kind)}; accepted: {list(schema.KINDS)}")
        known = pd.Index(catalog["object_id"].to_numpy())
        counts: dict[str, int] = {}
        for name, sf in self._sources.items():
            ids = sf.close()
            if len(np.unique(ids)) != len(ids):
                raise DatasetError(f"{sf.path.name}: field 'object_id' has duplicates")
            if (known.get_indexer(ids) < 0).any():
                raise DatasetError(f"{sf.path.name}: object_id values not in the catalog")
            catalog[schema.source(name).flag] = catalog["object_id"].isin(ids).to_numpy()
            counts[name] = len(ids)
        self._sources.clear()
        for flag in schema.FLAG_COLUMNS:
            if flag not in catalog.columns:
                catalog[flag] = False
        catalog["kind"] = catalog["kind"].astype(str)
        catalog.to_parquet(self.tmp / CATALOG_FILE, index=False)
        full_info = {
            "name": info.get("name", self.out.name),
            "schema_version": SCHEMA_VERSION,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            **{k: v for k, v in info.items() if k != "name"},
            "counts": {
                "objects": len(catalog),
                "kinds": {k: int((catalog["kind"] == k).sum()) for k in schema.KINDS},
                "sources": counts,
            },
        }
        full_info["hash"] = _content_hash(self.tmp)
        (self.tmp / INFO_FILE).write_text(json.dumps(full_info, indent=2, default=_json_default))
        _fsync_tree(self.tmp)
        self._swap_into_place()
        self.committed = True
        return self.out

    def _swap_into_place(self) -> None:
        old = None
        if self.out.exists():
            old = self.out.parent / f".{self.out.name}.old-{uuid.uuid4().hex[:8]}"
            os.replace(self.out, old)
        os.replace(self.tmp, self.out)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)

    def abort(self) -> None:
        for sf in self._sources.values():
            with contextlib.suppress(Exception):
                sf.handle.close()
        self._sources.clear()
        shutil.rmtree(self.tmp, ignore_errors=True)

    def __enter__(self) -> DatasetWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None or not self.committed:
            self.abort()


def _content_hash(folder: Path) -> str:
    """sha256 over what the dataset holds, not how its files were encoded: the catalog's columns
    (names, dtypes, values), and per array file its object ids and each field's name, dtype,
    shape and first and last rows. Cheap on large ingests, and the same on any machine or
    library version for the same data (the parquet and gzip bytes carry the writer's version)."""
    h = hashlib.sha256()
    catalog = pd.read_parquet(folder / CATALOG_FILE)
    for name in catalog.columns:
        values = catalog[name].to_numpy()
        h.update(f"{name}:{values.dtype}".encode())
        if values.dtype.kind == "O":
            h.update("\0".join(map(str, values)).encode())
        else:
            h.update(np.ascontiguousarray(values).tobytes())
    for path in sorted(folder.glob("*.h5")):
        h.update(path.name.encode())
        with h5py.File(path, "r") as f:
            h.update(np.ascontiguousarray(f["object_id"][...]).tobytes())
            for field in sorted(f):
                dset = f[field]
                h.update(f"{field}:{dset.dtype}:{dset.shape}".encode())
                if dset.shape and dset.shape[0]:
                    for row in sorted({0, dset.shape[0] - 1}):
                        h.update(np.ascontiguousarray(dset[row]).tobytes())
    return h.hexdigest()[:16]


def _fsync_tree(folder: Path) -> None:
    for path in folder.iterdir():
        with open(path, "rb") as f:
            os.fsync(f.fileno())


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")
