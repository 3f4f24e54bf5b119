"""The Python API behind ``aion-engine embed`` and ``aion-engine index`` (one path for CLI and notebooks)."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

from engine import paths
from engine.data.store import Dataset, open_dataset
from engine.errors import IndexError_
from engine.index import faiss_build as fb
from engine.index.baseline import PixelPCAEncoder, is_baseline
from engine.index.embeddings import (
    EmbeddingStore,
    EmbedResult,
    PerViewEncoders,
    embed_dataset,
    embed_dataset_views,
)
from engine.index.encoders import current_model_hash, open_encoder, open_views_encoder
from engine.index.manifest import VIEWS, rebuild_command, write_index_and_manifest
from engine.index.search_space import SearchSpace, axes_cap

log = logging.getLogger(__name__)


def _dataset(dataset: str | os.PathLike | Dataset) -> Dataset:
    return dataset if isinstance(dataset, Dataset) else open_dataset(dataset)


def _check_view(view: str) -> None:
    if view not in VIEWS:
        raise IndexError_(f"unknown view {view!r}; accepted: {', '.join(VIEWS)}")


def embed_view(
    dataset: str | os.PathLike | Dataset,
    model: str | os.PathLike,
    view: str,
    *,
    view_dir: str | os.PathLike | None = None,
    encoder=None,
    batch_size: int = 64,
    chunk_batches: int = 8,
    device: str = "cpu",
    rank: int = 0,
    world_size: int = 1,
    barrier=None,
    progress: bool = True,
) -> EmbedResult:
    """Embed every object of ``dataset`` under ``view`` into the view folder (resumable)."""
    _check_view(view)
    ds = _dataset(dataset)
    vdir = Path(view_dir) if view_dir is not None else paths.view_dir(ds.name, model, view)
    vdir.mkdir(parents=True, exist_ok=True)
    if encoder is None:
        encoder = open_encoder(model, view, view_dir=vdir, fit_dataset=ds, batch_size=batch_size, device=device)
    if isinstance(encoder, PixelPCAEncoder) and rank == 0:
        encoder.save(vdir)  # new data are encoded with exactly this fit later
    return embed_dataset(ds, encoder, view, vdir, batch_size=batch_size, chunk_batches=chunk_batches, rank=rank,
                         world_size=world_size, barrier=barrier, progress=progress,
                         extra_meta={"model": str(model)})


def embed_views(
    dataset: str | os.PathLike | Dataset,
    model: str | os.PathLike,
    views: list[str] | tuple[str, ...],
    *,
    batch_size: int = 64,
    chunk_batches: int = 8,
    device: str = "cpu",
    rank: int = 0,
    world_size: int = 1,
    barrier=None,
    progress: bool = True,
    compile: bool = False,
) -> dict[str, EmbedResult]:
    """Embed several views in one pass over the dataset (the model tokenizes each batch once).
    ``compile``: ``torch.compile`` the encoder first (worth it for long GPU jobs)."""
    for view in views:
        _check_view(view)
    ds = _dataset(dataset)
    dirs = {v: paths.view_dir(ds.name, model, v) for v in dict.fromkeys(views)}
    for d in dirs.values():
        d.mkdir(parents=True, exist_ok=True)
    encoder = open_views_encoder(model, dirs, fit_dataset=ds, batch_size=batch_size, device=device,
                                 compile=compile)
    if isinstance(encoder, PerViewEncoders) and rank == 0:
        for v, enc in encoder.encoders.items():
            enc.save(dirs[v])
    return embed_dataset_views(ds, encoder, dirs, batch_size=batch_size, chunk_batches=chunk_batches, rank=rank,
                               world_size=world_size, barrier=barrier, progress=progress,
                               extra_meta={"model": str(model)})


def build_view_index(
    dataset: str | os.PathLike | Dataset,
    model: str | os.PathLike,
    view: str,
    *,
    kind: str = "auto",
    view_dir: str | os.PathLike | None = None,
    use_gpu: bool | None = None,
    model_hash: str | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Fit the view's search space on its valid embeddings, build, tune and write the index of
    the mapped, normalised vectors; returns the manifest.

    Refuses embeddings computed from another dataset or model version (re-run embed).
    """
    _check_view(view)
    ds = _dataset(dataset)
    vdir = Path(view_dir) if view_dir is not None else paths.view_dir(ds.name, model, view)
    store = EmbeddingStore.open(vdir)
    meta = store.meta
    if model_hash is None:
        model_hash = current_model_hash(model, view, vdir)
    rebuild = rebuild_command(ds.root, model, view)
    if meta.get("dataset_hash") != ds.hash or len(store.valid) != len(ds):
        raise IndexError_(f"{vdir}: embeddings were computed for dataset hash {meta.get('dataset_hash')!r}, "
                          f"the dataset is now {ds.hash!r}; recompute with: {rebuild}")
    if model_hash is not None and meta.get("model_hash") != model_hash:
        raise IndexError_(f"{vdir}: embeddings were computed with model hash {meta.get('model_hash')!r}, "
                          f"the model is now {model_hash!r}; recompute with: {rebuild}")
    if meta.get("view") != view:
        raise IndexError_(f"{vdir}: embeddings are for view {meta.get('view')!r}, not {view!r}")
    raw = np.asarray(store.vectors[store.valid_rows], dtype=np.float32)
    if len(raw) == 0:
        raise IndexError_(f"{vdir}: no object of dataset {ds.name!r} has {view} data; nothing to index")
    zero = ~(np.abs(raw).sum(axis=1) > 0)
    if zero.any():
        raise IndexError_(f"{vdir}: {int(zero.sum())} valid embedding rows are all zero (corrupt embeddings.npy?); "
                          f"recompute with: {rebuild}")
    space = SearchSpace.fit(raw, max_axes=axes_cap(meta.get("pooling", "mean")))
    vectors = fb.normalize_rows(space.apply(raw))
    del raw
    built = fb.build_index(vectors, kind, use_gpu=use_gpu, progress=progress)
    tuning = fb.tune(built, vectors)
    latency = fb.single_query_latency_ms(built, vectors, tuning.params)
    manifest = write_index_and_manifest(
        vdir, built, tuning, dataset_hash=ds.hash, model_id=meta["model_id"], model_hash=meta["model_hash"],
        latency=latency, extra={"model": str(model), "baseline": is_baseline(model)}, space=space,
    )
    log.info("built %s index of %d vectors in %.1fs (recall@10 %.3f, search space %s on %d rows)", built.kind,
             built.index.ntotal, built.build_s, tuning.recall, space.method, space.n_fit)
    return manifest
