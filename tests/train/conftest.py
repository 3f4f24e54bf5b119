"""Tiny datasets and a tiny preset for the training tests (seconds on 2 CPU cores).

``train_data`` is the project's ``tiny_mock`` when the mock helper's fixture exists, else a
small synthetic survey written with the real DatasetWriter: galaxies whose LS fluxes, image
brightness and spectrum continuum all depend on redshift, so a model can learn something.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest

from engine.data import schema
from engine.data.writer import DatasetWriter
from engine.model.presets import get_preset


def make_synthetic(out, n: int = 64, seed: int = 0, with_spectra: bool = True):
    rng = np.random.default_rng(seed)
    ids = np.arange(1000, 1000 + n, dtype=np.int64)
    z = rng.uniform(0.05, 0.8, n)
    base = 10 ** (-0.4 * (5 * np.log10(z / 0.1)))  # fainter with z
    colour = 1.0 + 2.0 * z  # redder with z
    cat = pd.DataFrame({"object_id": ids, "ra": rng.uniform(0, 10, n), "dec": rng.uniform(-5, 5, n), "kind": "galaxy"})
    for i, b in enumerate(("g", "r", "i", "z", "w1", "w2", "w3", "w4")):
        cat[f"flux_{b}"] = (50 * base * colour ** (i / 3) * rng.lognormal(0, 0.05, n)).astype(np.float32)
    cat["ebv"] = rng.uniform(0.01, 0.1, n).astype(np.float32)
    cat["shape_r"] = (1.0 / (0.5 + z) * rng.lognormal(0, 0.1, n)).astype(np.float32)
    cat["z"] = z
    cat["truth_z"] = z
    with DatasetWriter(out) as w:
        yy, xx = np.mgrid[:96, :96] - 47.5
        size = (3 + 4 * (1 - z))[:, None, None]
        profile = np.exp(-0.5 * (xx**2 + yy**2)[None] / size**2)
        img = np.stack([profile * cat[f"flux_{b}"].to_numpy()[:, None, None] / (2 * np.pi * size**2)
                        for b in "griz"], axis=1).astype(np.float32)
        sigma = 0.003
        img += rng.normal(0, sigma, img.shape).astype(np.float32)
        w.append("image_ls", ids, image_array=img, image_ivar=np.full_like(img, 1 / sigma**2),
                 image_mask=np.zeros(img.shape, dtype=bool), image_band=np.array([list(schema.LS_BANDS)] * n))
        if with_spectra:
            lam = schema.desi_wavelength().astype(np.float32)
            m = n // 2
            cont = (cat["flux_r"].to_numpy()[:m, None] * (lam[None] / 6000.0) ** (colour[:m, None] - 1)).astype(np.float32)
            line = 5 * np.exp(-0.5 * ((lam[None] - 6563 * (1 + z[:m, None])) / 3) ** 2)
            flux = (cont + line + rng.normal(0, 0.2, (m, len(lam)))).astype(np.float32)
            w.append("spectrum_desi", ids[:m], spectrum_flux=flux, spectrum_ivar=np.full_like(flux, 25.0),
                     spectrum_lambda=np.tile(lam, (m, 1)), spectrum_mask=np.zeros(flux.shape, dtype=bool))
        w.commit(cat, {"name": "synthetic", "provenance": {"generator": "tests/train/conftest.py", "seed": seed}})
    return out


@pytest.fixture(scope="session")
def train_data(tmp_path_factory, request):
    """A tiny dataset folder with images, spectra and scalars."""
    try:
        return request.getfixturevalue("tiny_mock")
    except pytest.FixtureLookupError:
        return make_synthetic(tmp_path_factory.mktemp("train-data") / "synthetic")


@pytest.fixture(scope="session")
def tiny_preset():
    """The nano preset made smaller still: a transformer of dim 32, 1+1 blocks."""
    return dataclasses.replace(get_preset("nano"), name="tiny", dim=32, encoder_depth=1, decoder_depth=1,
                               num_heads=2, image_hidden_dims=8, image_multisurvey_projection_dims=8,
                               spectrum_encoder_dims=(8, 8, 16, 16), spectrum_decoder_dims=(16, 8, 8, 1),
                               scalar_reservoir_size=256, input_tokens=32, target_tokens=16)


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """The test machine is shared: one intra-op thread avoids oversubscription stalls."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
