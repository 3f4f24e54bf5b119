"""nDCG@10 and cross-modal scores: hand-checked values, then the report on a built dataset."""

from __future__ import annotations

import numpy as np
import pytest

from engine.index import retrieval_eval as rev
from engine.index.pipeline import embed_view


def test_ndcg_hand_values():
    assert rev.ndcg_at_k([1, 1, 1], 3) == pytest.approx(1.0)
    assert rev.ndcg_at_k([0, 0, 0], 3) == 0.0
    # one relevant item at rank 2: (1/log2 3) / (1/log2 2)
    assert rev.ndcg_at_k([0, 1, 0], 1) == pytest.approx(1 / np.log2(3))
    # more relevant items than k: ideal is k ones
    assert rev.ndcg_at_k([1] * 10 + [0], 50) == pytest.approx(1.0)


def test_class_ndcg_perfect_and_random_separation():
    rng = np.random.default_rng(0)
    labels = np.r_[np.ones(20, bool), np.zeros(80, bool)]
    separated = np.where(labels[:, None], [1.0, 0.0], [0.0, 1.0]) + 0.01 * rng.standard_normal((100, 2))
    r = rev.class_ndcg(separated, labels)
    assert r["ndcg10"] == pytest.approx(1.0) and r["queries"] == 20
    assert r["chance"] == pytest.approx(19 / 99)
    noise = rev.class_ndcg(rng.standard_normal((100, 16)), labels)
    assert abs(noise["ndcg10"] - noise["chance"]) < 0.15


def test_cross_modal_scores():
    x = np.eye(5)
    r = rev.cross_modal(x, x, k=2)
    assert r["top1"] == 1.0 and r["top2"] == 1.0 and r["chance_top1"] == pytest.approx(0.2)
    shuffled = rev.cross_modal(x, x[[1, 0, 2, 3, 4]], k=2)
    assert shuffled["top1"] == pytest.approx(0.6)


def test_report_on_baseline_views(index_dataset, monkeypatch, tmp_path):
    for view in ("image", "spectrum"):
        embed_view(index_dataset, "pixel-pca", view, progress=False)
    rep = rev.evaluate(index_dataset, "pixel-pca", views=("image", "spectrum"), baseline=None)
    img = rep["views"]["image"]
    assert set(img) == {"spirals", "mergers", "lenses"}
    # the synthetic classes are visually distinct: the pixel baseline beats chance clearly
    assert img["spirals"]["ndcg10"] > img["spirals"]["chance"] + 0.3
    assert img["mergers"]["ndcg10"] > img["mergers"]["chance"] + 0.3
    # queries are galaxies only: one of the 3 lenses (row 5) is labelled qso in the fixture
    assert img["spirals"]["queries"] == 16 and img["lenses"]["queries"] == 2
    assert rep["cross_modal"] == {} or all(v["n"] > 0 for v in rep["cross_modal"].values())


def test_query_ndcg_averages_to_class_ndcg():
    rng = np.random.default_rng(1)
    labels = rng.random(300) < 0.2
    x = rng.standard_normal((300, 8)) + labels[:, None] * 0.8
    per_query = rev.query_ndcg(x, labels)
    assert per_query.shape == (labels.sum(),)
    assert per_query.mean() == pytest.approx(rev.class_ndcg(x, labels)["ndcg10"])


def test_paired_bootstrap_separates_a_real_gap_from_noise():
    rng = np.random.default_rng(2)
    b = rng.random(200)
    ahead = rev.paired_bootstrap(b + 0.2, b)
    assert ahead["diff"] == pytest.approx(0.2) and ahead["ci95"][0] > 0 and ahead["p_not_better"] == 0.0
    noise = rev.paired_bootstrap(rng.random(40), rng.random(40))
    assert noise["ci95"][0] < 0 < noise["ci95"][1] and 0.0 < noise["p_not_better"] < 1.0
    assert rev.paired_bootstrap(np.array([]), np.array([]))["diff"] is None


def test_compare_stores_pairs_the_same_queries(index_dataset):
    """A view that separates spirals is ahead of noise with an interval above 0; against itself, level."""
    from engine.data.store import open_dataset
    from engine.index.embeddings import EmbeddingStore, write_embeddings

    ds = open_dataset(index_dataset)
    labels = rev.CLASSES["spirals"](ds.catalog)
    valid = np.ones(len(ds), bool)
    rng = np.random.default_rng(3)
    stores = {}
    for name, vectors in {"oracle": np.where(labels[:, None], 1.0, -1.0) + 0.1 * rng.standard_normal((len(ds), 4)),
                          "noise": rng.standard_normal((len(ds), 4))}.items():
        vdir = rev.paths.view_dir(ds.name, name, "image")
        write_embeddings(vdir, vectors, valid, model_id=name, model_hash=name, dataset_hash=ds.hash, view="image")
        stores[name] = EmbeddingStore.open(vdir)
    ahead = rev.compare_stores(ds, stores["oracle"], stores["noise"])["spirals"]
    assert ahead["queries"] == int((labels & (ds.catalog["kind"] == "galaxy").to_numpy()).sum())
    assert ahead["diff"] > 0.3 and ahead["ci95"][0] > 0 and ahead["p_not_better"] == 0.0
    level = rev.compare_stores(ds, stores["oracle"], stores["oracle"])["spirals"]
    assert level["diff"] == 0.0 and level["p_not_better"] == 1.0
