"""Dataset -> AION modality objects: presence masks, placeholders, band order, crops, errors; views; presets."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from aion import modalities as am

from engine.data import DatasetWriter, open_dataset, schema
from engine.errors import DatasetError, ModelError
from engine.model.modalities import MODALITIES, VIEWS, load_modalities, select_rows, view_token_keys
from engine.model.presets import PRESETS, get_preset


def test_registry_matches_official_modalities():
    from aion.fourm.modality_info import MODALITY_INFO

    from engine.model.modalities import ALL_MODALITIES, EXTRA_MODALITIES

    assert len(MODALITIES) == 36 and set(EXTRA_MODALITIES) == {"tok_ra", "tok_dec", "catalog", "tok_segmap"}
    assert set(ALL_MODALITIES) <= set(MODALITY_INFO)
    assert all(s.kind != "unmapped" for s in MODALITIES.values())
    for key, sp in ALL_MODALITIES.items():
        assert sp.modality.token_key == key
        assert issubclass(sp.modality, am.Modality)
        if sp.kind == "scalar":
            assert sp.column in (*schema.SCALAR_COLUMNS, "ra", "dec"), key
        elif sp.kind != "unmapped":
            assert sp.source in schema.SOURCES, key
    assert ALL_MODALITIES["catalog"].num_tokens == 50 and ALL_MODALITIES["tok_segmap"].num_tokens == 144
    assert MODALITIES["tok_image"].num_tokens == 576 and MODALITIES["tok_spectrum_sdss"].num_tokens == 273
    assert MODALITIES["tok_xp_rp"].xp_slice == (55, 110)
    assert MODALITIES["tok_image_hsc"].codec_name == MODALITIES["tok_image"].codec_name == "image"


def test_views():
    assert VIEWS["photometry"][:8] == tuple(
        f"tok_flux_{b}" for b in ("g", "r", "i", "z", "w1", "w2", "w3", "w4")
    )
    assert not {"tok_z", "tok_ra", "tok_dec", "catalog", "tok_segmap"} & set(VIEWS["joint"])
    assert len(VIEWS["joint"]) == 35
    assert view_token_keys("image", ["tok_image", "tok_z"]) == ("tok_image",)
    assert view_token_keys("spectrum") == ("tok_spectrum_desi", "tok_spectrum_sdss")
    with pytest.raises(ModelError, match="unknown view 'sky'"):
        view_token_keys("sky")


def test_presence_and_placeholders(model_dataset):
    ds = open_dataset(model_dataset)
    ids = ds.ids
    mods = load_modalities(ds, ids, [*MODALITIES, "tok_ra"])
    want = {
        "tok_image": np.arange(12) < 8,
        "tok_image_hsc": np.zeros(12, bool),
        "tok_spectrum_desi": np.arange(12) < 5,
        "tok_spectrum_sdss": (np.arange(12) >= 4) & (np.arange(12) < 7),
        "tok_xp_bp": (np.arange(12) >= 8) & (np.arange(12) < 11),
        "tok_flux_g": ~np.isin(np.arange(12), [3, 11]),
        "tok_z": np.arange(12) < 8,
        "tok_mag_g": np.zeros(12, bool),  # column absent from the catalog
    }
    for key, expected in want.items():
        np.testing.assert_array_equal(mods[key][1], expected, err_msg=key)
    for key, (modality, _) in mods.items():
        for value in vars(modality).values():
            if isinstance(value, torch.Tensor) and value.is_floating_point():
                assert torch.isfinite(value).all(), key
    image, present = mods["tok_image"]
    assert isinstance(image, am.LegacySurveyImage) and image.flux.shape == (12, 4, 96, 96)
    assert torch.all(image.flux[~torch.from_numpy(present)] == 0)
    desi, present = mods["tok_spectrum_desi"]
    assert desi.flux.shape == (12, len(schema.desi_wavelength()))
    assert desi.mask[~torch.from_numpy(present)].all() and (desi.ivar[~torch.from_numpy(present)] == 0).all()
    flux_g = mods["tok_flux_g"][0]
    cat = ds.objects(ids)
    np.testing.assert_allclose(flux_g.value[:3].numpy(), cat["flux_g"].to_numpy()[:3], rtol=1e-6)
    assert mods["tok_ra"][1].all()
    np.testing.assert_allclose(mods["tok_ra"][0].value.numpy(), cat["ra"].to_numpy(), rtol=1e-6)
    xp = mods["tok_xp_rp"][0]
    raw = ds.read("xp_gaia", ids[8:11])["coeff"][:, 55:]
    np.testing.assert_allclose(xp.value[8:11].numpy(), raw, rtol=1e-6)
    # one row subset keeps the type and the bands
    one = select_rows(image, np.array([2]))
    assert (
        isinstance(one, am.LegacySurveyImage)
        and one.flux.shape == (1, 4, 96, 96)
        and one.bands == image.bands
    )


def _write(root, images=None, spectra=None):
    n = 3
    cat = pd.DataFrame(
        {
            "object_id": np.arange(1, n + 1, dtype=np.int64),
            "ra": [1.0, 2, 3],
            "dec": [0.0, 0, 0],
            "kind": ["galaxy"] * n,
        }
    )
    with DatasetWriter(root) as w:
        if images is not None:
            w.append("image_ls", cat.object_id.to_numpy(), **images)
        if spectra is not None:
            w.append("spectrum_desi", cat.object_id.to_numpy(), **spectra)
        w.commit(cat, {"name": root.name})
    return open_dataset(root)


def test_band_order_crop_and_masked_pixels(tmp_path):
    arr = np.zeros((3, 4, 98, 98), "f4")
    for b in range(4):
        arr[:, b] = b + 1  # band value = position in the file
    arr[:, :, 0, 0] = 99  # outside the 96x96 centre crop
    mask = np.zeros(arr.shape, bool)
    mask[0, 0, 50, 50] = True
    arr[1, 2, 40, 40] = np.nan
    order = ["DES-Z", "DES-G", "DES-R", "DES-I"]  # not the canonical order
    ds = _write(
        tmp_path / "img",
        images={
            "image_array": arr,
            "image_ivar": np.ones(arr.shape, "f4"),
            "image_mask": mask,
            "image_band": np.array([order] * 3),
        },
    )
    image, present = load_modalities(ds, ds.ids, ["tok_image"])["tok_image"]
    assert present.all() and image.flux.shape == (3, 4, 96, 96)
    # canonical order G, R, I, Z -> file positions 1, 2, 3, 0 -> values 2, 3, 4, 1
    assert [float(image.flux[2, j, 10, 10]) for j in range(4)] == [2.0, 3.0, 4.0, 1.0]
    assert float(image.flux.max()) == 4.0  # the corner pixel was cropped away
    # masked pixel: file band 0 = DES-Z -> canonical 3; crop offset 1 -> (49, 49); was 1.0
    assert float(image.flux[0, 3, 49, 49]) == 0.0 and float(image.flux[0, 3, 48, 48]) == 1.0
    assert float(image.flux[1, 1, 39, 39]) == 0.0  # NaN pixel (file band 2 = DES-R -> canonical 1)
    assert torch.isfinite(image.flux).all()


def test_bad_arrays_are_named(tmp_path):
    small = np.zeros((3, 4, 64, 64), "f4")
    ds = _write(
        tmp_path / "small",
        images={
            "image_array": small,
            "image_ivar": np.ones(small.shape, "f4"),
            "image_mask": np.zeros(small.shape, bool),
            "image_band": np.array([list(schema.LS_BANDS)] * 3),
        },
    )
    with pytest.raises(DatasetError, match=r"images_ls\.h5: field 'image_array' is 64x64 pixels"):
        load_modalities(ds, ds.ids, ["tok_image"])
    img = np.zeros((3, 4, 96, 96), "f4")
    ds = _write(
        tmp_path / "bands",
        images={
            "image_array": img,
            "image_ivar": np.ones(img.shape, "f4"),
            "image_mask": np.zeros(img.shape, bool),
            "image_band": np.array([["HSC-G", "DES-R", "DES-I", "DES-Z"]] * 3),
        },
    )
    with pytest.raises(DatasetError, match=r"field 'image_band' has \['HSC-G'\]"):
        load_modalities(ds, ds.ids, ["tok_image"])
    with pytest.raises(ModelError, match="unknown token key 'tok_radio'"):
        load_modalities(ds, ds.ids, ["tok_radio"])
    with pytest.raises(ModelError, match="'catalog' has no dataset mapping"):
        load_modalities(ds, ds.ids, ["catalog"])


def test_bad_spectrum_pixels_are_masked(tmp_path):
    wave = schema.desi_wavelength().astype("f4")
    n, length = 3, len(wave)
    flux = np.ones((n, length), "f4")
    flux[0, 10] = np.nan
    ivar = np.full((n, length), 4.0, "f4")
    ivar[1, 20] = -1.0
    mask = np.zeros((n, length), bool)
    mask[2, 30] = True
    ds = _write(
        tmp_path / "spec",
        spectra={
            "spectrum_flux": flux,
            "spectrum_ivar": ivar,
            "spectrum_lambda": np.tile(wave, (n, 1)),
            "spectrum_mask": mask,
        },
    )
    spec, present = load_modalities(ds, ds.ids, ["tok_spectrum_desi"])["tok_spectrum_desi"]
    assert present.all()
    assert bool(spec.mask[0, 10]) and bool(spec.mask[1, 20]) and bool(spec.mask[2, 30])
    assert int(spec.mask.sum()) == 3
    assert float(spec.ivar[1, 20]) == 0.0 and float(spec.flux[0, 10]) == 0.0


def test_presets():
    assert list(PRESETS) == ["nano", "small", "base", "large"]
    base = get_preset("base").transformer_config(["tok_z"])
    assert (base["dim"], base["encoder_depth"], base["decoder_depth"], base["num_heads"]) == (768, 12, 12, 12)
    assert base["gated_mlp"] and base["qk_norm"] and not base["qkv_bias"] and base["act_layer"] == "SiLU"
    large = get_preset("large")
    assert (large.dim, large.encoder_depth, large.num_heads) == (1024, 24, 16)
    nano = get_preset("nano")
    assert set(nano.token_keys) <= set(MODALITIES)
    with pytest.raises(ModelError, match="unknown model preset 'xl'; accepted: nano, small, base, large"):
        get_preset("xl")


def test_nano_model_size_budget(tmp_path):
    """The shipped nano folder (transformer + codecs over its default keys) stays under 25 MB."""
    from engine.model.codecs import build_codecs
    from engine.model.loading import build_model, save_model

    nano = get_preset("nano")
    model = build_model(nano, nano.token_keys)
    params = sum(p.numel() for p in model.parameters())
    assert 3e6 <= params <= 5e6
    save_model(tmp_path / "nano", model, build_codecs(nano, nano.token_keys))
    size = sum(p.stat().st_size for p in (tmp_path / "nano").rglob("*") if p.is_file())
    assert size <= 25e6, size
