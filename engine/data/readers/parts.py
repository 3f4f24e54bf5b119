"""Staged per-file arrays: what makes a long ingest resumable after a crash.

The write pass first stages the input files' standardised arrays (already in the dataset
layout) in parts ``<out-parent>/.<out>.ingest-job/parts/<k>.h5``, one group per source; a
part holds one large file or a run of small ones (so 100 000 one-spectrum FITS files do not
make 100 000 parts). Each part is written to a temporary name and renamed when complete,
so it either exists whole or not at all. A re-run with the same
inputs (paths, sizes, mtimes), format and radius finds the job, skips the files already
staged, and then assembles the dataset from the parts through ``DatasetWriter``. Changed
inputs or options start a fresh job. The job folder is removed once the dataset is
committed. Cost: the staged arrays take about the dataset's size on disk until then
(stored uncompressed: survey pixels are noise and barely compress).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import h5py
import numpy as np

JOB_VERSION = 1
IDS = "_ids"
#: a part is closed once it holds this many objects: the unit of work a crash can lose
PART_MIN_OBJECTS = 4096


class IngestJob:
    """The staging folder of one ingest into ``out``, valid for one ``key`` (inputs + options)."""

    def __init__(self, out: Path, key: dict):
        self.dir = out.parent / f".{out.name}.ingest-job"
        self.key = {"version": JOB_VERSION, **key}
        key_file = self.dir / "job.json"
        if self.dir.exists() and _read_json(key_file) != json.loads(json.dumps(self.key)):
            shutil.rmtree(self.dir)  # other inputs or options: nothing here can be reused
        (self.dir / "parts").mkdir(parents=True, exist_ok=True)
        if not key_file.exists():
            tmp = key_file.with_suffix(".json.tmp")
            tmp.write_text(json.dumps(self.key, indent=1))
            os.replace(tmp, key_file)

    def part(self, k: int) -> Path:
        return self.dir / "parts" / f"{k:06d}.h5"

    def done(self, k: int) -> bool:
        return self.part(k).is_file()

    def stage(self, k: int, chunks: Iterator[tuple[str, np.ndarray, dict[str, np.ndarray]]]) -> Iterator[int]:
        """Write ``(source, ids, fields)`` chunks to part ``k`` (atomically); yields objects per chunk."""
        final = self.part(k)
        tmp = final.with_suffix(".h5.tmp")
        try:
            with h5py.File(tmp, "w") as f:
                for source, ids, fields in chunks:
                    group = f.require_group(source)
                    _append(group, IDS, np.asarray(ids, np.int64))
                    for name, arr in fields.items():
                        _append(group, name, np.asarray(arr))
                    yield len(ids)
            with open(tmp, "rb") as fh:
                os.fsync(fh.fileno())
            os.replace(tmp, final)
        finally:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()

    def read(self, k: int, chunk: int) -> Iterator[tuple[str, np.ndarray, dict[str, np.ndarray]]]:
        """Part ``k``'s ``(source, ids, fields)`` chunks, sources in sorted order."""
        with h5py.File(self.part(k), "r") as f:
            for source in sorted(f):
                group = f[source]
                names = [name for name in group if name != IDS]
                for start in range(0, group[IDS].shape[0], chunk):
                    sl = slice(start, start + chunk)
                    yield source, group[IDS][sl], {name: group[name][sl] for name in names}

    def finish(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)


def batches_of(sizes: list[int], min_objects: int | None = None, max_files: int = 512) -> list[list[int]]:
    """Consecutive file indices grouped into parts of at least ``min_objects`` objects (default
    ``PART_MIN_OBJECTS``) or ``max_files`` files: large files get a part each, small ones share."""
    min_objects = PART_MIN_OBJECTS if min_objects is None else min_objects
    out: list[list[int]] = []
    current: list[int] = []
    total = 0
    for i, n in enumerate(sizes):
        current.append(i)
        total += n
        if total >= min_objects or len(current) >= max_files:
            out.append(current)
            current, total = [], 0
    if current:
        out.append(current)
    return out


def _append(f: h5py.Group, name: str, arr: np.ndarray) -> None:
    if name not in f:
        f.create_dataset(
            name,
            shape=(0, *arr.shape[1:]),
            maxshape=(None, *arr.shape[1:]),
            dtype=arr.dtype,
            chunks=(max(1, min(256, len(arr))), *arr.shape[1:]),
        )
    ds = f[name]
    start = ds.shape[0]
    ds.resize(start + len(arr), axis=0)
    ds[start:] = arr


def _read_json(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None
