"""The fast encode path: SDPA == official, no token truncation, absent modalities masked, views."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from engine.data import open_dataset
from engine.errors import ModelError
from engine.model.encode import (
    embed_objects,
    encode_tokens,
    encoder_outputs,
    token_embeddings,
    tokenize_batch,
    view_layout,
)
from engine.model.fast import disable_fast_attention, enable_fast_attention, is_fast
from engine.model.loading import build_model, load_model
from engine.model.modalities import spec
from engine.model.pooling import shared_part, view_dim


def _random_tokens(keys, batch, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {k: torch.randint(0, 1000, (batch, spec(k).num_tokens), generator=g) for k in keys}


@pytest.mark.parametrize("qk_norm", [True, False])
def test_sdpa_matches_official_fp32(qk_norm, tiny_preset, test_keys):
    torch.manual_seed(1)
    import dataclasses

    preset = dataclasses.replace(
        tiny_preset, qk_norm=qk_norm, qkv_bias=not qk_norm, gated_mlp=qk_norm, dim=64, num_heads=4
    )
    model = build_model(preset, test_keys).eval()
    tokens = _random_tokens(test_keys, 3)
    present = {"tok_image": torch.tensor([True, False, True]), "tok_z": torch.tensor([False, True, True])}
    total = sum(t.shape[1] for t in tokens.values())
    official = model.encode(tokens, num_encoder_tokens=total)
    official_masked = encode_tokens(model, tokens, "none", present)
    enable_fast_attention(model)
    assert is_fast(model)
    fast = encode_tokens(model, tokens, "none")
    fast_masked = encode_tokens(model, tokens, "none", present)
    assert (fast - official).abs().max().item() <= 1e-4
    assert (fast_masked - official_masked).abs().max().item() <= 1e-4
    # the decoder's cross- and self-attention go through SDPA too: logits match the official path
    target = [spec("tok_z").modality]
    fast_logits = model(tokens, target)["tok_z"]
    disable_fast_attention(model)
    assert not is_fast(model)
    assert (fast_logits - model(tokens, target)["tok_z"]).abs().max().item() <= 1e-4


def test_all_tokens_are_used_not_truncated_at_256(tiny_preset, test_keys):
    torch.manual_seed(0)
    model = build_model(tiny_preset, test_keys).eval()
    tokens = _random_tokens(("tok_image", "tok_spectrum_desi"), 2)
    out, valid = encoder_outputs(model, tokens)
    assert out.shape[1] == 576 + 273 and valid.all()
    truncated = model.encode(tokens)  # the official default keeps only 256 tokens
    assert truncated.shape[1] == 256
    # changing a spectrum token (beyond position 256) changes the engine's embedding
    changed = {k: v.clone() for k, v in tokens.items()}
    changed["tok_spectrum_desi"][:, -1] = (changed["tok_spectrum_desi"][:, -1] + 1) % 1024
    assert not torch.equal(encode_tokens(model, tokens), encode_tokens(model, changed))


def test_hidden_modality_equals_dropping_it(tiny_preset, test_keys):
    torch.manual_seed(0)
    model = build_model(tiny_preset, test_keys).eval()
    enable_fast_attention(model)
    tokens = _random_tokens(("tok_image", "tok_flux_g", "tok_z"), 2)
    present = {"tok_z": torch.tensor([False, False])}
    masked = encode_tokens(model, tokens, "mean", present)
    dropped = encode_tokens(model, {k: v for k, v in tokens.items() if k != "tok_z"}, "mean")
    assert (masked - dropped).abs().max().item() <= 1e-5


def test_encode_tokens_rejects_bad_input(tiny_preset):
    model = build_model(tiny_preset, ("tok_flux_g",)).eval()
    with pytest.raises(ModelError, match="tok_image"):
        encode_tokens(model, _random_tokens(("tok_image",), 1))
    with pytest.raises(ModelError, match="pooling 'max'"):
        encode_tokens(model, _random_tokens(("tok_flux_g",), 1), pooling="max")
    with pytest.raises(ModelError, match="no tokens"):
        encode_tokens(model, {})


def test_embed_objects_views_and_validity(tiny_model_dir, model_dataset, tiny_preset):
    loaded = load_model(tiny_model_dir)
    ds = open_dataset(model_dataset)
    ids = ds.ids
    expected_valid = {
        "image": np.arange(12) < 8,
        "spectrum": np.arange(12) < 7,
        "photometry": np.arange(12) < 11,  # the qso (11) has no fluxes
        "joint": np.arange(12) < 11,
    }
    for view, want in expected_valid.items():
        emb, valid = embed_objects(loaded, ds, ids, view, batch_size=5, progress=False)
        assert emb.shape == (12, view_dim(tiny_preset.dim, view)) and emb.dtype == np.float32
        np.testing.assert_array_equal(valid, want, err_msg=view)
        assert np.all(emb[~valid] == 0) and np.all(np.abs(emb[valid]).sum(1) > 0)
        assert np.isfinite(emb).all()


def test_image_view_is_the_radial_profile_of_the_image_tokens(tiny_model_dir, model_dataset):
    """Each annulus holds the mean of its tokens' input embedding and last-layer output."""
    from engine.model.pooling import RINGS, ring_of_token

    loaded = load_model(tiny_model_dir)
    ds = open_dataset(model_dataset)
    ids = ds.ids[:3]
    emb, valid = embed_objects(loaded, ds, ids, "image", progress=False)
    tokens, _ = tokenize_batch(loaded, ds, ids, ["tok_image"])
    with torch.no_grad():
        enc_tokens, enc_emb, enc_mask, _ = loaded.model.embed_inputs(tokens, mask=None, num_encoder_tokens=576)
        out = loaded.model._encode(enc_tokens, enc_emb, enc_mask)
    ring = ring_of_token(576)
    assert ring.min() == 0 and ring.max() == RINGS - 1 and ring[0] == RINGS - 1  # a corner
    assert ring[11 * 24 + 11] == 0 and ring[11 * 24 + 23] == 11  # centre; middle of the right edge
    d = loaded.dim
    profile = emb.reshape(3, RINGS, 2, d)
    for r in (0, 5, RINGS - 1):
        np.testing.assert_allclose(profile[:, r, 0], enc_tokens[:, ring == r].mean(1).numpy(), atol=1e-5)
        np.testing.assert_allclose(profile[:, r, 1], out[:, ring == r].mean(1).numpy(), atol=1e-5)
    assert valid.all()


def test_embed_objects_matches_official_encode_per_object(tiny_model_dir, model_dataset):
    """Batched + grouped + SDPA embeddings equal the official encode of each object alone."""
    loaded = load_model(tiny_model_dir)
    ds = open_dataset(model_dataset)
    ids = ds.ids[[0, 4, 5, 9, 11, 2]]
    emb, valid = embed_objects(loaded, ds, ids, "joint", batch_size=4, progress=False)
    reference = load_model(tiny_model_dir)  # untouched official attention
    keys = [k for k in reference.token_keys if k != "tok_z"]
    for row, oid in enumerate(ids):
        tokens, present = tokenize_batch(reference, ds, np.array([oid]), keys)
        have = {k: tokens[k] for j, k in enumerate(keys) if present[0, j]}
        if not have:
            assert not valid[row]
            continue
        total = sum(t.shape[1] for t in have.values())
        with torch.no_grad():
            ref = reference.model.encode(have, num_encoder_tokens=total).mean(1)[0].numpy()
        np.testing.assert_allclose(emb[row], ref, atol=1e-4)


def test_order_and_batch_size_do_not_change_embeddings(tiny_model_dir, model_dataset):
    loaded = load_model(tiny_model_dir)
    ds = open_dataset(model_dataset)
    a, va = embed_objects(loaded, ds, ds.ids, "joint", batch_size=12, progress=False)
    b, vb = embed_objects(loaded, ds, ds.ids[::-1], "joint", batch_size=3, progress=False)
    np.testing.assert_array_equal(va, vb[::-1])
    np.testing.assert_allclose(a, b[::-1], atol=1e-5)


def test_token_embeddings_layout_and_mask(tiny_model_dir, model_dataset, tiny_preset):
    loaded = load_model(tiny_model_dir)
    ds = open_dataset(model_dataset)
    layout = view_layout(loaded, "spectrum")
    assert layout == {"tok_spectrum_desi": (0, 273), "tok_spectrum_sdss": (273, 546)}
    ids = ds.ids[[0, 4, 6, 8]]
    values, mask = token_embeddings(loaded, ds, ids, "spectrum", batch_size=2)
    assert values.shape == (4, 546, tiny_preset.dim) and mask.shape == (4, 546)
    np.testing.assert_array_equal(mask[:, 0], [True, True, False, False])  # DESI: objects 0-4
    np.testing.assert_array_equal(mask[:, 273], [False, True, True, False])  # SDSS: 4-6
    assert np.all(values[~mask] == 0)
    # mean over the valid tokens equals the pooled embedding
    emb, _ = embed_objects(loaded, ds, ids, "spectrum", progress=False)
    pooled = (values * mask[..., None]).sum(1) / np.maximum(mask.sum(1, keepdims=True), 1)
    np.testing.assert_allclose(pooled, emb, atol=1e-5)


def test_unknown_view_and_view_the_model_lacks(tiny_model_dir, model_dataset):
    loaded = load_model(tiny_model_dir)
    ds = open_dataset(model_dataset)
    with pytest.raises(ModelError, match="unknown view 'radio'.*image, spectrum, photometry, joint"):
        embed_objects(loaded, ds, ds.ids, "radio", progress=False)
    loaded.config = {**loaded.config, "domains_in": ["tok_z"]}
    with pytest.raises(ModelError, match="accepts none of view 'image'"):
        embed_objects(loaded, ds, ds.ids, "image", progress=False)


def test_embed_views_equals_one_view_at_a_time(tiny_model_dir, model_dataset):
    from engine.model.encode import embed_views

    loaded = load_model(tiny_model_dir)
    ds = open_dataset(model_dataset)
    views = ("image", "spectrum", "photometry", "joint")
    together = embed_views(loaded, ds, ds.ids, views, batch_size=5, progress=False)
    assert set(together) == set(views)
    for view in views:
        emb, valid = embed_objects(loaded, ds, ds.ids, view, batch_size=7, progress=False)
        np.testing.assert_array_equal(together[view][1], valid)
        np.testing.assert_allclose(together[view][0], emb, atol=1e-5)


def test_precomputed_token_table_gives_the_same_embeddings(tiny_model_dir, model_dataset):
    from types import SimpleNamespace

    loaded = load_model(tiny_model_dir)
    ds = open_dataset(model_dataset)
    keys = ["tok_image", "tok_flux_g"]
    tokens, present = tokenize_batch(loaded, ds, ds.ids, keys)
    order = np.arange(len(ds.ids))[::-1]  # the table's row order need not match the catalog's
    table = SimpleNamespace(
        object_ids=ds.ids[order],
        tokens={k: tokens[k].numpy()[order].astype(np.int16) for k in keys},
        present={k: present[order, j] for j, k in enumerate(keys)},
    )
    live, valid_live = embed_objects(loaded, ds, ds.ids, "joint", batch_size=5, progress=False)
    cached, valid_cached = embed_objects(
        loaded, ds, ds.ids, "joint", batch_size=5, progress=False, token_table=table
    )
    np.testing.assert_array_equal(valid_live, valid_cached)
    np.testing.assert_allclose(live, cached, atol=1e-5)
    table.object_ids = table.object_ids[1:]
    table.tokens = {k: v[1:] for k, v in table.tokens.items()}
    table.present = {k: v[1:] for k, v in table.present.items()}
    with pytest.raises(ModelError, match="token table lacks object_id"):
        embed_objects(loaded, ds, ds.ids, "joint", progress=False, token_table=table)


def test_embeds_the_mock_survey(tiny_model_dir, tiny_mock):
    """End to end on the project's mock survey: every view, validity from the catalog flags."""
    from engine.model.encode import embed_views

    loaded = load_model(tiny_model_dir)
    ds = open_dataset(tiny_mock)
    cat = ds.catalog
    out = embed_views(
        loaded, ds, ds.ids, ("image", "spectrum", "photometry", "joint"), batch_size=32, progress=False
    )
    np.testing.assert_array_equal(
        out["image"][1], cat["has_image_ls"].to_numpy()
    )  # the tiny model has no HSC key
    has_spec = cat["has_spectrum_desi"].to_numpy() | cat["has_spectrum_sdss"].to_numpy()
    np.testing.assert_array_equal(out["spectrum"][1], has_spec)
    for view, (emb, valid) in out.items():
        assert np.isfinite(emb).all() and np.all(emb[~valid] == 0), view
        assert valid.sum() > 0


def test_token_embeddings_skip_register_tokens(tiny_model_dir, model_dataset, tiny_preset):
    from aion import AION

    from engine.model.loading import LoadedModel

    base = load_model(tiny_model_dir)
    torch.manual_seed(0)
    model = AION({**base.config, "num_register_tokens": 2}).eval()
    loaded = LoadedModel(model=model, codecs=base.codecs, config=base.config, model_id="reg", hash="0")
    ds = open_dataset(model_dataset)
    ids = ds.ids[[0, 1]]  # both have a DESI spectrum, no SDSS
    values, mask = token_embeddings(loaded, ds, ids, "spectrum")
    tokens, _ = tokenize_batch(loaded, ds, ids, ["tok_spectrum_desi"])
    full = encode_tokens(model, {"tok_spectrum_desi": tokens["tok_spectrum_desi"]}, "none")
    assert full.shape[1] == 2 + 273
    np.testing.assert_allclose(values[:, :273], full[:, 2:].numpy(), atol=1e-5)
    assert mask[:, :273].all() and not mask[:, 273:].any()


def test_embed_modalities_matches_dataset_embeddings(tiny_model_dir, model_dataset):
    """Live encoding of data outside the dataset gives the vectors the index holds."""
    from aion import modalities as am

    from engine.model.encode import embed_modalities
    from engine.model.modalities import load_modalities, select_rows

    loaded = load_model(tiny_model_dir)
    ds = open_dataset(model_dataset)
    ids = ds.ids[:3]  # objects 0-2 have an LS image and a DESI spectrum
    mods = load_modalities(ds, ids, ["tok_image", "tok_spectrum_desi"])
    live = embed_modalities(loaded, {k: select_rows(m, np.arange(3)) for k, (m, _) in mods.items()})
    image_only = embed_modalities(loaded, {"tok_image": mods["tok_image"][0]})
    emb, _ = embed_objects(loaded, ds, ids, "image", progress=False)  # the radial profile holds the mean
    np.testing.assert_allclose(image_only, shared_part(emb, "radial"), atol=1e-5)
    assert live.shape == (3, loaded.dim) and not np.allclose(live, image_only)
    with pytest.raises(ModelError, match="does not take \\['tok_image_hsc'\\]"):
        embed_modalities(loaded, {"tok_image_hsc": mods["tok_image"][0]})
    with pytest.raises(ModelError, match="needs an aion LegacySurveyImage, got DESISpectrum"):
        embed_modalities(loaded, {"tok_image": mods["tok_spectrum_desi"][0]})
    with pytest.raises(ModelError, match="different batch sizes"):
        embed_modalities(
            loaded,
            {
                "tok_image": mods["tok_image"][0],
                "tok_spectrum_desi": select_rows(mods["tok_spectrum_desi"][0], [0]),
            },
        )
    assert isinstance(mods["tok_image"][0], am.LegacySurveyImage)


def test_image_view_encodes_the_first_image_survey_alone(tmp_path, model_dataset, tiny_preset):
    """An object with Legacy Survey and HSC tokens gets the vector of its LS grid alone (every
    vector describes one cutout); an HSC-only object gets its HSC grid's."""
    from types import SimpleNamespace

    from engine.model.codecs import build_codecs
    from engine.model.encode import radial_embedding
    from engine.model.loading import save_model

    keys = ("tok_image", "tok_image_hsc", "tok_flux_g")
    torch.manual_seed(1)
    save_model(tmp_path / "two-surveys", build_model(tiny_preset, keys).eval(), build_codecs(tiny_preset, keys),
               {"note": "random weights, tests only"})
    loaded = load_model(tmp_path / "two-surveys")
    ds = open_dataset(model_dataset)
    ids = ds.ids
    rng = np.random.default_rng(0)
    ls_has, hsc_has = np.arange(12) < 6, (np.arange(12) >= 3) & (np.arange(12) < 9)  # 3-5 both, 6-8 HSC only
    table = SimpleNamespace(
        object_ids=ids,
        tokens={k: rng.integers(0, 1000, (12, 576)).astype(np.int16) for k in ("tok_image", "tok_image_hsc")},
        present={"tok_image": ls_has, "tok_image_hsc": hsc_has},
    )
    emb, valid = embed_objects(loaded, ds, ids, "image", batch_size=5, progress=False, token_table=table)
    np.testing.assert_array_equal(valid, ls_has | hsc_has)
    for key, rows in (("tok_image", np.flatnonzero(ls_has)), ("tok_image_hsc", np.flatnonzero(hsc_has & ~ls_has))):
        want = radial_embedding(loaded.model, key, torch.from_numpy(table.tokens[key][rows].astype(np.int64)))
        np.testing.assert_allclose(emb[rows], want.numpy(), atol=1e-5, err_msg=key)
    assert not emb[~valid].any()


def test_compiled_encoder_traces_whole_and_matches_eager(tiny_preset, test_keys):
    """``compile_encoder`` (what ``embed --compile`` does): the SDPA encoder traces as one graph
    (no data-dependent branch per layer) and gives the eager outputs, masked or not."""
    from engine.model.fast import compile_encoder

    torch.manual_seed(0)
    model = enable_fast_attention(build_model(tiny_preset, test_keys).eval())
    tokens = _random_tokens(("tok_image", "tok_flux_g", "tok_z"), 3)
    present = {"tok_z": torch.tensor([True, False, True])}
    eager, eager_masked = encode_tokens(model, tokens, "none"), encode_tokens(model, tokens, "none", present)
    torch._dynamo.reset()
    compile_encoder(model, backend="eager", fullgraph=True)
    assert compile_encoder(model) is model  # idempotent: not wrapped twice
    assert (encode_tokens(model, tokens, "none") - eager).abs().max().item() <= 1e-5
    assert (encode_tokens(model, tokens, "none", present) - eager_masked).abs().max().item() <= 1e-5
    torch._dynamo.reset()


def test_embed_views_compile_flag_compiles_the_encoder(tiny_model_dir, model_dataset, monkeypatch):
    import engine.model.fast as fast
    from engine.index.encoders import ModelViewsEncoder

    calls = []
    monkeypatch.setattr(fast, "compile_encoder", lambda model, **kw: calls.append(model) or model)
    enc = ModelViewsEncoder(tiny_model_dir, ("photometry",), compile=True)
    assert calls == [enc.loaded.model]
    ModelViewsEncoder(tiny_model_dir, ("photometry",))
    assert len(calls) == 1
