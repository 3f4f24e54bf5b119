"""Retrieval quality of embeddings: the AION-1 paper's nDCG@10 protocol and cross-modal recovery.

Class retrieval (paper, Sec. "similarity search"): for every member of a class, rank all other
galaxies of the view by cosine similarity of their embeddings (pooled as the view prescribes,
``engine/model/pooling.py``) mapped into the view's search space (the whitening the Searcher
uses; ``search_space.py``), and, for comparison, of the raw embeddings; relevance = same class;
nDCG@10 averaged over the queries. Classes on the mock: spirals (Galaxy10 barred/unbarred
tight/loose spiral), mergers (Galaxy10 "merging") and strong lenses (``truth_is_lens``). The
chance level is the expected nDCG of a random ranking (prevalence of the class among the
candidates), reported beside each score.

Cross-modal: for objects with both views, query the target view's embeddings with the source
view's embedding of the same object, both in the model's shared (mean-pooled) space and mapped
with the *target* view's space (the Searcher's rule, ``Searcher.cross_modal``); top-1 / top-10 = fraction whose own entry ranks first /
in the first ten; chance = 1/N and 10/N.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
import pandas as pd

from engine import paths
from engine.data import schema
from engine.data.store import Dataset, open_dataset
from engine.errors import EngineError
from engine.index.embeddings import EmbeddingStore
from engine.index.faiss_build import normalize_rows
from engine.index.manifest import MANIFEST_FILE, VIEWS, read_json
from engine.index.search_space import SPACE_FILE, SearchSpace, axes_cap

K = 10
_SPIRAL_NAMES = ("barred spiral", "unbarred tight spiral", "unbarred loose spiral")

CLASSES: dict[str, Callable[[pd.DataFrame], np.ndarray]] = {
    "spirals": lambda cat: cat["truth_morphology"].isin(
        [schema.MORPHOLOGY_CLASSES.index(n) for n in _SPIRAL_NAMES]).to_numpy(),
    "mergers": lambda cat: (cat["truth_morphology"] == schema.MORPHOLOGY_CLASSES.index("merging")).to_numpy(),
    "lenses": lambda cat: cat["truth_is_lens"].fillna(False).astype(bool).to_numpy(),
}


def _discounts(k: int) -> np.ndarray:
    return 1.0 / np.log2(np.arange(2, k + 2))


def ndcg_at_k(relevance: np.ndarray, n_relevant: int, k: int = K) -> float:
    """nDCG@k of one ranked relevance list (binary) given how many relevant items exist."""
    rel = np.asarray(relevance, dtype=np.float64)[:k]
    ideal = _discounts(k)[: min(k, n_relevant)].sum()
    return float((rel * _discounts(k)[: len(rel)]).sum() / ideal) if ideal > 0 else 0.0


def query_ndcg(vectors: np.ndarray, labels: np.ndarray, k: int = K) -> np.ndarray:
    """nDCG@k of each query (each member of the class, in row order); self excluded from its ranking."""
    labels = np.asarray(labels, bool)
    n_pos = int(labels.sum())
    x = normalize_rows(vectors)
    queries = np.flatnonzero(labels)
    scores = np.empty(len(queries))
    for a in range(0, len(queries), 1024):  # bounded memory: 1024 x n similarities at a time
        q = queries[a : a + 1024]
        sims = x[q] @ x.T
        sims[np.arange(len(q)), q] = -np.inf
        top = np.argsort(-sims, axis=1, kind="stable")[:, :k]
        scores[a : a + len(q)] = [ndcg_at_k(labels[t], n_pos - 1, k) for t in top]
    return scores


def class_ndcg(vectors: np.ndarray, labels: np.ndarray, k: int = K) -> dict[str, Any]:
    """Mean nDCG@k over queries = members of the class; self excluded from each ranking."""
    labels = np.asarray(labels, bool)
    n, n_pos = len(labels), int(labels.sum())
    if n_pos < 2 or n < k + 1:
        return {"ndcg10": None, "chance": None, "queries": n_pos, "candidates": n}
    scores = query_ndcg(vectors, labels, k)
    p = (n_pos - 1) / (n - 1)
    ideal = _discounts(k)[: min(k, n_pos - 1)].sum()
    return {"ndcg10": float(np.mean(scores)), "chance": float(p * _discounts(k).sum() / ideal), "queries": n_pos,
            "candidates": n}


def cross_modal(query: np.ndarray, target: np.ndarray, k: int = K) -> dict[str, Any]:
    """Row i of ``query`` and of ``target`` are the same object: how often does it come back first / in top k?"""
    n = len(query)
    if n == 0:
        return {"top1": None, "top10": None, "chance_top1": None, "chance_top10": None, "n": 0}
    sims = normalize_rows(query) @ normalize_rows(target).T
    own = sims[np.arange(n), np.arange(n)]
    rank = (sims > own[:, None]).sum(axis=1)  # 0 = first
    return {"top1": float((rank == 0).mean()), f"top{k}": float((rank < k).mean()), "chance_top1": 1.0 / n,
            f"chance_top{k}": min(1.0, k / n), "n": n}


def _galaxy_rows(dataset: Dataset, store: EmbeddingStore) -> np.ndarray:
    return np.flatnonzero(store.valid & (dataset.catalog["kind"].to_numpy() == "galaxy"))


def view_space(store: EmbeddingStore) -> tuple[SearchSpace, str]:
    """The view's search space and where it came from: the index's own file when the folder's
    manifest is built from these embeddings, otherwise fitted here exactly as an index build
    would fit it (on every valid row of the view), e.g. for baseline views embedded but not indexed."""
    vdir = store.view_dir
    try:
        manifest = read_json(vdir / MANIFEST_FILE, "index manifest")
        if manifest.get("embeddings_run") == store.meta.get("run_id") and \
                manifest.get("search_space", {}).get("file") == SPACE_FILE:
            space = SearchSpace.load(vdir)
            if space.dim == store.dim:
                return space, f"index ({SPACE_FILE})"
    except (EngineError, OSError, ValueError):
        pass  # no (usable) index: fit below
    return (SearchSpace.fit(np.asarray(store.vectors[store.valid_rows], dtype=np.float32),
                            max_axes=axes_cap(store.pooling)), "fitted for this report")


def paired_bootstrap(a: np.ndarray, b: np.ndarray, *, n_boot: int = 5000, seed: int = 0) -> dict[str, Any]:
    """Is ``a`` better than ``b`` on the same queries? Mean difference, its 95 % bootstrap interval
    (queries resampled) and the share of resamples where ``a`` is not ahead."""
    d = np.asarray(a, np.float64) - np.asarray(b, np.float64)
    if len(d) == 0:
        return {"diff": None, "ci95": None, "p_not_better": None, "queries": 0}
    boots = d[np.random.default_rng(seed).integers(0, len(d), (n_boot, len(d)))].mean(axis=1)
    return {"diff": float(d.mean()), "ci95": [float(np.percentile(boots, 2.5)), float(np.percentile(boots, 97.5))],
            "p_not_better": float((boots <= 0).mean()), "queries": int(len(d))}


def compare_stores(dataset: Dataset, store: EmbeddingStore, other: EmbeddingStore, k: int = K, *,
                   space: SearchSpace | None = None, other_space: SearchSpace | None = None) -> dict[str, Any]:
    """Per class, :func:`paired_bootstrap` of ``store`` against ``other`` over the galaxies both
    views hold (same queries, same candidates), each in its space (default :func:`view_space`)."""
    rows = np.flatnonzero(store.valid & other.valid & (dataset.catalog["kind"].to_numpy() == "galaxy"))
    cat = dataset.catalog.iloc[rows]
    space = view_space(store)[0] if space is None else space
    other_space = view_space(other)[0] if other_space is None else other_space
    x = space.apply(np.asarray(store.vectors[rows], dtype=np.float32))
    y = other_space.apply(np.asarray(other.vectors[rows], dtype=np.float32))
    out = {}
    for name, select in CLASSES.items():
        try:
            labels = select(cat)
        except KeyError:
            continue
        if labels.sum() < 2 or len(labels) < k + 1:
            continue
        out[name] = paired_bootstrap(query_ndcg(x, labels, k), query_ndcg(y, labels, k))
    return out


def evaluate_store(dataset: Dataset, store: EmbeddingStore, k: int = K, *,
                   space: SearchSpace | None = None) -> dict[str, Any]:
    """Class nDCG@k for each mock class the catalog has truth for, among the view's galaxies,
    in ``space`` (default: :func:`view_space`; pass ``SearchSpace.identity(dim)`` for raw cosines)."""
    rows = _galaxy_rows(dataset, store)
    cat = dataset.catalog.iloc[rows]
    space = view_space(store)[0] if space is None else space
    vecs = space.apply(np.asarray(store.vectors[rows], dtype=np.float32))
    out = {}
    for name, select in CLASSES.items():
        try:
            labels = select(cat)
        except KeyError:  # real data: no truth column
            continue
        out[name] = class_ndcg(vecs, labels, k)
    return out


def _both_ways(dataset: Dataset, store: EmbeddingStore, k: int) -> tuple[dict, dict, SearchSpace, dict]:
    space, source = view_space(store)
    return (evaluate_store(dataset, store, k, space=space),
            evaluate_store(dataset, store, k, space=SearchSpace.identity(store.dim)),
            space, {**space.describe(), "source": source})


def evaluate(
    dataset_dir: str | os.PathLike | Dataset,
    model: str | os.PathLike,
    *,
    views: Iterable[str] = VIEWS,
    baseline: str | None = "pixel-pca",
    cross: Iterable[tuple[str, str]] = (("image", "spectrum"), ("spectrum", "image")),
    k: int = K,
) -> dict[str, Any]:
    """Retrieval report for ``model`` (and the baseline, if its views were embedded) over the views present.

    ``views`` / ``baseline`` / ``cross_modal`` are scored in each view's search space;
    ``views_raw`` / ``baseline_raw`` / ``cross_modal_raw`` with raw embeddings, as before
    search spaces existed; ``search_space`` says which space each view used.
    ``versus_baseline`` / ``versus_baseline_raw``: per view and class, the model (in its space)
    minus the baseline (in its space / raw) on the same queries, with a 95 % bootstrap interval.
    """
    ds = dataset_dir if isinstance(dataset_dir, Dataset) else open_dataset(dataset_dir)
    report: dict[str, Any] = {"dataset": ds.name, "model": paths.model_id_of(model), "k": k, "views": {},
                              "baseline": {}, "cross_modal": {}, "views_raw": {}, "baseline_raw": {},
                              "cross_modal_raw": {}, "search_space": {}, "versus_baseline": {},
                              "versus_baseline_raw": {}}
    stores: dict[str, EmbeddingStore] = {}
    spaces: dict[str, SearchSpace] = {}
    for view in views:
        vdir = paths.view_dir(ds.name, model, view)
        if (vdir / "embeddings.npy").is_file():
            stores[view] = EmbeddingStore.open(vdir)
            report["views"][view], report["views_raw"][view], spaces[view], info = _both_ways(ds, stores[view], k)
            report["search_space"][f"{report['model']}/{view}"] = info
        if baseline is not None:
            bdir = paths.view_dir(ds.name, baseline, view)
            if (bdir / "embeddings.npy").is_file():
                bstore = EmbeddingStore.open(bdir)
                report["baseline"][view], report["baseline_raw"][view], bspace, info = _both_ways(ds, bstore, k)
                report["search_space"][f"{baseline}/{view}"] = info
                if view in stores:  # is the model ahead of the baseline beyond query-sampling noise?
                    report["versus_baseline"][view] = compare_stores(ds, stores[view], bstore, k, space=spaces[view],
                                                                     other_space=bspace)
                    report["versus_baseline_raw"][view] = compare_stores(
                        ds, stores[view], bstore, k, space=spaces[view], other_space=SearchSpace.identity(bstore.dim))
    from engine.index.baseline import is_baseline

    for src, dst in cross if not is_baseline(model) else ():  # the baseline's views are unrelated spaces
        if src in stores and dst in stores:
            both = np.flatnonzero(stores[src].valid & stores[dst].valid)
            q, t = stores[src].shared(both), stores[dst].shared(both)
            if q.shape[1] != t.shape[1]:
                continue
            space = spaces[dst] if stores[dst].pooling == "mean" else SearchSpace.fit(
                stores[dst].shared(stores[dst].valid_rows))  # the Searcher's rule (cross_modal)
            report["cross_modal"][f"{src}->{dst}"] = cross_modal(space.apply(q), space.apply(t), k)
            report["cross_modal_raw"][f"{src}->{dst}"] = cross_modal(q, t, k)
    return report

