"""Model folders: official layout, strict loading, identical encodings, clear errors, atomic writes."""

from __future__ import annotations

import json
import shutil

import aion
import pytest
import torch

from engine.errors import ModelError
from engine.model.codecs import build_codecs
from engine.model.encode import encode_tokens
from engine.model.loading import build_model, file_hash, load_model, save_model
from engine.model.modalities import spec


def _tokens(keys, batch=2, seed=3):
    g = torch.Generator().manual_seed(seed)
    return {k: torch.randint(0, 1000, (batch, spec(k).num_tokens), generator=g) for k in keys}


def test_official_from_pretrained_strict_loads_and_encodes_identically(tiny_model_dir, test_keys):
    official = aion.AION.from_pretrained(str(tiny_model_dir), strict=True).eval()
    loaded = load_model(tiny_model_dir)
    assert isinstance(loaded.model, aion.AION) and not loaded.model.training
    tokens = _tokens(test_keys)
    total = sum(t.shape[1] for t in tokens.values())
    with torch.no_grad():
        a = official.encode(tokens, num_encoder_tokens=total)
        b = loaded.model.encode(tokens, num_encoder_tokens=total)
    assert torch.equal(a, b)  # bit-identical
    assert torch.equal(encode_tokens(official, tokens), encode_tokens(loaded.model, tokens))


def test_layout_config_meta_and_hash(tiny_model_dir, test_keys):
    names = {p.name for p in tiny_model_dir.iterdir()}
    assert {"config.json", "model.safetensors", "engine.json", "codecs"} <= names
    codec_dirs = {p.name for p in (tiny_model_dir / "codecs").iterdir()}
    assert {"image", "spectrum", "FLUX_G", "bp_coefficients", "rp_coefficients", "Z"} <= codec_dirs
    for d in (tiny_model_dir / "codecs").iterdir():
        assert sorted(p.name for p in d.iterdir()) == ["config.json", "model.safetensors"]
    loaded = load_model(tiny_model_dir)
    assert loaded.config["domains_in"] == list(test_keys)
    assert loaded.meta["preset"] == "tiny-test" and loaded.meta["token_keys"] == list(test_keys)
    assert loaded.model_id == "tiny"
    assert loaded.hash == file_hash(tiny_model_dir / "model.safetensors") and len(loaded.hash) == 16
    assert set(loaded.codecs.token_keys) == set(test_keys)


def test_save_is_atomic_and_replaces_whole(tmp_path, tiny_preset):
    model = build_model(tiny_preset, ("tok_flux_g", "tok_z"))
    codecs = build_codecs(tiny_preset, ("tok_flux_g", "tok_z"))
    out = tmp_path / "m"
    save_model(out, model, codecs, {"step": 1})
    first = file_hash(out / "model.safetensors")
    # a failing save (codec missing) leaves the existing folder untouched and no temp folders
    with pytest.raises(ModelError, match="no codec for \\['tok_z'\\]"):
        save_model(out, model, build_codecs(tiny_preset, ("tok_flux_g",)))
    assert file_hash(out / "model.safetensors") == first
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]
    torch.nn.init.normal_(model.mask_token)
    save_model(out, model, codecs, {"step": 2})
    assert file_hash(out / "model.safetensors") != first
    assert json.loads((out / "engine.json").read_text())["step"] == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]


def _copy(src, tmp_path):
    dst = tmp_path / "copy"
    shutil.copytree(src, dst)
    return dst


def test_missing_files_are_named(tiny_model_dir, tmp_path):
    d = _copy(tiny_model_dir, tmp_path)
    (d / "model.safetensors").unlink()
    with pytest.raises(ModelError, match=r"copy/model\.safetensors: missing"):
        load_model(d)
    d2 = tmp_path / "copy2"
    shutil.copytree(tiny_model_dir, d2)
    shutil.rmtree(d2 / "codecs" / "spectrum")
    with pytest.raises(ModelError, match=r"codecs/spectrum/config\.json: missing.*tok_spectrum_desi"):
        load_model(d2)
    (d2 / "config.json").unlink()
    with pytest.raises(ModelError, match=r"copy2/config\.json: missing"):
        load_model(d2)


def test_mismatched_weights_and_bad_config_are_errors(tiny_model_dir, tmp_path):
    d = _copy(tiny_model_dir, tmp_path)
    config = json.loads((d / "config.json").read_text())
    (d / "config.json").write_text(json.dumps({**config, "dim": 64}))
    with pytest.raises(ModelError, match="weights do not match"):
        load_model(d)
    (d / "config.json").write_text(json.dumps({**config, "domains_in": ["tok_radio"]}))
    with pytest.raises(ModelError, match="'domains_in' has unsupported token key.*tok_radio"):
        load_model(d)
    (d / "config.json").write_text("{not json")
    with pytest.raises(ModelError, match="config.json: not valid JSON"):
        load_model(d)
    (d / "model.safetensors").write_bytes(b"garbage")
    (d / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelError, match="model.safetensors: cannot read safetensors"):
        load_model(d)


def test_missing_folder_and_unreachable_hub(tmp_path, monkeypatch):
    with pytest.raises(ModelError, match="does not exist"):
        load_model(tmp_path / "nope")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelError, match="hub cannot be reached.*local folder"):
        load_model("polymathic-ai/aion-base-not-cached")


def test_build_model_checks_keys(tiny_preset):
    with pytest.raises(ModelError, match="unknown token key.*tok_radio"):
        build_model(tiny_preset, ["tok_radio"])
    with pytest.raises(ModelError, match="unknown model preset 'huge'.*nano, small, base, large"):
        build_model("huge", ["tok_z"])
    model = build_model(tiny_preset, ["tok_flux_g", "tok_z"], target_keys=["tok_z"])
    assert set(model.encoder_embeddings) == {"tok_flux_g", "tok_z"} and set(model.decoder_embeddings) == {
        "tok_z"
    }


def test_published_style_model_with_unmapped_modalities_loads(tmp_path, tiny_preset, model_dataset):
    """aion-base/large also take the source catalog, the segmentation map and ra/dec."""
    import numpy as np

    from engine.data import open_dataset
    from engine.model.encode import embed_objects

    keys = ["catalog", "tok_segmap", "tok_ra", "tok_dec", "tok_flux_g", "tok_flux_r"]
    model = build_model(tiny_preset, keys)
    codecs = build_codecs(tiny_preset, ["tok_ra", "tok_dec", "tok_flux_g", "tok_flux_r"])
    with pytest.raises(ModelError, match="no codec can be trained for 'catalog'"):
        build_codecs(tiny_preset, ["catalog"])
    save_model(tmp_path / "pub", model, codecs)
    loaded = load_model(tmp_path / "pub")
    assert "catalog" in loaded.token_keys and "catalog" not in loaded.codecs
    ds = open_dataset(model_dataset)
    emb, valid = embed_objects(loaded, ds, ds.ids, "joint", progress=False)
    assert valid.sum() == 11  # from the two fluxes only: ra/dec are never embedded
    ref, _ = embed_objects(loaded, ds, ds.ids, "photometry", progress=False)
    np.testing.assert_allclose(emb, ref, atol=1e-6)


def test_device_errors_are_clear(tiny_model_dir):
    from engine.model.loading import check_device

    assert check_device("cpu") == torch.device("cpu")
    with pytest.raises(ModelError, match="unknown device 'gpu0'"):
        check_device("gpu0")
    if not torch.cuda.is_available():
        with pytest.raises(ModelError, match="no CUDA GPU; use device 'cpu'"):
            load_model(tiny_model_dir, device="cuda")
