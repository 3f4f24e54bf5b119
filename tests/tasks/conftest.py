"""A tiny random-weight model over the task inputs, and the 64-object mock survey."""

from __future__ import annotations

import pytest
import torch

from engine.model.modalities import LS_FLUX_KEYS

TASK_KEYS = (*LS_FLUX_KEYS, "tok_flux_g_gaia", "tok_flux_bp_gaia", "tok_flux_rp_gaia", "tok_image",
             "tok_spectrum_desi", "tok_xp_bp", "tok_xp_rp")

@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def task_model_dir(build_tiny_model, tiny_mock):
    """A saved random-weight model (dim 32, 1+1 blocks) over photometry, image, DESI spectrum and XP."""
    return build_tiny_model(tiny_mock, TASK_KEYS, "tiny-tasks")


@pytest.fixture()
def isolated_results(tmp_path, monkeypatch):
    """Point the index/results root at a temporary folder so tests never touch indexes/."""
    import engine.paths

    root = tmp_path / "indexes"
    monkeypatch.setattr(engine.paths, "INDEX_ROOT", root)
    return root
