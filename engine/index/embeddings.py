"""Embeddings on disk: compute them resumably (optionally sharded over ranks) and read them back.

The result is ``embeddings.npy`` (float16, memory-mappable, one row per catalog row) and
``valid.npy`` (bool) in the view folder, plus ``embeddings.json`` naming what produced them.

Resumability: work happens in ``<view>/.embed-job/shard-<r>-of-<W>/``: a preallocated float16
memmap for the shard's rows, a bool memmap of valid flags and a ``done.npy`` chunk bitmap.
A chunk's bit is set only after its rows were flushed, so a killed run restarted with the same
dataset, model, view and world size recomputes only the unfinished chunks. When every shard is
done, rank 0 (after a barrier under ``torchrun``) merges them into the final files, each
written atomically, and removes the job folder.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
from tqdm.auto import tqdm

from engine.errors import IndexError_, ModelError
from engine.index.atomic import atomic_path, fsync_dir, write_json_atomic
from engine.index.manifest import EMBEDDINGS_FILE, EMBEDDINGS_META, VALID_FILE, VIEWS, read_json

log = logging.getLogger(__name__)

JOB_DIR = ".embed-job"
FLOAT16_MAX = float(np.finfo(np.float16).max)


@runtime_checkable
class Encoder(Protocol):
    """Turns a batch of a dataset's objects into vectors: the real model or the pixel-PCA baseline.

    ``__call__(dataset, object_ids)`` returns ``(vectors (n, dim) float, valid (n,) bool)``;
    rows with ``valid`` False (object lacks the view's modalities) are ignored.
    """

    model_id: str
    model_hash: str
    dim: int

    def __call__(self, dataset: Any, object_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]: ...


# --- reading ---------------------------------------------------------------------------


@dataclass
class EmbeddingStore:
    """Read side of a view folder's embeddings (memory-mapped; cheap to open)."""

    view_dir: Path

    @classmethod
    def open(cls, view_dir: str | os.PathLike) -> EmbeddingStore:
        store = cls(Path(view_dir))
        for name in (EMBEDDINGS_FILE, VALID_FILE):
            if not (store.view_dir / name).is_file():
                raise IndexError_(f"{store.view_dir / name}: missing; run `aion-engine embed` for this view first")
        _ = store.meta
        return store

    @cached_property
    def meta(self) -> dict[str, Any]:
        return read_json(self.view_dir / EMBEDDINGS_META, "embeddings metadata")

    @cached_property
    def vectors(self) -> np.ndarray:
        return np.load(self.view_dir / EMBEDDINGS_FILE, mmap_mode="r")

    @cached_property
    def valid(self) -> np.ndarray:
        return np.load(self.view_dir / VALID_FILE)

    @cached_property
    def valid_rows(self) -> np.ndarray:
        """Catalog rows that are in the index, in index order (FAISS id i -> valid_rows[i])."""
        return np.flatnonzero(self.valid)

    @property
    def dim(self) -> int:
        return int(self.vectors.shape[1])

    @property
    def pooling(self) -> str:
        """How the vectors were pooled (``mean`` or ``radial``), as recorded when they were embedded."""
        return str(self.meta.get("pooling", "mean"))

    def shared(self, rows: np.ndarray) -> np.ndarray:
        """float32 mean-pooled encoder embeddings of catalog ``rows`` (the model's space shared by its
        views, ``engine.model.pooling.shared_part``), read in blocks of 65 536 rows."""
        from engine.model.pooling import shared_part

        rows = np.asarray(rows)
        parts = [shared_part(self.vectors[rows[a : a + 65_536]], self.pooling) for a in range(0, len(rows), 65_536)]
        return np.concatenate(parts) if parts else np.zeros((0, self.dim), np.float32)

    def normalized(self, rows: np.ndarray | None = None) -> np.ndarray:
        """float32 unit vectors of catalog ``rows`` (default: every valid row, in index order)."""
        from engine.index.faiss_build import normalize_rows

        rows = self.valid_rows if rows is None else np.asarray(rows)
        return normalize_rows(self.vectors[rows])


def write_embeddings(
    view_dir: str | os.PathLike,
    vectors: np.ndarray,
    valid: np.ndarray,
    *,
    model_id: str,
    model_hash: str,
    dataset_hash: str,
    view: str,
    dataset_name: str | None = None,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Write a complete embeddings set at once (each file atomically; metadata last)."""
    view_dir = Path(view_dir)
    view_dir.mkdir(parents=True, exist_ok=True)
    vectors = np.asarray(vectors)
    with atomic_path(view_dir / EMBEDDINGS_FILE) as tmp:
        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float16, shape=vectors.shape)
        out[:] = vectors
        out.flush()
        del out
    return _finish(view_dir, np.asarray(valid, bool), vectors.shape, model_id, model_hash, dataset_hash, view,
                   dataset_name, extra)


def _finish(view_dir, valid, shape, model_id, model_hash, dataset_hash, view, dataset_name, extra) -> dict[str, Any]:
    with atomic_path(view_dir / VALID_FILE) as tmp, open(tmp, "wb") as f:
        np.save(f, valid)
    meta = {
        "model_id": model_id,
        "model_hash": model_hash,
        "dataset_hash": dataset_hash,
        "dataset_name": dataset_name,
        "view": view,
        "dim": int(shape[1]),
        "count": int(shape[0]),
        "n_valid": int(valid.sum()),
        "dtype": "float16",
        "run_id": uuid.uuid4().hex,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        **(extra or {}),
    }
    write_json_atomic(view_dir / EMBEDDINGS_META, meta)
    return meta


# --- computing (resumable, sharded) ------------------------------------------------------


def shard_range(n: int, rank: int, world_size: int) -> tuple[int, int]:
    """Contiguous rows [start, stop) of ``rank``: sizes differ by at most one."""
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank!r} outside world_size {world_size!r}")
    base, extra = divmod(n, world_size)
    start = rank * base + min(rank, extra)
    return start, start + base + (1 if rank < extra else 0)


@dataclass
class EmbedResult:
    view_dir: Path
    meta: dict[str, Any] | None  # None on ranks other than 0
    encoded_chunks: int  # chunks computed in this run (resumed ones are not counted)
    total_chunks: int
    seconds: float


@runtime_checkable
class MultiViewEncoder(Protocol):
    """Several views in one pass (the AION model tokenizes each batch once for all of them).

    ``__call__(dataset, object_ids)`` returns ``{view: (vectors, valid)}`` for every view in
    ``views``; ``dims`` and ``hashes`` are per view (the baseline fits each view separately); an
    optional ``poolings`` (per view, default ``mean``) is recorded in each view's metadata.
    """

    model_id: str
    views: tuple[str, ...]
    dims: dict[str, int]
    hashes: dict[str, str]

    def __call__(self, dataset: Any, object_ids: np.ndarray) -> dict[str, tuple[np.ndarray, np.ndarray]]: ...


class SingleView:
    """Adapts an :class:`Encoder` of one view to :class:`MultiViewEncoder`."""

    def __init__(self, encoder: Encoder, view: str):
        self.encoder, self.model_id, self.views = encoder, encoder.model_id, (view,)
        self.dims, self.hashes = {view: int(encoder.dim)}, {view: encoder.model_hash}
        self.poolings = {view: str(getattr(encoder, "pooling", "mean"))}

    def __call__(self, dataset, object_ids):
        return {self.views[0]: self.encoder(dataset, object_ids)}


class PerViewEncoders:
    """Independent per-view encoders (e.g. the baseline's fits) as one :class:`MultiViewEncoder`."""

    def __init__(self, encoders: dict[str, Encoder]):
        first = next(iter(encoders.values()))
        self.encoders, self.model_id, self.views = encoders, first.model_id, tuple(encoders)
        self.dims = {v: int(e.dim) for v, e in encoders.items()}
        self.hashes = {v: e.model_hash for v, e in encoders.items()}
        self.poolings = {v: str(getattr(e, "pooling", "mean")) for v, e in encoders.items()}

    def __call__(self, dataset, object_ids):
        return {v: e(dataset, object_ids) for v, e in self.encoders.items()}


def _job_key(dataset, encoder: MultiViewEncoder, view: str, chunk_rows: int, world_size: int) -> dict[str, Any]:
    return {
        "dataset_hash": dataset.hash,
        "model_id": encoder.model_id,
        "model_hash": encoder.hashes[view],
        "view": view,
        "dim": int(encoder.dims[view]),
        "n": len(dataset),
        "chunk_rows": int(chunk_rows),
        "world_size": int(world_size),
    }


class _Shard:
    """One rank's resumable part: memmaps of its rows plus a done bitmap over its chunks."""

    def __init__(self, folder: Path, key: dict[str, Any], rank: int, start: int, stop: int):
        self.folder, self.start, self.stop = folder, start, stop
        rows, dim, chunk = stop - start, key["dim"], key["chunk_rows"]
        self.n_chunks = -(-rows // chunk) if rows else 0
        key_file = folder / "shard.json"
        shard_key = {**key, "rank": rank, "start": start, "stop": stop}
        if folder.exists() and (not key_file.is_file() or json.loads(key_file.read_text()) != shard_key):
            log.info("discarding incompatible partial embeddings in %s", folder)
            shutil.rmtree(folder)
        if not folder.exists():
            tmp = folder.parent / f".{folder.name}.tmp-{uuid.uuid4().hex[:8]}"
            tmp.mkdir(parents=True)
            np.lib.format.open_memmap(tmp / "embeddings.npy", "w+", np.float16, (rows, dim)).flush()
            np.lib.format.open_memmap(tmp / "valid.npy", "w+", np.bool_, (rows,)).flush()
            np.lib.format.open_memmap(tmp / "done.npy", "w+", np.uint8, (self.n_chunks,)).flush()
            (tmp / "shard.json").write_text(json.dumps(shard_key))
            os.replace(tmp, folder)
            fsync_dir(folder.parent)
        self.vectors = np.load(folder / "embeddings.npy", mmap_mode="r+")
        self.valid = np.load(folder / "valid.npy", mmap_mode="r+")
        self.done = np.load(folder / "done.npy", mmap_mode="r+")
        self.chunk = chunk

    def chunk_rows(self, c: int) -> tuple[int, int]:
        """Rows of chunk ``c`` relative to the shard start."""
        a = c * self.chunk
        return a, min(a + self.chunk, self.stop - self.start)

    def commit(self, c: int, vectors: np.ndarray, valid: np.ndarray) -> None:
        a, b = self.chunk_rows(c)
        self.vectors[a:b] = vectors
        self.valid[a:b] = valid
        self.vectors.flush()
        self.valid.flush()
        self.done[c] = 1  # only after the rows are on disk
        self.done.flush()

    @property
    def complete(self) -> bool:
        return bool(self.done.all())

    def close(self) -> None:
        for name in ("vectors", "valid", "done"):
            arr = getattr(self, name, None)
            if arr is not None:
                arr.flush()
                delattr(self, name)


def _check_output(vectors: np.ndarray, valid: np.ndarray, ids: np.ndarray, dim: int, model_id: str) -> np.ndarray:
    vectors = np.asarray(vectors, dtype=np.float32)
    valid = np.asarray(valid, dtype=bool)
    if vectors.shape != (len(ids), dim) or valid.shape != (len(ids),):
        raise ModelError(
            f"encoder {model_id!r} returned vectors {vectors.shape} / valid {valid.shape} for {len(ids)} objects; "
            f"expected ({len(ids)}, {dim}) / ({len(ids)},)"
        )
    bad = valid & ~np.isfinite(vectors).all(axis=1)
    if bad.any():
        raise ModelError(f"encoder {model_id!r} returned non-finite vectors for object_id {ids[bad][:5].tolist()}")
    too_big = valid & (np.abs(vectors).max(axis=1, initial=0.0) > FLOAT16_MAX)
    if too_big.any():
        raise ModelError(
            f"encoder {model_id!r} returned values beyond float16 range for object_id {ids[too_big][:5].tolist()}"
        )
    out = vectors.copy()
    out[~valid] = 0.0
    return out


def embed_dataset(dataset, encoder: Encoder, view: str, view_dir: str | os.PathLike, **kwargs) -> EmbedResult:
    """Embed every catalog row of ``dataset`` under one ``view`` into ``view_dir`` (resumable);
    see :func:`embed_dataset_views` for the keyword arguments."""
    return embed_dataset_views(dataset, SingleView(encoder, view), {view: view_dir}, **kwargs)[view]


def embed_dataset_views(
    dataset,
    encoder: MultiViewEncoder,
    view_dirs: dict[str, str | os.PathLike],
    *,
    batch_size: int = 64,
    chunk_batches: int = 8,
    rank: int = 0,
    world_size: int = 1,
    barrier: Callable[[], None] | None = None,
    progress: bool = True,
    extra_meta: dict[str, Any] | None = None,
) -> dict[str, EmbedResult]:
    """Embed every catalog row under each view of ``view_dirs`` (resumable, one encoder pass).

    Each rank computes rows ``shard_range(n, rank, world_size)`` in chunks of
    ``batch_size * chunk_batches`` rows; a chunk is redone only if some view lacks it. After
    ``barrier()`` rank 0 merges every view's shards. Returns, per view, how many chunks were
    computed in this call, so callers (and tests) can see resumption.
    """
    views = list(view_dirs)
    unknown = [v for v in views if v not in VIEWS]
    if unknown or not views:
        raise IndexError_(f"unknown view(s) {unknown!r}; accepted: {', '.join(VIEWS)}")
    if batch_size < 1 or chunk_batches < 1:
        raise ValueError(f"batch_size and chunk_batches must be >= 1, got {batch_size!r}, {chunk_batches!r}")
    t0 = time.perf_counter()
    n = len(dataset)
    start, stop = shard_range(n, rank, world_size)
    keys, shards, jobs = {}, {}, {}
    for view in views:
        vdir = Path(view_dirs[view])
        jobs[view] = vdir / JOB_DIR
        jobs[view].mkdir(parents=True, exist_ok=True)
        keys[view] = _job_key(dataset, encoder, view, batch_size * chunk_batches, world_size)
        shards[view] = _Shard(jobs[view] / f"shard-{rank}-of-{world_size}", keys[view], rank, start, stop)
    any_shard = shards[views[0]]
    ids = dataset.ids
    todo = [c for c in range(any_shard.n_chunks) if not all(shards[v].done[c] for v in views)]
    encoded = 0
    with tqdm(total=stop - start, desc=f"embed {'+'.join(views)} [{rank}/{world_size}]", unit="obj",
              disable=not progress, position=rank, dynamic_ncols=True) as bar:
        bar.update(sum(b - a for a, b in map(any_shard.chunk_rows, range(any_shard.n_chunks))) -
                   sum(b - a for a, b in map(any_shard.chunk_rows, todo)))
        for c in todo:
            a, b = any_shard.chunk_rows(c)
            parts: dict[str, tuple[list, list]] = {v: ([], []) for v in views}
            for s in range(a, b, batch_size):
                batch = ids[start + s : start + min(s + batch_size, b)]
                out = encoder(dataset, batch)
                for v in views:
                    vec, ok = out[v]
                    parts[v][0].append(_check_output(vec, ok, batch, keys[v]["dim"], encoder.model_id))
                    parts[v][1].append(np.asarray(ok, bool))
                bar.update(len(batch))
            for v in views:
                shards[v].commit(c, np.concatenate(parts[v][0]), np.concatenate(parts[v][1]))
            encoded += 1
    for shard in shards.values():
        shard.close()
    if barrier is not None:
        barrier()
    metas: dict[str, dict[str, Any] | None] = dict.fromkeys(views)
    if rank == 0:
        for v in views:
            pooling = getattr(encoder, "poolings", {}).get(v, "mean")  # how the vectors were pooled
            metas[v] = _merge(jobs[v], keys[v], Path(view_dirs[v]), dataset, encoder.model_id, v,
                              {**(extra_meta or {}), "pooling": pooling})
            shutil.rmtree(jobs[v], ignore_errors=True)
    if barrier is not None:
        barrier()
    seconds = time.perf_counter() - t0
    return {v: EmbedResult(Path(view_dirs[v]), metas[v], encoded, any_shard.n_chunks, seconds) for v in views}


def _merge(job: Path, key: dict[str, Any], view_dir: Path, dataset, model_id: str, view: str,
           extra: dict[str, Any] | None) -> dict[str, Any]:
    """Concatenate the shards into the final atomic files; refuses if any shard is unfinished."""
    n, dim, world = key["n"], key["dim"], key["world_size"]
    with atomic_path(view_dir / EMBEDDINGS_FILE) as tmp:
        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float16, shape=(n, dim))
        valid = np.zeros(n, dtype=bool)
        for r in range(world):
            folder = job / f"shard-{r}-of-{world}"
            a, b = shard_range(n, r, world)
            try:
                done = np.load(folder / "done.npy")
                shard_key = json.loads((folder / "shard.json").read_text())
            except (OSError, ValueError) as exc:
                raise IndexError_(f"{folder}: shard of rank {r} is missing or unreadable ({exc})") from exc
            if shard_key != {**key, "rank": r, "start": a, "stop": b} or not done.all():
                raise IndexError_(f"{folder}: shard of rank {r} is incomplete; re-run the same embed command")
            out[a:b] = np.load(folder / "embeddings.npy", mmap_mode="r")
            valid[a:b] = np.load(folder / "valid.npy")
        out.flush()
        del out
    return _finish(view_dir, valid, (n, dim), model_id, key["model_hash"], dataset.hash, view, dataset.name, extra)
