"""Shared fixtures: tiny mock surveys built once per test session.

``tiny_mock`` is a 64-object dataset (seed 0) with every source: LS images for all objects,
HSC images for ~20 %, DESI spectra (half the galaxies, all stars and quasars), SDSS spectra
(~15 %), Gaia XP for bright stars, segmentation maps for galaxies.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def tiny_mock_factory(tmp_path_factory) -> Callable[[int, int], Path]:
    """``make(n, seed)`` -> path of a mock dataset, generated once per (n, seed) per session."""
    from engine.data.mock import generate

    made: dict[tuple[int, int], Path] = {}

    def make(n: int, seed: int = 0) -> Path:
        key = (int(n), int(seed))
        if key not in made:
            out = tmp_path_factory.mktemp(f"mock-n{n}-s{seed}") / "dataset"
            made[key] = generate(out, n, seed, workers=1, progress=False)
        return made[key]

    return make


@pytest.fixture(scope="session")
def tiny_mock(tiny_mock_factory) -> Path:
    """Path of a 64-object mock dataset (seed 0) containing every array source."""
    return tiny_mock_factory(64, 0)


@pytest.fixture(scope="session")
def build_tiny_model(tmp_path_factory) -> Callable[..., Path]:
    """``build(dataset_dir, keys, name)`` -> a saved random-weight model folder (dim 32, 1+1 blocks)
    over ``keys``, scalar quantile tables filled from the dataset: for tests that need a real model
    folder but not a trained one."""
    import dataclasses

    import torch

    from engine.data import open_dataset
    from engine.model.codecs import build_codecs, fill_quantile_table
    from engine.model.loading import build_model, save_model
    from engine.model.modalities import load_modalities
    from engine.model.presets import get_preset

    def build(dataset_dir: Path, keys: tuple[str, ...], name: str) -> Path:
        tiny = dataclasses.replace(
            get_preset("nano"), name=name, dim=32, encoder_depth=1, decoder_depth=1, num_heads=2,
            image_hidden_dims=8, image_multisurvey_projection_dims=8, spectrum_encoder_dims=(4, 8, 8, 16),
            spectrum_decoder_dims=(8, 8, 4, 1), scalar_reservoir_size=64,
        )
        torch.manual_seed(0)
        model = build_model(tiny, keys).eval()
        codecs = build_codecs(tiny, keys)
        ds = open_dataset(dataset_dir)
        scalar_keys = [k for k in keys if k not in ("tok_image", "tok_spectrum_desi")]
        for key, (modality, present) in load_modalities(ds, ds.ids, scalar_keys).items():
            fill_quantile_table(codecs[key], modality.value[torch.from_numpy(present.copy())])
        out = tmp_path_factory.mktemp(f"models-{name}") / name
        save_model(out, model, codecs, {"preset": tiny.name, "note": "random weights, tests only"})
        return out

    return build


@pytest.fixture(scope="session")
def tiny_mock_model(build_tiny_model, tiny_mock) -> Path:
    """A random-weight model over ``tiny_mock``'s photometry, LS image, DESI spectrum and Gaia XP."""
    from engine.model.modalities import LS_FLUX_KEYS

    return build_tiny_model(tiny_mock, (*LS_FLUX_KEYS, "tok_image", "tok_spectrum_desi", "tok_xp_bp", "tok_xp_rp"),
                            "tiny-pipeline")
