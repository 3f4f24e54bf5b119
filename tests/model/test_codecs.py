"""Codec sets: exact save/load round trip, tokens of the right shape, decode, input never mutated."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from aion import modalities as am

from engine.data import open_dataset, schema
from engine.errors import ModelError
from engine.model.codecs import CodecSet, build_codecs, fill_quantile_table
from engine.model.modalities import load_modalities


def test_round_trip_is_exact(tmp_path, tiny_preset, test_keys, model_dataset):
    codecs = build_codecs(tiny_preset, test_keys)
    ds = open_dataset(model_dataset)
    mods = load_modalities(ds, ds.ids, test_keys)
    for key in ("tok_flux_g", "tok_xp_bp", "tok_ebv"):
        modality, present = mods[key]
        assert fill_quantile_table(codecs[key], modality.value[torch.from_numpy(present.copy())])
    assert not fill_quantile_table(codecs["tok_z"], torch.ones(3))  # fixed grid: no table
    codecs.save(tmp_path)
    again = CodecSet.load(tmp_path)
    assert set(again.token_keys) == set(test_keys) | {"tok_image_hsc"}  # the image codec serves HSC too
    assert (
        again["tok_image"] is again["tok_image"] and again["tok_spectrum_desi"] is again["tok_spectrum_sdss"]
    )
    for name, codec in codecs.by_folder().items():
        other = again.by_folder()[name]
        assert type(other) is type(codec)
        a, b = codec.state_dict(), other.state_dict()
        assert a.keys() == b.keys()
        for k in a:
            assert torch.equal(a[k], b[k]), (name, k)
    present_rows = {k: np.flatnonzero(p) for k, (_, p) in mods.items()}
    from engine.model.modalities import select_rows

    sub = {k: select_rows(m, present_rows[k]) for k, (m, _) in mods.items() if len(present_rows[k])}
    t1, t2 = codecs.encode(sub), again.encode(sub)
    for k in sub:
        assert torch.equal(t1[k], t2[k]), k
    # the quantile table moved off its default: flux tokens spread over the codebook
    assert len(torch.unique(t1["tok_flux_g"])) > 3


def test_token_shapes_and_ranges(tiny_preset, test_keys, model_dataset):
    codecs = build_codecs(tiny_preset, test_keys)
    ds = open_dataset(model_dataset)
    ids = ds.ids[:5]
    tokens = codecs.encode(
        load_modalities(ds, ids, ["tok_image", "tok_spectrum_desi", "tok_flux_r", "tok_xp_rp", "tok_z"])
    )
    assert tokens["tok_image"].shape == (5, 576) and tokens["tok_image"].dtype == torch.long
    assert tokens["tok_spectrum_desi"].shape == (5, 273)
    assert tokens["tok_flux_r"].shape == (5, 1) and tokens["tok_xp_rp"].shape == (5, 55)
    assert tokens["tok_z"].shape == (5, 1)
    assert int(tokens["tok_image"].max()) < 4375 and int(tokens["tok_spectrum_desi"].max()) < 1024
    assert int(tokens["tok_z"].max()) < 1025


def test_image_input_not_mutated(tiny_preset):
    codecs = build_codecs(tiny_preset, ["tok_image"])
    flux = torch.full((2, 4, 96, 96), 1000.0)  # far above the codec's clamp range
    image = am.LegacySurveyImage(flux=flux, bands=list(schema.LS_BANDS))
    codecs.encode({"tok_image": image})
    assert torch.all(flux == 1000.0)


def test_decode_images_spectra_scalars(tiny_preset):
    codecs = build_codecs(
        tiny_preset, ["tok_image", "tok_image_hsc", "tok_spectrum_desi", "tok_flux_g", "tok_z"]
    )
    img = codecs.decode("tok_image", torch.zeros(2, 576, dtype=torch.long))
    assert isinstance(img, am.LegacySurveyImage) and img.flux.shape == (2, 4, 96, 96)
    hsc = codecs.decode("tok_image_hsc", torch.zeros(2, 576, dtype=torch.long))  # crashes in aion 0.0.2
    assert (
        isinstance(hsc, am.HSCImage) and hsc.flux.shape == (2, 5, 96, 96) and torch.isfinite(hsc.flux).all()
    )
    wave = torch.from_numpy(schema.desi_wavelength()).float()[None].repeat(2, 1)
    spec = codecs.decode("tok_spectrum_desi", torch.zeros(2, 273, dtype=torch.long), wavelength=wave)
    assert isinstance(spec, am.DESISpectrum) and spec.flux.shape == wave.shape
    z = codecs.decode("tok_z", torch.tensor([[0], [1023]]))
    assert isinstance(z, am.Z) and z.value.shape == (2,) and float(z.value[1]) > float(z.value[0])
    with pytest.raises(ModelError, match="unknown image band"):
        codecs.decode("tok_image", torch.zeros(1, 576, dtype=torch.long), bands=["WISE-W1"])


def test_missing_and_bad_codec_files_are_named(tmp_path, tiny_preset):
    codecs = build_codecs(tiny_preset, ["tok_flux_g", "tok_spectrum_desi"])
    codecs.save(tmp_path)
    with pytest.raises(ModelError, match=r"codecs/image/config\.json: missing.*'tok_image'"):
        CodecSet.load(tmp_path, ["tok_image"])
    (tmp_path / "codecs" / "FLUX_G" / "model.safetensors").unlink()
    with pytest.raises(ModelError, match=r"codecs/FLUX_G/model\.safetensors: missing"):
        CodecSet.load(tmp_path, ["tok_flux_g"])
    cfg = tmp_path / "codecs" / "spectrum" / "config.json"
    config = json.loads(cfg.read_text())
    cfg.write_text(json.dumps({**config, "encoder_dims": [8, 8, 8, 16], "latent_channels": 16}))
    with pytest.raises(ModelError, match=r"spectrum/model\.safetensors: weights do not match SpectrumCodec"):
        CodecSet.load(tmp_path, ["tok_spectrum_desi"])
    cfg.write_text(json.dumps({**config, "colour": "red"}))
    with pytest.raises(ModelError, match="config does not fit SpectrumCodec"):
        CodecSet.load(tmp_path, ["tok_spectrum_desi"])
    with pytest.raises(ModelError, match="no codec for 'tok_z'"):
        codecs["tok_z"]
    with pytest.raises(ModelError, match="unknown token key 'tok_radio'"):
        build_codecs(tiny_preset, ["tok_radio"])


def test_mixed_precision_encode_keeps_valid_ids(tiny_preset, model_dataset):
    codecs = build_codecs(tiny_preset, ["tok_image", "tok_spectrum_desi"])
    ds = open_dataset(model_dataset)
    mods = load_modalities(ds, ds.ids[:4], ["tok_image", "tok_spectrum_desi"])
    exact = codecs.encode(mods)
    mixed = codecs.encode(mods, dtype=torch.bfloat16)
    for key in exact:
        assert mixed[key].shape == exact[key].shape and mixed[key].dtype == torch.long
        assert int(mixed[key].min()) >= 0 and int(mixed[key].max()) < (4375 if "image" in key else 1024)
        assert (mixed[key] == exact[key]).float().mean() > 0.5, key
    # the normalisation token comes from fp32 arithmetic in both paths
    assert torch.equal(mixed["tok_spectrum_desi"][:, 0], exact["tok_spectrum_desi"][:, 0])


def test_save_replaces_codec_folders_whole(tmp_path, tiny_preset):
    codecs = build_codecs(tiny_preset, ["tok_flux_g", "tok_image"])
    codecs.save(tmp_path)
    before = (tmp_path / "codecs" / "image" / "model.safetensors").read_bytes()
    torch.nn.init.normal_(codecs["tok_image"].post_quant_proj.weight)
    codecs.save(tmp_path)  # overwrite in place
    assert (tmp_path / "codecs" / "image" / "model.safetensors").read_bytes() != before
    assert sorted(p.name for p in (tmp_path / "codecs").iterdir()) == [
        "FLUX_G",
        "image",
    ]  # no temp folders left
    again = CodecSet.load(tmp_path, ["tok_image"])
    assert torch.equal(again["tok_image"].post_quant_proj.weight, codecs["tok_image"].post_quant_proj.weight)
