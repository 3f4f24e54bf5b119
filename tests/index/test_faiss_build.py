"""Index kinds agree with exact search; recall in the manifest is measured, not assumed."""

from __future__ import annotations

import numpy as np
import pytest

from engine.errors import IndexError_
from engine.index import faiss_build as fb


def _clustered(n=3000, dim=32, seed=0):
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((30, dim))
    x = centers[rng.integers(30, size=n)] + 0.4 * rng.standard_normal((n, dim))
    return fb.normalize_rows(x)


@pytest.fixture(scope="module")
def vectors():
    return _clustered()


def test_choose_kind_thresholds():
    assert fb.choose_kind(10) == "flat"
    assert fb.choose_kind(fb.FLAT_MAX_N) == "flat"
    assert fb.choose_kind(fb.FLAT_MAX_N + 1) == "hnsw"
    assert fb.choose_kind(fb.HNSW_MAX_N + 1) == "ivfpq"


def test_unknown_kind_and_empty_input_are_clear_errors():
    with pytest.raises(IndexError_, match="unknown index kind 'annoy'; accepted: auto, flat, hnsw, ivfpq"):
        fb.build_index(np.ones((4, 4), np.float32), "annoy")
    with pytest.raises(IndexError_, match="no valid vectors"):
        fb.build_index(np.zeros((0, 4), np.float32), "flat")
    with pytest.raises(IndexError_, match="at least 64 vectors"):
        fb.build_index(np.ones((10, 4), np.float32), "ivfpq")


def test_normalize_keeps_zero_rows_finite():
    x = fb.normalize_rows(np.array([[3.0, 4.0], [0.0, 0.0]]))
    np.testing.assert_allclose(x, [[0.6, 0.8], [0.0, 0.0]])


@pytest.mark.parametrize("kind", ["hnsw", "ivfpq"])
def test_approximate_agrees_with_exact(vectors, kind):
    flat = fb.build_index(vectors, "flat")
    approx = fb.build_index(vectors, kind)
    tuning = fb.tune(approx, vectors, n_queries=200)
    assert tuning.recall >= fb.RECALL_TARGET
    q = vectors[:100]
    d_exact, i_exact = flat.index.search(q, 10)
    d_approx, i_approx = approx.index.search(q, 10, params=fb.search_parameters(kind, tuning.params))
    assert fb.recall_at_k(i_approx, i_exact) >= 0.95
    np.testing.assert_array_equal(i_approx[:, 0], np.arange(100))  # each vector finds itself first
    # re-ranked / exact-distance scores are true cosines
    np.testing.assert_allclose(d_approx[:, 0], 1.0, atol=1e-4)
    assert "IVF" not in approx.factory or approx.factory.endswith(",RFlat")


def test_recall_is_measured_not_assumed(vectors):
    """A deliberately starved IVF-PQ setting reports the low recall it really has."""
    built = fb.build_index(vectors, "ivfpq")
    weak = {"nprobe": 1, "k_factor": 1}
    qi = fb.query_sample(len(vectors), 200, 0)
    truth = fb.drop_self(fb.exact_knn(vectors, vectors[qi], 11)[1], qi, 10)
    _, ids = built.index.search(vectors[qi], 11, params=fb.search_parameters("ivfpq", weak))
    measured = fb.recall_at_k(fb.drop_self(ids, qi, 10), truth)
    assert measured < 0.9
    tuning = fb.tune(built, vectors, n_queries=200, target=1.01)  # unreachable: keeps the best, says so
    assert tuning.recall < 1.01 and tuning.tried and all("recall" in t for t in tuning.tried)
    assert tuning.recall == max(t["recall"] for t in tuning.tried)
    flat = fb.tune(fb.build_index(vectors, "flat"), vectors, n_queries=50)
    assert flat.recall == pytest.approx(1.0)


def test_latency_is_reported(vectors):
    built = fb.build_index(vectors, "flat")
    lat = fb.single_query_latency_ms(built, vectors, {}, n=20)
    assert 0 < lat["p50_ms"] <= lat["p99_ms"] and lat["n"] == 20


def test_gpu_request_without_gpu_is_refused(vectors):
    if fb.gpu_available():
        pytest.skip("a GPU is present")
    with pytest.raises(IndexError_, match="faiss sees no GPU"):
        fb.build_index(vectors, "ivfpq", use_gpu=True)
