"""Retrieval quality of embeddings: the AION-1 paper's nDCG@10 protocol and cross-modal recovery.

Class retrieval (paper, Sec. "similarity search"): for every member of a class, rank all other
galaxies of the view by cosine similarity of their mean embeddings mapped into the view's
search space (the whitening the Searcher uses; ``search_space.py``), and, for comparison, of
the raw mean embeddings; relevance = same class;
nDCG@10 averaged over the queries. Classes on the mock: spirals (Galaxy10 barred/unbarred
tight/loose spiral), mergers (Galaxy10 "merging") and strong lenses (``truth_is_lens``). The
chance level is the expected nDCG of a random ranking (prevalence of the class among the
candidates), reported beside each score.

Cross-modal: for objects with both views, query the target view's embeddings with the source
view's raw embedding of the same object, both mapped with the *target* view's space (the
Searcher's rule); top-1 / top-10 = fraction whose own entry ranks first /
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
from engine.index.search_space import SPACE_FILE, SearchSpace

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


def class_ndcg(vectors: np.ndarray, labels: np.ndarray, k: int = K) -> dict[str, Any]:
    """Mean nDCG@k over queries = members of the class; self excluded from each ranking."""
    labels = np.asarray(labels, bool)
    n, n_pos = len(labels), int(labels.sum())
    if n_pos < 2 or n < k + 1:
        return {"ndcg10": None, "chance": None, "queries": n_pos, "candidates": n}
    x = normalize_rows(vectors)
    queries = np.flatnonzero(labels)
    sims = x[queries] @ x.T
    sims[np.arange(len(queries)), queries] = -np.inf
    top = np.argsort(-sims, axis=1, kind="stable")[:, :k]
    scores = [ndcg_at_k(labels[t], n_pos - 1, k) for t in top]
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
    return SearchSpace.fit(np.asarray(store.vectors[store.valid_rows], dtype=np.float32)), "fitted for this report"


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
    ``views_raw`` / ``baseline_raw`` / ``cross_modal_raw`` with raw mean embeddings, as before
    search spaces existed; ``search_space`` says which space each view used.
    """
    ds = dataset_dir if isinstance(dataset_dir, Dataset) else open_dataset(dataset_dir)
    report: dict[str, Any] = {"dataset": ds.name, "model": paths.model_id_of(model), "k": k, "views": {},
                              "baseline": {}, "cross_modal": {}, "views_raw": {}, "baseline_raw": {},
                              "cross_modal_raw": {}, "search_space": {}}
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
                report["baseline"][view], report["baseline_raw"][view], _, info = _both_ways(
                    ds, EmbeddingStore.open(bdir), k)
                report["search_space"][f"{baseline}/{view}"] = info
    from engine.index.baseline import is_baseline

    for src, dst in cross if not is_baseline(model) else ():  # the baseline's views are unrelated spaces
        if src in stores and dst in stores and stores[src].dim == stores[dst].dim:
            both = np.flatnonzero(stores[src].valid & stores[dst].valid)
            q = np.asarray(stores[src].vectors[both], dtype=np.float32)
            t = np.asarray(stores[dst].vectors[both], dtype=np.float32)
            report["cross_modal"][f"{src}->{dst}"] = cross_modal(spaces[dst].apply(q), spaces[dst].apply(t), k)
            report["cross_modal_raw"][f"{src}->{dst}"] = cross_modal(q, t, k)
    return report
