"""Orchestrate a mock survey: draw the population, simulate objects in parallel chunks, and
write everything through :class:`~engine.data.writer.DatasetWriter` (atomic: a crash never
leaves a half dataset, and an existing one is replaced only by a complete one).

Chunks come back in order (``imap``), so the files are identical whatever the number of
workers; each object's randomness is seeded by (seed, index).
"""

from __future__ import annotations

import multiprocessing as mp
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from engine.data import schema
from engine.data.mock.objects import ObjectData, simulate
from engine.data.mock.population import draw_population
from engine.data.writer import DatasetWriter
from engine.errors import DatasetError, ValidationError

MOCK_VERSION = "1"
#: Truth beyond schema.TRUTH_COLUMNS: structure id (cluster/group, -1 = field) and the class every galaxy was
#: rendered as (truth_morphology keeps only the classifiable ones, like Galaxy10-DECaLS).
EXTRA_TRUTH = ("truth_group", "truth_morphology_rendered")


def _check_args(n, seed, workers) -> None:
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValidationError(f"n must be a positive integer (number of objects), got {n!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValidationError(f"seed must be a non-negative integer, got {seed!r}")
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, (int, np.integer)) or workers < 1):
        raise ValidationError(f"workers must be a positive integer or None (all cores), got {workers!r}")


def _simulate_chunk(task: tuple[int, list[dict]]) -> list[ObjectData]:
    seed, rows = task
    return [simulate(row, seed) for row in rows]


def _chunks(pop: pd.DataFrame, seed: int, size: int) -> Iterator[tuple[int, list[dict]]]:
    records = pop.to_dict("records")
    for start in range(0, len(records), size):
        yield seed, records[start : start + size]


def _pool_context():
    """"fork" (workers inherit the loaded modules: fast start) unless torch is loaded: a parent that ran
    OpenMP code can hang forked children, so then a forkserver with the simulation modules preloaded."""
    methods = mp.get_all_start_methods()
    if "fork" in methods and "torch" not in sys.modules:
        return mp.get_context("fork")
    if "forkserver" in methods:
        ctx = mp.get_context("forkserver")
        ctx.set_forkserver_preload(["engine.data.mock.objects"])
        return ctx
    return mp.get_context("spawn")


def simulate_objects(pop: pd.DataFrame, seed: int, *, workers: int = 1, progress: bool = True,
                     chunk_size: int = 8) -> Iterator[list[ObjectData]]:
    """Yield simulated chunks in population order, using ``workers`` processes."""
    tasks = _chunks(pop, seed, chunk_size)
    bar = tqdm(total=len(pop), unit="obj", desc="mock survey", disable=not progress, smoothing=0.05)
    try:
        if workers <= 1:
            for task in tasks:
                chunk = _simulate_chunk(task)
                bar.update(len(chunk))
                yield chunk
            return
        with _pool_context().Pool(workers) as pool:
            for chunk in pool.imap(_simulate_chunk, tasks):
                bar.update(len(chunk))
                yield chunk
    finally:
        bar.close()


def generate(out: str | os.PathLike, n: int, seed: int, *, workers: int | None = None, overwrite: bool = False,
             progress: bool = True, preview: bool = False) -> Path:
    """Write a mock survey of ``n`` objects with random ``seed`` to folder ``out``; returns its path.

    Raises
    ------
    ValidationError
        If n, seed or workers is out of range.
    DatasetError
        If ``out`` exists and ``overwrite`` is False.
    """
    _check_args(n, seed, workers)
    out = Path(out)
    if out.exists() and not overwrite:
        raise DatasetError(f"{out}: already exists (pass overwrite=True / --overwrite to replace it)")
    if out.exists() and not out.is_dir():
        raise DatasetError(f"{out}: exists and is not a folder; refusing to replace a file")
    n_workers = min(workers or os.cpu_count() or 1, max(1, n // 8))
    pop = draw_population(int(n), int(seed))
    pop.insert(0, "index", np.arange(len(pop)))
    scalars: dict[int, dict[str, float]] = {}
    ids = pop["object_id"].to_numpy()
    with DatasetWriter(out, overwrite=overwrite) as writer:
        for chunk in simulate_objects(pop, int(seed), workers=n_workers, progress=progress):
            for obj in chunk:
                scalars[obj.index] = obj.catalog
            for source in schema.SOURCES:
                rows = [obj for obj in chunk if source in obj.arrays]
                if rows:
                    fields = {f: np.stack([obj.arrays[source][f] for obj in rows]) for f in rows[0].arrays[source]}
                    writer.append(source, ids[[obj.index for obj in rows]], **fields)
        catalog = build_catalog(pop, scalars)
        info = {"name": out.name, "provenance": {"generator": "engine.data.mock", "version": MOCK_VERSION,
                                                 "seed": int(seed), "n": int(n)}}
        writer.commit(catalog, info)
    if preview:
        from engine.data.mock.preview import write_preview

        write_preview(out)
    return out


def build_catalog(pop: pd.DataFrame, scalars: dict[int, dict[str, float]]) -> pd.DataFrame:
    """Catalog: ids, positions, kind, every scalar column (NaN where not measured) and the truth."""
    measured = pd.DataFrame.from_dict(scalars, orient="index").reindex(pop["index"].to_numpy())
    cat = pd.DataFrame({"object_id": pop["object_id"].to_numpy(np.int64), "ra": pop["ra"].to_numpy(),
                        "dec": pop["dec"].to_numpy(), "kind": pop["kind"].astype(str).to_numpy()})
    for col in schema.SCALAR_COLUMNS:
        cat[col] = measured[col].to_numpy(np.float64) if col in measured else np.nan
    for col in (*schema.TRUTH_COLUMNS, *EXTRA_TRUTH):
        # truth decided while simulating (the morphology label needs the object's brightness) wins
        cat[col] = measured[col].fillna(pop[col]).to_numpy() if col in measured else pop[col].to_numpy()
    cat["truth_morphology"] = cat["truth_morphology"].astype(np.int16)
    cat["truth_is_lens"] = cat["truth_is_lens"].astype(bool)
    cat["truth_group"] = cat["truth_group"].astype(np.int32)
    cat["truth_morphology_rendered"] = cat["truth_morphology_rendered"].astype(np.int16)
    return cat
