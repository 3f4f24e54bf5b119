"""Tiny datasets and tiny random-weight models for the model package's tests."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest
import torch

from engine.data import DatasetWriter, schema
from engine.model.codecs import build_codecs, fill_quantile_table
from engine.model.loading import build_model, save_model
from engine.model.presets import get_preset

#: Modalities the tiny test model takes: every kind (image, spectrum x2, scalars, XP, z).
TEST_KEYS = (
    "tok_image",
    "tok_spectrum_desi",
    "tok_spectrum_sdss",
    "tok_flux_g",
    "tok_flux_r",
    "tok_flux_z",
    "tok_flux_w1",
    "tok_ebv",
    "tok_flux_g_gaia",
    "tok_xp_bp",
    "tok_xp_rp",
    "tok_z",
)

#: A preset much smaller than nano so tests run in seconds on 2 shared cores.
TINY = dataclasses.replace(
    get_preset("nano"),
    name="tiny-test",
    dim=32,
    encoder_depth=1,
    decoder_depth=1,
    num_heads=2,
    image_hidden_dims=8,
    image_multisurvey_projection_dims=8,
    spectrum_encoder_dims=(4, 8, 8, 16),
    spectrum_decoder_dims=(8, 8, 4, 1),
    scalar_reservoir_size=64,
    token_keys=TEST_KEYS,
)

N_OBJECTS = 12


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


def _catalog(rng: np.random.Generator) -> pd.DataFrame:
    n = N_OBJECTS
    cat = pd.DataFrame(
        {
            "object_id": np.arange(1000, 1000 + n, dtype=np.int64),
            "ra": rng.uniform(150, 151, n),
            "dec": rng.uniform(2, 3, n),
            "kind": ["galaxy"] * 8 + ["star"] * 3 + ["qso"],
        }
    )
    for col in ("flux_g", "flux_r", "flux_z", "flux_w1", "phot_g"):
        cat[col] = rng.lognormal(1.0, 1.0, n)
    cat["ebv"] = rng.uniform(0.01, 0.1, n)
    cat["z"] = rng.uniform(0.01, 0.8, n)
    cat.loc[3, "flux_g"] = np.nan  # a missing scalar
    cat.loc[[8, 9, 10], "z"] = np.nan  # stars: no redshift
    cat.loc[11, ["flux_g", "flux_r", "flux_z", "flux_w1", "ebv", "z", "phot_g"]] = np.nan  # qso: no scalars
    return cat


@pytest.fixture(scope="session")
def model_dataset(tmp_path_factory):
    """12 objects: LS images (100x100, cropped to 96) for 0-7, DESI spectra for 0-4, SDSS for 4-6,
    XP for the stars 8-10; object 11 has nothing at all (every view invalid)."""
    rng = np.random.default_rng(0)
    cat = _catalog(rng)
    ids = cat.object_id.to_numpy()
    root = tmp_path_factory.mktemp("model-data") / "ds"
    with DatasetWriter(root) as w:
        img_ids = ids[:8]
        w.append(
            "image_ls",
            img_ids,
            image_array=rng.normal(0, 0.5, (8, 4, 100, 100)).astype("f4"),
            image_ivar=np.ones((8, 4, 100, 100), "f4"),
            image_mask=np.zeros((8, 4, 100, 100), bool),
            image_band=np.array([list(schema.LS_BANDS)] * 8),
        )
        wave = schema.desi_wavelength().astype("f4")
        n = 5
        w.append(
            "spectrum_desi",
            ids[:5],
            spectrum_flux=(1 + rng.normal(0, 0.1, (n, len(wave)))).astype("f4"),
            spectrum_ivar=np.full((n, len(wave)), 100.0, "f4"),
            spectrum_lambda=np.tile(wave, (n, 1)),
            spectrum_mask=np.zeros((n, len(wave)), bool),
        )
        swave = schema.sdss_wavelength().astype("f4")
        w.append(
            "spectrum_sdss",
            ids[4:7],
            spectrum_flux=(1 + rng.normal(0, 0.1, (3, len(swave)))).astype("f4"),
            spectrum_ivar=np.full((3, len(swave)), 50.0, "f4"),
            spectrum_lambda=np.tile(swave, (3, 1)),
            spectrum_mask=np.zeros((3, len(swave)), bool),
        )
        w.append(
            "xp_gaia",
            ids[8:11],
            coeff=rng.normal(0, 100, (3, 2 * schema.XP_N_COEFF)).astype("f4"),
            coeff_error=np.ones((3, 2 * schema.XP_N_COEFF), "f4"),
        )
        w.commit(cat, {"name": "model-test", "provenance": {"kind": "test", "seed": 0}})
    return root


def _fill_scalar_codecs(codecs, dataset_root) -> None:
    """Fill the quantile tables from the dataset, as codec training does."""
    from engine.data import open_dataset
    from engine.model.modalities import load_modalities

    ds = open_dataset(dataset_root)
    mods = load_modalities(
        ds,
        ds.ids,
        [k for k in codecs.token_keys if k.startswith("tok_") and "image" not in k and "spectrum" not in k],
    )
    for key, (modality, present) in mods.items():
        fill_quantile_table(codecs[key], modality.value[torch.from_numpy(present.copy())])


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, model_dataset):
    """A saved tiny random-weight model folder over TEST_KEYS (scalar tables filled)."""
    torch.manual_seed(0)
    model = build_model(TINY, TEST_KEYS).eval()
    codecs = build_codecs(TINY, TEST_KEYS)
    _fill_scalar_codecs(codecs, model_dataset)
    out = tmp_path_factory.mktemp("models") / "tiny"
    save_model(out, model, codecs, {"preset": TINY.name, "note": "random weights, tests only"})
    return out


@pytest.fixture(scope="session")
def tiny_preset():
    return TINY


@pytest.fixture(scope="session")
def test_keys():
    return TEST_KEYS
