"""Searcher: filters keep k results, feedback moves results the expected way, cross-modal, new data (FITS)."""

from __future__ import annotations

import numpy as np
import pytest
from astropy.io import fits

from engine.data import schema
from engine.data.store import open_dataset
from engine.errors import MissingModalityError, ValidationError
from engine.index import searcher as searcher_mod
from engine.index.embeddings import embed_dataset
from engine.index.faiss_build import build_index, normalize_rows, tune
from engine.index.manifest import write_index_and_manifest
from engine.index.pipeline import build_view_index, embed_view
from engine.index.searcher import Searcher

from .conftest import MERGER, SMOOTH, SPIRAL, CountingEncoder


@pytest.fixture(scope="module")
def baseline_views(index_dataset, tmp_path_factory):
    root = tmp_path_factory.mktemp("views")
    out = {}
    for view in ("image", "spectrum"):
        vdir = root / view
        embed_view(index_dataset, "pixel-pca", view, view_dir=vdir, progress=False)
        build_view_index(index_dataset, "pixel-pca", view, view_dir=vdir, progress=False)
        out[view] = vdir
    return out


@pytest.fixture
def image_searcher(index_dataset, baseline_views):
    return Searcher.open(index_dataset, "pixel-pca", "image", view_dir=baseline_views["image"])


def _cls(s: Searcher, hits) -> list[int]:
    cat = s.dataset.catalog.set_index("object_id")
    return [int(cat.loc[h.object_id, "truth_morphology"]) for h in hits]


def test_kind_filter_still_returns_k(image_searcher):
    s = image_searcher
    hits = s.similar(int(s.dataset.ids[0]), 2, kinds=["qso"])
    assert len(hits) == 2 and all(h.kind == "qso" for h in hits)
    assert len(s.similar(int(s.dataset.ids[0]), 5, kinds=["star"])) == 0  # stars have no image: none indexed


def test_range_filters(image_searcher):
    s = image_searcher
    hits = s.similar(int(s.dataset.ids[3]), 6, z_range=(0.1, 0.2))
    assert len(hits) == 6 and all(0.1 <= h.z <= 0.2 for h in hits)
    cat = s.dataset.catalog.set_index("object_id")
    hits = s.similar(int(s.dataset.ids[3]), 4, ranges={"mag_r": (None, 20.0)})
    assert hits and all(cat.loc[h.object_id, "mag_r"] <= 20.0 for h in hits)
    with pytest.raises(ValidationError, match="filter column 'nope' is not a numeric catalog column"):
        s.similar(int(s.dataset.ids[3]), 4, ranges={"nope": (0, 1)})
    with pytest.raises(ValidationError, match="filter kind"):
        s.similar(int(s.dataset.ids[3]), 4, kinds=["planet"])


def test_oversampling_path_returns_k_filtered(index_dataset, baseline_views, tmp_path, monkeypatch):
    """With exact subset search disabled, a selective filter on an HNSW index still yields k hits."""
    monkeypatch.setattr(searcher_mod, "EXACT_SUBSET_MAX", 0)
    vdir = tmp_path / "hnsw"
    embed_view(index_dataset, "pixel-pca", "image", view_dir=vdir, progress=False)
    build_view_index(index_dataset, "pixel-pca", "image", view_dir=vdir, kind="hnsw", progress=False)
    s = Searcher.open(index_dataset, "pixel-pca", "image", view_dir=vdir)
    assert s.kind == "hnsw"
    hits = s.similar(int(s.dataset.ids[0]), 8, z_range=(0.0, 0.12))
    allowed = s.allowed_rows(z_range=(0.0, 0.12))[s.store.valid_rows].sum() - 1
    assert len(hits) == min(8, allowed) and all(h.z <= 0.12 for h in hits)
    exact = Searcher.open(index_dataset, "pixel-pca", "image", view_dir=baseline_views["image"])
    monkeypatch.setattr(searcher_mod, "EXACT_SUBSET_MAX", 10_000)
    want = exact.similar(int(s.dataset.ids[0]), 8, z_range=(0.0, 0.12))
    assert [h.object_id for h in hits] == [h.object_id for h in want]


def test_feedback_moves_results_toward_positives_and_away_from_negatives(image_searcher):
    s = image_searcher
    cat = s.dataset.catalog
    merger = int(cat.object_id[cat.truth_morphology == MERGER].iloc[0])
    spirals = cat.object_id[cat.truth_morphology == SPIRAL].iloc[:4].astype(int).tolist()
    mergers = cat.object_id[cat.truth_morphology == MERGER].iloc[1:5].astype(int).tolist()
    # k=20 > the 15 other mergers, so the tail of the list shows where the query moved
    base = _cls(s, s.similar(merger, 20))
    toward = _cls(s, s.feedback(spirals, [], 20, query_id=merger))
    assert toward.count(SPIRAL) >= base.count(SPIRAL) + 3
    away = _cls(s, s.feedback([], mergers, 20, query_id=merger))
    assert away.count(MERGER) < base.count(MERGER)
    # given ids never come back
    hits = s.feedback(spirals, mergers, 10)
    assert not {h.object_id for h in hits} & {*spirals, *mergers}
    with pytest.raises(ValidationError, match="at least one positive"):
        s.feedback([], mergers, 5)


def test_rocchio_vector_is_the_documented_formula(image_searcher):
    s = image_searcher
    ids = s.dataset.ids
    q, p, n = s.vector_of(int(ids[0])), s.vector_of(int(ids[1])), s.vector_of(int(ids[2]))
    got = s.feedback_vector([int(ids[1])], [int(ids[2])], query=q)
    np.testing.assert_allclose(got, 1.0 * q + 0.75 * p - 0.25 * n, rtol=1e-5, atol=1e-6)


def _write_cutout(path, fields_row, bands=None, noise=0.0, seed=0):
    img = fields_row["image_array"].astype(np.float32)
    if noise:
        img = img + np.random.default_rng(seed).normal(0, noise, img.shape).astype(np.float32)
    hdu = fits.PrimaryHDU(img)
    if bands is not None:
        hdu.header["BANDS"] = bands
    hdu.header["RA"], hdu.header["DEC"] = 150.5, 2.5
    fits.HDUList([hdu, fits.ImageHDU(fields_row["image_ivar"], name="IVAR")]).writeto(path)
    return path


def test_fits_cutout_finds_its_twin(image_searcher, tmp_path):
    s = image_searcher
    for oid in (int(s.dataset.ids[4]), int(s.dataset.ids[20])):
        row = {k: v[0] for k, v in s.dataset.read("image_ls", [oid]).items()}
        exact = _write_cutout(tmp_path / f"{oid}.fits", row, bands="g,r,i,z")
        hits = s.similar_to_file(exact, 3)
        assert hits[0].object_id == oid and hits[0].score > 0.999
        noisy = _write_cutout(tmp_path / f"{oid}-noisy.fits", row, noise=1.0, seed=oid)  # no BANDS: 4 planes = LS
        assert s.similar_to_file(noisy, 3)[0].object_id == oid


def test_bad_fits_files_are_clear_errors(image_searcher, tmp_path):
    s = image_searcher
    row = {k: v[0] for k, v in s.dataset.read("image_ls", [int(s.dataset.ids[0])]).items()}
    with pytest.raises(ValidationError, match=r"\[BANDS\]: bands \['u', 'v', 'w', 'x'\] unknown"):
        s.similar_to_file(_write_cutout(tmp_path / "bands.fits", row, bands="u,v,w,x"), 3)
    small = tmp_path / "small.fits"
    fits.PrimaryHDU(np.zeros((4, 10, 10), np.float32)).writeto(small)
    with pytest.raises(ValidationError, match="10x10 pixels; at least 32x32"):
        s.similar_to_file(small, 3)
    junk = tmp_path / "junk.fits"
    junk.write_bytes(b"not a fits file at all" * 10)
    with pytest.raises(ValidationError, match="junk.fits: cannot read as FITS"):
        s.similar_to_file(junk, 3)
    with pytest.raises(ValidationError, match="does not exist"):
        s.similar_to_file(tmp_path / "missing.fits", 3)


def test_spectrum_file_finds_its_twin(index_dataset, baseline_views, tmp_path):
    s = Searcher.open(index_dataset, "pixel-pca", "spectrum", view_dir=baseline_views["spectrum"])
    oid = int(s.dataset.ids[7])
    sp = s.dataset.read("spectrum_desi", [oid])
    cols = [fits.Column(name="wave", format="D", array=sp["spectrum_lambda"][0].astype(np.float64)),
            fits.Column(name="flux", format="E", array=sp["spectrum_flux"][0]),
            fits.Column(name="ivar", format="E", array=sp["spectrum_ivar"][0])]
    path = tmp_path / "spec.fits"
    fits.HDUList([fits.PrimaryHDU(), fits.BinTableHDU.from_columns(cols)]).writeto(path)
    hits = s.similar_to_file(path, 3)
    assert hits[0].object_id == oid and hits[0].score > 0.999


def test_object_without_view_is_a_clear_error(image_searcher):
    star = int(image_searcher.dataset.ids[-1])
    with pytest.raises(MissingModalityError, match=f"object_id {star} has no image data"):
        image_searcher.similar(star, 3)


def _counting_view(dataset, view, source, vdir):
    enc = CountingEncoder(dim=8, source=source)
    embed_dataset(dataset, enc, view, vdir, batch_size=16, progress=False)
    from engine.index.embeddings import EmbeddingStore

    vecs = EmbeddingStore.open(vdir).normalized()
    built = build_index(vecs, "flat")
    write_index_and_manifest(vdir, built, tune(built, vecs), dataset_hash=dataset.hash, model_id=enc.model_id,
                             model_hash=enc.model_hash)


def test_cross_modal_image_to_spectrum(index_dataset, baseline_views, tmp_path):
    """Same model, two views in one space: an object's image embedding finds its own spectrum."""
    ds = open_dataset(index_dataset)
    _counting_view(ds, "image", "image_ls", tmp_path / "image")
    _counting_view(ds, "spectrum", "spectrum_desi", tmp_path / "spectrum")
    img = Searcher.open(ds, "counting", "image", view_dir=tmp_path / "image", model_hash="counting-v1")
    spec = Searcher.open(ds, "counting", "spectrum", view_dir=tmp_path / "spectrum", model_hash="counting-v1")
    both = ds.catalog.object_id[ds.catalog.has_image_ls & ds.catalog.has_spectrum_desi].astype(int).tolist()
    for oid in both[:5]:
        assert spec.cross_modal(img, oid, 3)[0].object_id == oid
    # different models (spaces) cannot be mixed
    base_img = Searcher.open(ds, "pixel-pca", "image", view_dir=baseline_views["image"])
    with pytest.raises(ValidationError, match="cross-modal search needs one model's shared space"):
        spec.cross_modal(base_img, both[0], 3)


def test_vector_search_validates(image_searcher):
    with pytest.raises(ValidationError, match="query vector has dim 3"):
        image_searcher.search_vector(np.ones(3), 3)
    with pytest.raises(ValidationError, match="zero or not finite"):
        image_searcher.search_vector(np.zeros(image_searcher.dim), 3)
    v = normalize_rows(np.ones((1, image_searcher.dim)))[0]
    assert len(image_searcher.search_vector(v, 100)) == image_searcher.count


def test_concurrent_reads(image_searcher):
    from concurrent.futures import ThreadPoolExecutor

    ids = [int(i) for i in image_searcher.dataset.ids[:40]]
    serial = [[h.object_id for h in image_searcher.similar(i, 5)] for i in ids]
    with ThreadPoolExecutor(4) as pool:
        parallel = list(pool.map(lambda i: [h.object_id for h in image_searcher.similar(i, 5)], ids))
    assert parallel == serial


def test_schema_bands_header(tmp_path):
    """Explicit schema names (HSC) are accepted and routed to the HSC image source."""
    from engine.index.query_data import read_query_file

    p = tmp_path / "hsc.fits"
    hdu = fits.PrimaryHDU(np.ones((5, 64, 64), np.float32))
    hdu.header["BANDS"] = ",".join(schema.HSC_BANDS)
    hdu.writeto(p)
    q = read_query_file(p)
    assert q.source == "image_hsc" and q.fields["image_array"].shape == (1, 5, 96, 96)
    assert SMOOTH == 2  # class constants used above stay in sync with the fixture
