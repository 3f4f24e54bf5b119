"""Build FAISS cosine-similarity indexes, choose their kind, tune them to a measured recall.

Cosine similarity = inner product on L2-normalised vectors (``METRIC_INNER_PRODUCT``).
Three kinds (thresholds and reasons in ``docs/index.md``):

- ``flat``  — exact ``IndexFlatIP``; no build, recall 1 by construction. Small sets.
- ``hnsw``  — ``HNSW32,Flat``: graph search, no training, best latency/recall up to a few
  million vectors while the raw vectors fit in RAM. CPU only.
- ``ivfpq`` — ``IVF{nlist},PQ{m}x{bits},RFlat``: inverted lists of PQ codes, candidates
  re-ranked exactly (``IndexRefineFlat``) because PQ scores of embedding vectors are rough.
  Trains on a sample and adds in batches, so it scales past RAM-sized graphs and builds on GPU.

Approximate kinds are tuned after the build: the search parameter (``efSearch``; ``nprobe`` and
the re-rank factor) is raised until recall@10 against exact search on a query sample reaches
the target, and the *measured* recall and per-query latency go into the manifest.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

import faiss
import numpy as np
from tqdm.auto import tqdm

from engine.errors import IndexError_

log = logging.getLogger(__name__)

KINDS: tuple[str, ...] = ("flat", "hnsw", "ivfpq")
KIND_CHOICES: tuple[str, ...] = ("auto", *KINDS)

#: Up to this many vectors exact search answers one query within ~5 ms on this machine: one
#: query scans every vector once (memory bound, ~26 ms at 100 k x 768; bench/bench_index.py).
FLAT_MAX_N = 20_000
#: Up to this many vectors HNSW (raw vectors + graph, ~3.3 KB per 768-d vector) is built: its
#: graph build is the slow part (~100 k vectors per 1.5-5 min on 2 cores, bench/results/index.json),
#: so past 1 M IVF-PQ + exact re-ranking (minutes to train and add, GPU-capable) takes over.
HNSW_MAX_N = 1_000_000
HNSW_M = 32
HNSW_EF_CONSTRUCTION = 64
RECALL_TARGET = 0.95
RECALL_K = 10
#: Search-effort multiplier over the cheapest setting that met the target on database queries.
SEARCH_MARGIN = 2
ADD_BATCH = 20_000

_EF_SEARCH_GRID = (16, 32, 48, 64, 96, 128, 192, 256, 384, 512)
_NPROBE_GRID = (1, 2, 4, 8, 16, 32, 64, 128, 256)
_K_FACTOR_GRID = (4, 8, 16, 32, 64, 128)


@dataclass
class BuiltIndex:
    """A built index plus what the manifest needs to say about it."""

    index: faiss.Index
    kind: str
    factory: str
    build_s: float
    built_on: str = "cpu"
    params: dict[str, Any] = field(default_factory=dict)


def normalize_rows(x: np.ndarray) -> np.ndarray:
    """float32 C-contiguous copy with unit rows (all-zero rows stay zero rather than NaN)."""
    out = np.array(x, dtype=np.float32, order="C", copy=True)
    if out.ndim != 2:
        raise ValueError(f"vectors must be 2-D (n, dim), got shape {out.shape!r}")
    norms = np.linalg.norm(out, axis=1, keepdims=True)
    np.divide(out, norms, out=out, where=norms > 0)
    return out


def choose_kind(n: int) -> str:
    """The ``--kind auto`` rule: exact when cheap enough, HNSW while it builds in reasonable time, else IVF-PQ."""
    if n <= FLAT_MAX_N:
        return "flat"
    if n <= HNSW_MAX_N:
        return "hnsw"
    return "ivfpq"


def _pow2_floor(x: float) -> int:
    return 1 << max(0, int(np.floor(np.log2(max(x, 1.0)))))


def ivf_shape(n: int, dim: int) -> tuple[int, int, int]:
    """(nlist, pq_m, pq_bits) for ``n`` vectors of ``dim``.

    nlist ~ sqrt(n) (power of two) keeps lists ~sqrt(n) long and leaves >= 39 training points
    per centroid (FAISS's minimum); PQ sub-vectors of 8 dims (96 bytes per 768-d vector);
    4-bit codes when there are too few points to train 256 centroids per sub-quantizer.
    """
    if n < 64:
        raise IndexError_(f"--kind ivfpq needs at least 64 vectors, got {n}; use --kind flat")
    nlist = max(1, min(_pow2_floor(np.sqrt(n)), _pow2_floor(n / 39)))
    m = max(d for d in range(1, max(1, dim // 8) + 1) if dim % d == 0)
    bits = 8 if n >= 256 * 39 else 4
    return nlist, m, bits


def factory_string(kind: str, n: int, dim: int) -> str:
    if kind == "flat":
        return "Flat"
    if kind == "hnsw":
        return f"HNSW{HNSW_M},Flat"
    if kind == "ivfpq":
        nlist, m, bits = ivf_shape(n, dim)
        return f"IVF{nlist},PQ{m}x{bits},RFlat"
    raise IndexError_(f"unknown index kind {kind!r}; accepted: {', '.join(KIND_CHOICES)}")


def gpu_available() -> bool:
    """True when the faiss build has GPU support (``faiss-gpu``) and sees a device."""
    return hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0


def build_index(
    vectors: np.ndarray,
    kind: str = "auto",
    *,
    ef_construction: int = HNSW_EF_CONSTRUCTION,
    seed: int = 0,
    use_gpu: bool | None = None,
    progress: bool = False,
) -> BuiltIndex:
    """Build an index over ``vectors`` (already unit rows, float32); ids are row positions.

    ``use_gpu=None`` uses a GPU when :func:`gpu_available`; HNSW always builds on CPU.
    """
    if kind not in KIND_CHOICES:
        raise IndexError_(f"unknown index kind {kind!r}; accepted: {', '.join(KIND_CHOICES)}")
    n, dim = vectors.shape
    if n == 0:
        raise IndexError_("no valid vectors to index (every object lacks this view's modalities)")
    kind = choose_kind(n) if kind == "auto" else kind
    factory = factory_string(kind, n, dim)
    gpu = gpu_available() if use_gpu is None else use_gpu
    if gpu and not gpu_available():
        raise IndexError_("a GPU build was asked for but faiss sees no GPU (install faiss-gpu on a GPU machine)")
    t0 = time.perf_counter()
    index = faiss.index_factory(dim, factory, faiss.METRIC_INNER_PRODUCT)
    built_on = "cpu"
    if kind == "hnsw":
        index.hnsw.efConstruction = ef_construction
        _add_batched(index, vectors, progress, "HNSW add")
    elif kind == "ivfpq":
        ivf = faiss.downcast_index(faiss.extract_index_ivf(index))
        ivf.cp.seed = seed
        ivf.pq.cp.seed = seed
        ivf.do_polysemous_training = False  # the factory turns it on; it costs minutes and we never use Hamming filtering
        train = _training_sample(vectors, ivf.nlist, seed)
        if gpu:
            index, built_on = _build_ivfpq_gpu(index, train, vectors), "gpu"
        else:
            index.train(train)
            _add_batched(index, vectors, progress, "IVF-PQ add")
    else:
        index.add(vectors)
    build_s = time.perf_counter() - t0
    return BuiltIndex(index=index, kind=kind, factory=factory, build_s=build_s, built_on=built_on)


def _training_sample(vectors: np.ndarray, nlist: int, seed: int) -> np.ndarray:
    """Up to 64 points per centroid (at least 256 * 39 for PQ codebooks) — more barely helps."""
    n = len(vectors)
    want = max(64 * nlist, 256 * 39)
    if n <= want:
        return vectors
    pick = np.sort(np.random.default_rng(seed).choice(n, size=want, replace=False))
    return np.ascontiguousarray(vectors[pick])


def _add_batched(index: faiss.Index, vectors: np.ndarray, progress: bool, desc: str) -> None:
    n = len(vectors)
    with tqdm(total=n, desc=desc, unit="vec", disable=not progress) as bar:
        for start in range(0, n, ADD_BATCH):
            index.add(np.ascontiguousarray(vectors[start : start + ADD_BATCH]))
            bar.update(min(ADD_BATCH, n - start))


def _build_ivfpq_gpu(index: faiss.Index, train: np.ndarray, vectors: np.ndarray) -> faiss.Index:
    """Train and fill the IVF-PQ part on the GPU(s), bring it back to CPU, attach the exact re-rank store."""
    refine = faiss.downcast_index(index)
    base = faiss.downcast_index(refine.base_index)
    options = faiss.GpuMultipleClonerOptions()
    options.useFloat16 = True  # PQ with > 48 sub-quantizers needs float16 lookup tables on GPU
    gpu_base = faiss.index_cpu_to_all_gpus(base, options)
    gpu_base.train(train)
    for start in range(0, len(vectors), ADD_BATCH):
        gpu_base.add(np.ascontiguousarray(vectors[start : start + ADD_BATCH]))
    cpu_base = faiss.index_gpu_to_cpu(gpu_base)
    out = faiss.IndexRefineFlat(cpu_base)
    out.add(vectors)  # fills only the refine store: the base already holds its codes
    return out


# --- search parameters ----------------------------------------------------------------


def search_parameters(kind: str, params: dict[str, Any]) -> faiss.SearchParameters | None:
    """Per-call search parameters (no mutation of the shared index, so concurrent readers are safe)."""
    if kind == "hnsw":
        return faiss.SearchParametersHNSW(efSearch=int(params.get("efSearch", 64)))
    if kind == "ivfpq":
        base = faiss.SearchParametersIVF(nprobe=int(params.get("nprobe", 16)))
        refine = faiss.IndexRefineSearchParameters(k_factor=float(params.get("k_factor", 8)), base_index_params=base)
        refine._base_ref = base  # keep the SWIG object alive as long as the parent
        return refine
    return None


def exact_knn(database: np.ndarray, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact inner-product top-k (BLAS); the ground truth recall is measured against."""
    k = min(k, len(database))
    return faiss.knn(np.ascontiguousarray(queries), np.ascontiguousarray(database), k, metric=faiss.METRIC_INNER_PRODUCT)


def drop_self(ids: np.ndarray, query_ids: np.ndarray, k: int) -> np.ndarray:
    """Remove each query's own id from its result row (or the last entry if absent), keep ``k``."""
    out = np.full((len(ids), k), -1, dtype=np.int64)
    for i, (row, q) in enumerate(zip(ids, query_ids, strict=True)):
        kept = row[row != q][:k]
        out[i, : len(kept)] = kept
    return out


def recall_at_k(found: np.ndarray, truth: np.ndarray) -> float:
    """Mean fraction of the true top-k present in the returned top-k (the usual 10-recall@10)."""
    hits = [len(set(f[f >= 0]) & set(t[t >= 0])) / max(1, (t >= 0).sum()) for f, t in zip(found, truth, strict=True)]
    return float(np.mean(hits)) if hits else 1.0


def query_sample(n: int, size: int, seed: int) -> np.ndarray:
    return np.sort(np.random.default_rng(seed).choice(n, size=min(size, n), replace=False))


@dataclass
class Tuning:
    """Chosen search parameters (with margin), their measured recall, every setting tried."""

    params: dict[str, Any]
    recall: float
    tried: list[dict[str, Any]]
    minimal: dict[str, Any] = field(default_factory=dict)  # cheapest setting that met the target


def tune(
    built: BuiltIndex,
    vectors: np.ndarray,
    *,
    k: int = RECALL_K,
    target: float = RECALL_TARGET,
    n_queries: int = 500,
    seed: int = 0,
) -> Tuning:
    """Pick the cheapest search parameters whose recall@k (self excluded) meets ``target``.

    Queries are database vectors; the truth is exact search over the same vectors. If no
    setting reaches the target the best one is kept and its (lower) recall is reported.
    """
    qi = query_sample(len(vectors), n_queries, seed)
    queries = np.ascontiguousarray(vectors[qi])
    kk = min(k + 1, len(vectors))
    truth = drop_self(exact_knn(vectors, queries, kk)[1], qi, k)
    tried: list[dict[str, Any]] = []

    def measure(params: dict[str, Any]) -> float:
        _, ids = built.index.search(queries, kk, params=search_parameters(built.kind, params))
        rec = recall_at_k(drop_self(ids, qi, k), truth)
        tried.append({**params, "recall": rec})
        return rec

    if built.kind == "flat":
        return Tuning({}, measure({}), tried)
    if built.kind == "hnsw":
        grid = [{"efSearch": ef} for ef in _EF_SEARCH_GRID if ef >= k]
    else:
        nlist = faiss.extract_index_ivf(built.index).nlist
        grid = [
            {"nprobe": p, "k_factor": f} for p in _NPROBE_GRID if p <= nlist for f in _K_FACTOR_GRID
        ]
        grid.sort(key=lambda g: (g["nprobe"] * (1 + g["k_factor"] / 64), g["k_factor"]))
    best: tuple[float, dict[str, Any]] = (-1.0, grid[-1])
    for params in grid:
        rec = measure(params)
        if rec > best[0]:
            best = (rec, params)
        if rec >= target:
            safe = _with_margin(built, params)
            return Tuning(safe, measure(safe) if safe != params else rec, tried, minimal=params)
    log.warning("recall target %.2f not reached; best %.3f with %s", target, *best)
    return Tuning(best[1], best[0], tried, minimal=best[1])


def _with_margin(built: BuiltIndex, params: dict[str, Any]) -> dict[str, Any]:
    """Double the search effort found on database queries: queries from outside the database
    (new data, cross-modal, feedback) land away from graph nodes/centroids and need about that
    much more (bench: HNSW held-out recall 0.91 at the efSearch where self-queries gave 0.97)."""
    if built.kind == "hnsw":
        return {"efSearch": int(params["efSearch"]) * SEARCH_MARGIN}
    if built.kind == "ivfpq":
        nlist = faiss.extract_index_ivf(built.index).nlist
        return {**params, "nprobe": min(nlist, int(params["nprobe"]) * SEARCH_MARGIN)}
    return params


def single_query_latency_ms(
    built: BuiltIndex, vectors: np.ndarray, params: dict[str, Any], *, k: int = RECALL_K, n: int = 200, seed: int = 1
) -> dict[str, float]:
    """p50/p99 of one-query-at-a-time search (what the app does), in milliseconds."""
    qi = query_sample(len(vectors), n, seed)
    sp = search_parameters(built.kind, params)
    times = []
    for i in qi:
        q = vectors[i : i + 1]
        t0 = time.perf_counter()
        built.index.search(q, min(k + 1, len(vectors)), params=sp)
        times.append((time.perf_counter() - t0) * 1e3)
    return {"p50_ms": float(np.percentile(times, 50)), "p99_ms": float(np.percentile(times, 99)), "n": len(times)}
