"""The index path with a real (tiny, random-weight) AION model folder from engine.model."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from engine.data.store import open_dataset
from engine.errors import IndexError_
from engine.index.embeddings import EmbeddingStore
from engine.index.pipeline import build_view_index, embed_view
from engine.index.searcher import Searcher
from engine.model.pooling import RADIAL_LAYERS, RINGS, shared_part, view_dim

KEYS = ("tok_image", "tok_spectrum_desi")


def _save_tiny(out, seed):
    from engine.model.codecs import build_codecs
    from engine.model.loading import build_model, save_model
    from engine.model.presets import get_preset

    tiny = dataclasses.replace(get_preset("nano"), name="tiny-index-test", dim=32, encoder_depth=1, decoder_depth=1,
                               num_heads=2, image_hidden_dims=8, image_multisurvey_projection_dims=8,
                               spectrum_encoder_dims=(4, 8, 8, 16), spectrum_decoder_dims=(8, 8, 4, 1),
                               scalar_reservoir_size=64, token_keys=KEYS)
    torch.manual_seed(seed)
    save_model(out, build_model(tiny, KEYS).eval(), build_codecs(tiny, KEYS), {"note": "random weights, tests only"})
    return out


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    torch.set_num_threads(1)
    return _save_tiny(tmp_path_factory.mktemp("model") / "tiny-aion", seed=0)


@pytest.fixture(scope="module")
def model_views(index_dataset, tiny_model, tmp_path_factory):
    root = tmp_path_factory.mktemp("model-views")
    for view in ("image", "spectrum"):
        embed_view(index_dataset, tiny_model, view, view_dir=root / view, batch_size=16, progress=False)
        build_view_index(index_dataset, tiny_model, view, view_dir=root / view, progress=False)
    return root


def test_model_embeddings_and_search(index_dataset, tiny_model, model_views):
    ds = open_dataset(index_dataset)
    store = EmbeddingStore.open(model_views / "image")
    assert store.dim == view_dim(32, "image") == 32 * RINGS * RADIAL_LAYERS and store.meta["model_id"] == "tiny-aion"
    np.testing.assert_array_equal(store.valid, ds.catalog["has_image_ls"].to_numpy())
    assert np.isfinite(store.vectors).all() and not np.abs(store.vectors[~store.valid]).any()
    s = Searcher.open(ds, tiny_model, "image", view_dir=model_views / "image")  # model hash checked from the folder
    oid = int(ds.ids[0])
    hits = s.similar(oid, 5)
    assert len(hits) == 5 and oid not in [h.object_id for h in hits]


def test_model_cross_modal_and_fits_twin(index_dataset, tiny_model, model_views, tmp_path):
    from astropy.io import fits

    ds = open_dataset(index_dataset)
    img = Searcher.open(ds, tiny_model, "image", view_dir=model_views / "image")
    spec = Searcher.open(ds, tiny_model, "spectrum", view_dir=model_views / "spectrum")
    assert len(spec.cross_modal(img, int(ds.ids[0]), 5)) == 5  # one model: one shared space
    back = img.cross_modal(spec, int(ds.ids[0]), 5)  # into the radial image view: exact, in its shared space
    assert len(back) == 5 and len({h.object_id for h in back}) == 5
    assert [h.score for h in back] == sorted((h.score for h in back), reverse=True)
    assert all(h.kind == "galaxy" for h in img.cross_modal(spec, int(ds.ids[0]), 5, kinds=["galaxy"]))
    oid = int(ds.ids[9])
    row = ds.read("image_ls", [oid])
    path = tmp_path / "cutout.fits"
    hdu = fits.PrimaryHDU(row["image_array"][0])
    hdu.header["BANDS"] = "g,r,i,z"
    fits.HDUList([hdu, fits.ImageHDU(row["image_ivar"][0], name="IVAR")]).writeto(path)
    hits = img.similar_to_file(path, 3)
    assert hits[0].object_id == oid and hits[0].score > 0.99


def test_changed_model_weights_make_the_index_stale(index_dataset, tiny_model, tmp_path):
    import shutil

    model = shutil.copytree(tiny_model, tmp_path / "tiny-aion")
    embed_view(index_dataset, model, "image", view_dir=tmp_path / "v", batch_size=16, progress=False)
    build_view_index(index_dataset, model, "image", view_dir=tmp_path / "v", progress=False)
    _save_tiny(tmp_path / "retrained", seed=1)
    shutil.copy(tmp_path / "retrained" / "model.safetensors", model / "model.safetensors")
    with pytest.raises(IndexError_, match="model hash .* at build, .* now.*rebuild with: aion-engine embed"):
        Searcher.open(index_dataset, model, "image", view_dir=tmp_path / "v")


def test_radial_image_vectors_contain_the_mean_embedding(index_dataset, tiny_model, model_views):
    """The annuli's token-weighted last layer is exactly the mean-pooled encoder output of the
    object's Legacy Survey image tokens (what cross-modal search compares)."""
    from engine.model.encode import encode_tokens, tokenize_batch
    from engine.model.loading import load_model

    ds = open_dataset(index_dataset)
    store = EmbeddingStore.open(model_views / "image")
    loaded = load_model(tiny_model)
    ids = ds.ids[store.valid][:6]
    tokens, _ = tokenize_batch(loaded, ds, ids, ["tok_image"])
    mean = encode_tokens(loaded.model, {"tok_image": tokens["tok_image"]}, "mean").numpy()
    shared = shared_part(np.asarray(store.vectors[ds.rows(ids)], np.float32), "radial")
    np.testing.assert_array_equal(store.shared(ds.rows(ids)), shared)  # the store reads it the same way
    np.testing.assert_allclose(shared, mean, atol=2e-2 * np.abs(mean).max())  # float16 storage
