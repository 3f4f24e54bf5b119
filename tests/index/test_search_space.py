"""Search spaces: the whitening itself, its file, and that every search path of a view uses it."""

from __future__ import annotations

import json

import numpy as np
import pytest

from engine.data.store import open_dataset
from engine.errors import IndexError_
from engine.index import retrieval_eval as rev
from engine.index.embeddings import EmbeddingStore, embed_dataset
from engine.index.faiss_build import normalize_rows
from engine.index.pipeline import build_view_index
from engine.index.search_space import SPACE_FILE, SearchSpace
from engine.index.searcher import Searcher

from .conftest import CountingEncoder


def _anisotropic(n: int = 600, d: int = 8, seed: int = 0) -> np.ndarray:
    """Rows with a large shared mean and axis spreads over four orders of magnitude."""
    rng = np.random.default_rng(seed)
    basis = np.linalg.qr(rng.standard_normal((d, d)))[0]
    return 500.0 + (rng.standard_normal((n, d)) * np.logspace(1, -3, d)) @ basis.T


# --- the transform ------------------------------------------------------------------------


def test_fit_whitens_valid_rows():
    x = _anisotropic()
    space = SearchSpace.fit(x)
    assert space.method == "whiten" and space.axes == 8 and space.n_fit == 600
    z = space.apply(x)
    assert z.dtype == np.float32
    np.testing.assert_allclose(z.mean(axis=0), 0.0, atol=1e-4)
    np.testing.assert_allclose(np.cov(z, rowvar=False), np.eye(8), atol=1e-3)
    # raw cosines are all ~1 (the shared mean), whitened ones spread over [-1, 1]
    raw_cos = normalize_rows(x) @ normalize_rows(x).T
    white_cos = normalize_rows(z) @ normalize_rows(z).T
    assert raw_cos.min() > 0.99 and white_cos.min() < -0.5
    # not normalised: callers normalise
    assert not np.allclose(np.linalg.norm(z, axis=1), 1.0)


def test_degenerate_axis_is_dropped_not_blown_up():
    x = _anisotropic()
    x[:, 3] = 7.0  # a dimension with no variance at all (singular value 0)
    space = SearchSpace.fit(x)
    assert space.method == "whiten" and space.axes == 7
    cov = np.cov(space.apply(x), rowvar=False)
    np.testing.assert_allclose(np.sort(np.diag(cov)), [0] + [1] * 7, atol=1e-3)
    # a query off the fitted span is not amplified along the degenerate axis
    q = x[:1].copy()
    q[0, 3] += 100.0
    assert np.isfinite(space.apply(q)).all()
    np.testing.assert_allclose(space.apply(q), space.apply(x[:1]), atol=1e-3)


def test_wide_vectors_keep_only_the_leading_axes(tmp_path):
    rng = np.random.default_rng(3)
    x = rng.normal(size=(400, 40)) * np.linspace(5, 0.5, 40)  # spread falls along the axes
    space = SearchSpace.fit(x, max_axes=12)
    assert space.method == "whiten" and (space.dim, space.out_dim, space.axes) == (40, 12, 12)
    z = space.apply(x)
    assert z.shape == (400, 12)
    np.testing.assert_allclose(np.cov(z, rowvar=False), np.eye(12), atol=1e-3)
    # the kept axes are the widest: they carry the first coordinates' variance
    assert np.abs(space.projection[:6]).sum() > np.abs(space.projection[-6:]).sum()
    space.save(tmp_path)
    back = SearchSpace.load(tmp_path)
    assert back.out_dim == 12 and back.describe()["out_dim"] == 12
    np.testing.assert_allclose(back.apply(x), z, atol=1e-5)
    # rows are counted per kept axis: 50 rows whiten 12 axes of 40-d vectors, 40 rows only centre
    assert SearchSpace.fit(x[:50], max_axes=12).method == "whiten"
    assert SearchSpace.fit(x[:40], max_axes=12).method == "centre"
    # only radial (image) views are capped; a mean-pooled view keeps every axis however wide
    from engine.index.search_space import MAX_AXES, axes_cap

    assert axes_cap("radial") == MAX_AXES and axes_cap("mean") is None
    wide = rng.normal(size=(4 * 300 + 10, 300))
    assert SearchSpace.fit(wide).out_dim == 300 and SearchSpace.fit(wide, max_axes=axes_cap("radial")).out_dim == 256


def test_few_rows_only_centre_and_single_row_is_identity():
    x = _anisotropic(n=20)  # fewer than 4 rows per dimension: whitening would flatten all cosines
    space = SearchSpace.fit(x)
    assert space.method == "centre"
    np.testing.assert_allclose(space.apply(x), x - x.mean(axis=0), atol=1e-4)
    one = SearchSpace.fit(x[:1])
    assert one.method == "identity"
    np.testing.assert_allclose(one.apply(x[:1]), x[:1].astype(np.float32))


def test_whitening_lifts_retrieval_on_anisotropic_classes():
    """Classes separated along a weak axis, a strong nuisance axis and a shared mean: raw cosine
    barely sees the classes, the whitened space does."""
    rng = np.random.default_rng(1)
    n, d = 400, 6
    labels = np.arange(n) % 4 == 0
    x = rng.standard_normal((n, d)) * np.array([30.0, 1, 1, 1, 1, 0.05])
    x[:, 5] += np.where(labels, 0.4, -0.1)
    x += 100.0
    raw = rev.class_ndcg(x, labels)["ndcg10"]
    white = rev.class_ndcg(SearchSpace.fit(x).apply(x), labels)["ndcg10"]
    assert white > 0.9 and raw < 0.5


def test_file_round_trip_and_bad_files(tmp_path):
    space = SearchSpace.fit(_anisotropic())
    path = space.save(tmp_path)
    assert path.name == SPACE_FILE and [p.name for p in tmp_path.iterdir()] == [SPACE_FILE]
    assert path.read_bytes()[8:9] == b"{"  # safetensors: 8-byte length + JSON header, no pickle
    back = SearchSpace.load(tmp_path)
    assert (back.method, back.n_fit, back.axes) == (space.method, space.n_fit, space.axes)
    np.testing.assert_array_equal(back.mean, space.mean)
    np.testing.assert_array_equal(back.projection, space.projection)
    x = _anisotropic(n=5, seed=9)
    np.testing.assert_array_equal(back.apply(x), space.apply(x))
    with pytest.raises(IndexError_, match=f"{tmp_path / 'missing' / SPACE_FILE}: missing search space"):
        SearchSpace.load(tmp_path / "missing")
    path.write_bytes(b"junk" * 10)
    with pytest.raises(IndexError_, match=f"{path}: cannot read search space"):
        SearchSpace.load(tmp_path)
    with pytest.raises(IndexError_, match=r"search space of dim 8 cannot apply to vectors of shape \(2, 3\)"):
        space.apply(np.ones((2, 3)))
    with pytest.raises(IndexError_, match="NaN or infinite"):
        SearchSpace.fit(np.full((40, 2), np.nan))


# --- indexes built with a space -------------------------------------------------------------


def _counting_views(ds, root, kind="flat"):
    """Image and spectrum views of the counting encoder (one shared space: an object's raw vector
    is the same in both views), indexed by the real build path."""
    out = {}
    for view, source in (("image", "image_ls"), ("spectrum", "spectrum_desi")):
        vdir = root / view
        embed_dataset(ds, CountingEncoder(dim=8, source=source), view, vdir, batch_size=16, progress=False)
        build_view_index(ds, "counting", view, view_dir=vdir, kind=kind, model_hash="counting-v1", progress=False)
        out[view] = Searcher.open(ds, "counting", view, view_dir=vdir, model_hash="counting-v1")
    return out


@pytest.fixture(scope="module")
def counting(index_dataset, tmp_path_factory):
    return _counting_views(open_dataset(index_dataset), tmp_path_factory.mktemp("counting"))


def test_index_holds_whitened_unit_vectors_and_scores_are_their_cosines(counting):
    s = counting["image"]
    m = s.manifest["search_space"]
    assert m["method"] == "whiten" and m["file"] == SPACE_FILE and len(m["sha256"]) == 64 and m["n_fit"] == 48
    store = EmbeddingStore.open(s.view_dir)
    expected = normalize_rows(s.space.apply(np.asarray(store.vectors[store.valid_rows], np.float32)))
    stored = s.index.reconstruct_n(0, s.count)
    np.testing.assert_allclose(stored, expected, atol=1e-5)
    assert not np.allclose(stored, store.normalized(), atol=1e-2)  # not the raw cosine space
    oid = int(s.dataset.ids[0])
    hits = s.similar(oid, 5)
    pos = s._pos_of_row[s.dataset.rows([h.object_id for h in hits])]
    np.testing.assert_allclose([h.score for h in hits], expected[pos] @ expected[0], atol=1e-5)


def test_exact_and_faiss_agree_in_the_search_space(counting):
    s = counting["image"]
    everything = np.arange(s.count)
    for oid in s.dataset.ids[:48:5]:
        q = normalize_rows(s.vector_of(int(oid))[None])
        faiss_s, faiss_p = s._faiss(q, 6)
        exact_s, exact_p = s._exact(q, everything, 6)
        assert faiss_p[0].tolist() == exact_p[0].tolist()
        np.testing.assert_allclose(faiss_s[0], exact_s[0], atol=1e-5)


def test_exact_subset_path_matches_hnsw_in_the_search_space(index_dataset, tmp_path, monkeypatch):
    from engine.index import searcher as searcher_mod

    ds = open_dataset(index_dataset)
    hnsw = _counting_views(ds, tmp_path, kind="hnsw")["image"]
    assert hnsw.kind == "hnsw" and hnsw.manifest["search_space"]["method"] == "whiten"
    for oid in ds.ids[:48:7]:
        approx = hnsw.similar(int(oid), 5, z_range=(0.0, 1.0))  # every galaxy passes: FAISS path
        monkeypatch.setattr(searcher_mod, "EXACT_SUBSET_MAX", 10_000)
        exact = hnsw.similar(int(oid), 5, z_range=(0.0, 1.0))  # now the exact-subset path
        monkeypatch.setattr(searcher_mod, "EXACT_SUBSET_MAX", 0)
        assert [h.object_id for h in approx] == [h.object_id for h in exact]


def test_similar_never_returns_the_query(counting):
    s = counting["image"]
    for oid in s.dataset.ids[:48]:
        hits = s.similar(int(oid), s.count)
        assert len(hits) == s.count - 1 and int(oid) not in {h.object_id for h in hits}


def test_cross_modal_maps_the_source_raw_vector_with_the_target_space(counting):
    img, spec = counting["image"], counting["spectrum"]
    assert spec.manifest["search_space"]["n_fit"] == 40 and not np.allclose(img.space.projection,
                                                                           spec.space.projection)
    both = spec.dataset.catalog.object_id[spec.dataset.catalog.has_image_ls & spec.dataset.catalog.has_spectrum_desi]
    for oid in both.astype(int).tolist()[:6]:
        hits = spec.cross_modal(img, oid, 3)
        # the counting encoder gives an object the same raw vector in both views, so mapped with the
        # target's space it *is* the indexed spectrum vector: found first with cosine 1
        assert hits[0].object_id == oid and hits[0].score == pytest.approx(1.0, abs=1e-5)
        want = spec.search_vector(spec.to_space(img.raw_vector_of(oid)), 3)
        assert [(h.object_id, h.score) for h in hits] == [(h.object_id, h.score) for h in want]
        # the source's own space would not land on it
        wrong = spec.search_vector(img.vector_of(oid), 3)
        assert wrong[0].object_id != oid or wrong[0].score < 0.999


def test_feedback_vector_lives_in_the_search_space(counting):
    s = counting["image"]
    ids = [int(i) for i in s.dataset.ids[:3]]
    unit = [normalize_rows(s.space.apply(s.raw_vector_of(i)[None]))[0] for i in ids]
    got = s.feedback_vector([ids[1]], [ids[2]], query=s.vector_of(ids[0]))
    np.testing.assert_allclose(got, unit[0] + 0.75 * unit[1] - 0.25 * unit[2], atol=1e-5)


# --- stale indexes ---------------------------------------------------------------------------


def _built_copy(index_dataset, tmp_path):
    ds = open_dataset(index_dataset)
    _counting_views(ds, tmp_path)
    return ds, tmp_path / "image"


def test_index_without_search_space_is_stale(index_dataset, tmp_path):
    ds, vdir = _built_copy(index_dataset, tmp_path)
    manifest = json.loads((vdir / "manifest.json").read_text())
    old = {k: v for k, v in manifest.items() if k != "search_space"}  # as written before search spaces
    (vdir / "manifest.json").write_text(json.dumps(old))
    (vdir / SPACE_FILE).unlink()
    with pytest.raises(IndexError_, match=r"stale index \(no search space recorded \(built before search spaces\)\); "
                                          r"rebuild with: aion-engine embed --dataset .* --view image"):
        Searcher.open(ds, "counting", "image", view_dir=vdir, model_hash="counting-v1")


def test_missing_damaged_or_other_version_space_is_stale(index_dataset, tmp_path):
    ds, vdir = _built_copy(index_dataset, tmp_path)
    good = (vdir / SPACE_FILE).read_bytes()
    manifest_text = (vdir / "manifest.json").read_text()

    def refused(pattern):
        with pytest.raises(IndexError_, match=pattern):
            Searcher.open(ds, "counting", "image", view_dir=vdir, model_hash="counting-v1")

    (vdir / SPACE_FILE).unlink()
    refused(f"{SPACE_FILE} is missing.*rebuild with")
    damaged = bytearray(good)
    damaged[-3] ^= 0xFF
    (vdir / SPACE_FILE).write_bytes(bytes(damaged))
    refused(f"{SPACE_FILE} checksum does not match the manifest")
    (vdir / SPACE_FILE).write_bytes(good)
    manifest = json.loads(manifest_text)
    manifest["search_space"]["version"] = 0
    (vdir / "manifest.json").write_text(json.dumps(manifest))
    refused(r"search space version 0 \(this engine reads 1\)")
    (vdir / "manifest.json").write_text(manifest_text)
    assert Searcher.open(ds, "counting", "image", view_dir=vdir, model_hash="counting-v1").count == 48


def test_prepare_rebuilds_an_index_without_space_and_keeps_the_embeddings(index_dataset):
    """`make run` on a folder indexed before search spaces: the index is rebuilt, nothing re-embedded."""
    from engine import paths
    from engine.index.pipeline import build_view_index, embed_view
    from engine.prepare import ensure_views

    ds = open_dataset(index_dataset)
    embed_view(ds, "pixel-pca", "image", progress=False)
    build_view_index(ds, "pixel-pca", "image", progress=False)
    vdir = paths.view_dir(ds.name, "pixel-pca", "image")
    assert ensure_views(index_dataset, "pixel-pca", ("image",), progress=False) == {"image": "up to date"}
    manifest = json.loads((vdir / "manifest.json").read_text())
    del manifest["search_space"]
    (vdir / "manifest.json").write_text(json.dumps(manifest))
    (vdir / SPACE_FILE).unlink()
    run_id = EmbeddingStore.open(vdir).meta["run_id"]
    assert ensure_views(index_dataset, "pixel-pca", ("image",), progress=False) == {"image": "index rebuilt"}
    assert EmbeddingStore.open(vdir).meta["run_id"] == run_id
    s = Searcher.open(index_dataset, "pixel-pca", "image")
    assert s.manifest["search_space"]["method"] == "centre"  # 48 rows for 47 dims: too few to whiten


# --- retrieval evaluation ----------------------------------------------------------------------


def test_report_uses_the_index_space_or_fits_the_same_one(index_dataset):
    from engine import paths

    ds = open_dataset(index_dataset)
    for view, source in (("image", "image_ls"), ("spectrum", "spectrum_desi")):
        embed_dataset(ds, CountingEncoder(dim=8, source=source), view, paths.view_dir(ds.name, "counting", view),
                      batch_size=16, progress=False)
    before = rev.evaluate(ds, "counting", views=("image", "spectrum"), baseline=None)
    assert before["search_space"]["counting/image"]["source"] == "fitted for this report"
    for view in ("image", "spectrum"):
        build_view_index(ds, "counting", view, model_hash="counting-v1", progress=False)
    after = rev.evaluate(ds, "counting", views=("image", "spectrum"), baseline=None)
    assert after["search_space"]["counting/image"]["source"] == f"index ({SPACE_FILE})"
    assert after["search_space"]["counting/image"]["method"] == "whiten"
    assert after["views"] == before["views"]  # the fit here is the fit an index build makes
    assert set(after["views_raw"]) == {"image", "spectrum"}
    # cross-modal follows the Searcher's rule (target space), which finds every object itself here
    img = Searcher.open(ds, "counting", "image", model_hash="counting-v1")
    spec = Searcher.open(ds, "counting", "spectrum", model_hash="counting-v1")
    cm = after["cross_modal"]["image->spectrum"]
    both = np.flatnonzero(img.store.valid & spec.store.valid)
    found = np.mean([spec.cross_modal(img, int(ds.ids[r]), 1)[0].object_id == int(ds.ids[r]) for r in both])
    assert cm["n"] == len(both) and cm["top1"] == pytest.approx(found) and cm["top1"] == 1.0
