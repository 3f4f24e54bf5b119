"""Read a dataset folder: the catalog, and per-object arrays from chunked HDF5 without loading whole files.

A dataset is ``catalog.parquet`` + ``dataset.json`` + one HDF5 file per array source
(see :mod:`engine.data.schema`). Arrays are row-aligned with their file's ``object_id``
dataset, so a batch of ids costs one sorted fancy-index read per field.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator, Sequence
from functools import cached_property
from pathlib import Path

import h5py
import numpy as np
import pandas as pd

from engine.data import schema
from engine.errors import DatasetError, MissingFileError, MissingModalityError, UnknownObjectError

CATALOG_FILE = "catalog.parquet"
INFO_FILE = "dataset.json"


class Dataset:
    """An opened dataset folder. Cheap to open; files are read on first use.

    Parameters
    ----------
    root : path of the dataset folder.

    Raises
    ------
    MissingFileError
        If the folder, ``catalog.parquet`` or ``dataset.json`` is missing.
    DatasetError
        If the catalog or info file cannot be parsed or breaks the contract.
    """

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        if not self.root.is_dir():
            raise MissingFileError(f"dataset folder {str(self.root)!r} does not exist")
        for name in (CATALOG_FILE, INFO_FILE):
            if not (self.root / name).is_file():
                raise MissingFileError(f"{self.root / name}: missing (not a dataset folder?)")
        self._handles: dict[str, tuple[int, h5py.File, np.ndarray, pd.Index]] = {}
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"Dataset({str(self.root)!r}, n={len(self)})"

    def __len__(self) -> int:
        return len(self.catalog)

    # --- catalog and metadata ------------------------------------------------------

    @cached_property
    def info(self) -> dict:
        path = self.root / INFO_FILE
        try:
            return json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise DatasetError(f"{path}: cannot parse dataset.json ({exc})") from exc

    @property
    def name(self) -> str:
        return self.info.get("name", self.root.name)

    @property
    def hash(self) -> str:
        """Content hash written at commit time; indexes record it to detect stale builds."""
        return self.info["hash"]

    @cached_property
    def catalog(self) -> pd.DataFrame:
        path = self.root / CATALOG_FILE
        try:
            cat = pd.read_parquet(path)
        except Exception as exc:  # pyarrow raises several types for corrupt files
            raise DatasetError(f"{path}: cannot read catalog ({exc})") from exc
        missing = [c for c in schema.REQUIRED_COLUMNS if c not in cat.columns]
        if missing:
            raise DatasetError(f"{path}: missing column(s) {missing}; required: {list(schema.REQUIRED_COLUMNS)}")
        if cat["object_id"].dtype != np.int64:
            raise DatasetError(f"{path}: field 'object_id' has dtype {cat['object_id'].dtype}, expected int64")
        if cat["object_id"].duplicated().any():
            dup = cat.loc[cat["object_id"].duplicated(), "object_id"].iloc[0]
            raise DatasetError(f"{path}: field 'object_id' has duplicates (e.g. {dup})")
        return cat

    @cached_property
    def ids(self) -> np.ndarray:
        return self.catalog["object_id"].to_numpy()

    @cached_property
    def _row_of_id(self) -> pd.Index:
        return pd.Index(self.ids)

    def rows(self, object_ids: Sequence[int] | np.ndarray) -> np.ndarray:
        """Catalog row positions of ``object_ids``; raises UnknownObjectError naming the unknown ones."""
        ids = np.atleast_1d(np.asarray(object_ids, dtype=np.int64))
        pos = self._row_of_id.get_indexer(ids)
        if (pos < 0).any():
            raise UnknownObjectError(ids[pos < 0], where=f"dataset {self.name!r} ({self.root})")
        return pos

    def objects(self, object_ids: Sequence[int] | np.ndarray) -> pd.DataFrame:
        """Catalog rows for ``object_ids`` in the order given."""
        return self.catalog.iloc[self.rows(object_ids)]

    # --- arrays --------------------------------------------------------------------

    def has_source(self, name: str) -> bool:
        return (self.root / schema.source(name).filename).is_file()

    @property
    def sources(self) -> list[str]:
        """Names of the array sources this dataset has files for."""
        return [name for name in schema.SOURCES if self.has_source(name)]

    def _open(self, name: str) -> tuple[h5py.File, np.ndarray, pd.Index]:
        """Open (once per process) and validate a source file: handle, object ids, id -> row index."""
        src = schema.source(name)
        pid = os.getpid()
        with self._lock:
            cached = self._handles.get(name)
            if cached is not None and cached[0] == pid:
                return cached[1:]
            path = self.root / src.filename
            if not path.is_file():
                raise MissingModalityError(f"{path}: dataset {self.name!r} has no {name} data")
            try:
                handle = h5py.File(path, "r")
            except OSError as exc:
                raise DatasetError(f"{path}: cannot open HDF5 (truncated or corrupt?): {exc}") from exc
            try:
                ids = _read_field(handle, "object_id", path)[...]
                for fname in src.fields:
                    if fname not in handle:
                        raise DatasetError(f"{path}: missing field {fname!r}; required: {list(src.fields)}")
                    if handle[fname].shape[0] != len(ids):
                        raise DatasetError(
                            f"{path}: field {fname!r} has {handle[fname].shape[0]} rows, object_id has {len(ids)}"
                        )
            except Exception:
                handle.close()
                raise
            ids = ids.astype(np.int64)
            self._handles[name] = (pid, handle, ids, pd.Index(ids))
            return self._handles[name][1:]

    def source_ids(self, name: str) -> np.ndarray:
        """Object ids present in source ``name``, in file order."""
        return self._open(name)[1]

    def read(
        self, name: str, object_ids: Sequence[int] | np.ndarray, fields: Sequence[str] | None = None
    ) -> dict[str, np.ndarray]:
        """Arrays of source ``name`` for ``object_ids`` (in the order given), one entry per field.

        Raises UnknownObjectError for ids not in the catalog and MissingModalityError for ids
        in the catalog that have no row in this source.
        """
        handle, _, lookup = self._open(name)
        ids = np.atleast_1d(np.asarray(object_ids, dtype=np.int64))
        self.rows(ids)  # unknown ids -> one clear error
        pos = lookup.get_indexer(ids)
        if (pos < 0).any():
            lacking = ids[pos < 0][:5].tolist()
            raise MissingModalityError(f"object_id {lacking} have no {name} data in {handle.filename}")
        order = np.argsort(pos, kind="stable")
        sorted_pos = pos[order]
        uniq, inverse = np.unique(sorted_pos, return_inverse=True)
        out: dict[str, np.ndarray] = {}
        src = schema.source(name)
        wanted = list(fields) if fields is not None else [f for f in (*src.fields, *src.optional_fields) if f in handle]
        path = Path(handle.filename)
        for fname in wanted:
            dset = _read_field(handle, fname, path)
            try:
                block = dset[uniq] if len(uniq) > 1 else dset[int(uniq[0])][None]
            except (OSError, ValueError) as exc:
                raise DatasetError(f"{path}: cannot read field {fname!r} (truncated or corrupt?): {exc}") from exc
            block = block[inverse]
            result = np.empty_like(block)
            result[order] = block
            if result.dtype.kind == "S":
                result = result.astype(str)
            out[fname] = result
        return out

    def batches(
        self,
        batch_size: int,
        object_ids: Sequence[int] | np.ndarray | None = None,
        *,
        shuffle: bool = False,
        seed: int = 0,
    ) -> Iterator[np.ndarray]:
        """Yield arrays of object ids in batches (a fixed seed gives a fixed order)."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size!r}")
        ids = self.ids if object_ids is None else np.asarray(object_ids, dtype=np.int64)
        if shuffle:
            ids = np.random.default_rng(seed).permutation(ids)
        for start in range(0, len(ids), batch_size):
            yield ids[start : start + batch_size]

    def close(self) -> None:
        with self._lock:
            for _, handle, _, _ in self._handles.values():
                handle.close()
            self._handles.clear()

    def __enter__(self) -> Dataset:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __getstate__(self) -> dict:  # picklable for DataLoader workers: handles reopen per process
        state = self.__dict__.copy()
        state["_handles"] = {}
        state.pop("_lock", None)
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()


def _read_field(handle: h5py.File, fname: str, path: Path) -> h5py.Dataset:
    if fname not in handle:
        raise DatasetError(f"{path}: missing field {fname!r}")
    obj = handle[fname]
    if not isinstance(obj, h5py.Dataset):
        raise DatasetError(f"{path}: field {fname!r} is a group, expected a dataset")
    return obj


def open_dataset(root: str | os.PathLike) -> Dataset:
    """Open a dataset folder (see :class:`Dataset`)."""
    return Dataset(root)
