"""A tiny random-weight model over the task inputs, and the 64-object mock survey."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from engine.model.codecs import build_codecs, fill_quantile_table
from engine.model.loading import build_model, save_model
from engine.model.modalities import LS_FLUX_KEYS, load_modalities
from engine.model.presets import get_preset

TASK_KEYS = (*LS_FLUX_KEYS, "tok_flux_g_gaia", "tok_flux_bp_gaia", "tok_flux_rp_gaia", "tok_image",
             "tok_spectrum_desi", "tok_xp_bp", "tok_xp_rp")

TINY = dataclasses.replace(
    get_preset("nano"), name="tiny-tasks", dim=32, encoder_depth=1, decoder_depth=1, num_heads=2,
    image_hidden_dims=8, image_multisurvey_projection_dims=8, spectrum_encoder_dims=(4, 8, 8, 16),
    spectrum_decoder_dims=(8, 8, 4, 1), scalar_reservoir_size=64,
)


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def task_model_dir(tmp_path_factory, tiny_mock):
    """A saved random-weight model (dim 32, 1+1 blocks) over photometry, image, DESI spectrum and XP."""
    from engine.data import open_dataset

    torch.manual_seed(0)
    model = build_model(TINY, TASK_KEYS).eval()
    codecs = build_codecs(TINY, TASK_KEYS)
    ds = open_dataset(tiny_mock)
    scalar_keys = [k for k in TASK_KEYS if k not in ("tok_image", "tok_spectrum_desi")]
    for key, (modality, present) in load_modalities(ds, ds.ids, scalar_keys).items():
        fill_quantile_table(codecs[key], modality.value[torch.from_numpy(present.copy())])
    out = tmp_path_factory.mktemp("task-models") / "tiny-tasks"
    save_model(out, model, codecs, {"preset": TINY.name, "note": "random weights, tests only"})
    return out


@pytest.fixture()
def isolated_results(tmp_path, monkeypatch):
    """Point the index/results root at a temporary folder so tests never touch indexes/."""
    import engine.paths

    root = tmp_path / "indexes"
    monkeypatch.setattr(engine.paths, "INDEX_ROOT", root)
    return root
