"""Staged per-file arrays: what makes a long ingest resumable after a crash.

The write pass first stages each input file's standardised arrays (already in the dataset
layout) as ``<out-parent>/.<out>.ingest-job/parts/<k>.h5``, written to a temporary name and
renamed when complete, so a part either exists whole or not at all. A re-run with the same
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

    def stage(self, k: int, chunks: Iterator[tuple[np.ndarray, dict[str, np.ndarray]]]) -> Iterator[int]:
        """Write file ``k``'s chunks to its part (atomically); yields the objects written per chunk."""
        final = self.part(k)
        tmp = final.with_suffix(".h5.tmp")
        try:
            with h5py.File(tmp, "w") as f:
                for ids, fields in chunks:
                    _append(f, IDS, np.asarray(ids, np.int64))
                    for name, arr in fields.items():
                        _append(f, name, np.asarray(arr))
                    yield len(ids)
            with open(tmp, "rb") as fh:
                os.fsync(fh.fileno())
            os.replace(tmp, final)
        finally:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()

    def read(self, k: int, chunk: int) -> Iterator[tuple[np.ndarray, dict[str, np.ndarray]]]:
        with h5py.File(self.part(k), "r") as f:
            n = f[IDS].shape[0] if IDS in f else 0
            names = [name for name in f if name != IDS]
            for start in range(0, n, chunk):
                sl = slice(start, start + chunk)
                yield f[IDS][sl], {name: f[name][sl] for name in names}

    def finish(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)


def _append(f: h5py.File, name: str, arr: np.ndarray) -> None:
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
