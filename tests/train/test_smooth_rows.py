"""Smooth scalar rows: trained through a basis over the bins, saved as plain official rows."""

from __future__ import annotations

import shutil

import pytest
import torch

from engine.errors import ModelError
from engine.model.loading import build_model, load_model
from engine.train.codec_training import CodecTrainConfig, train_codecs
from engine.train.ordinal_init import init_scalar_embeddings
from engine.train.pretrain import PretrainConfig, params_digest, pretrain
from engine.train.smooth_rows import fourier_basis, materialize, smooth_scalar_rows

SCALAR_ROWS = "decoder_embeddings.tok_flux_g.to_logits.weight"


def _off_basis(rows: torch.Tensor, n_freq: int = 48) -> float:
    """Share of the rows' energy outside the smooth basis (0 = every row is B @ W)."""
    basis = fourier_basis(rows.shape[0], n_freq)
    rows = rows.float()
    resid = rows - basis @ (basis.T @ rows)
    return float(resid.pow(2).sum() / rows.pow(2).sum())


def test_basis_is_orthonormal_and_holds_the_ordinal_init():
    basis = fourier_basis(1024, 48)
    assert basis.shape == (1024, 98)
    assert torch.allclose(basis.T @ basis, torch.eye(98), atol=1e-4)
    model = build_model("nano", ["tok_flux_g", "tok_image"])
    init_scalar_embeddings(model)
    before = model.encoder_embeddings["tok_flux_g"].token_emb.weight.detach().clone()
    names = smooth_scalar_rows(model)
    assert names == ["encoder.tok_flux_g.token_emb", "decoder.tok_flux_g.token_emb", "decoder.tok_flux_g.to_logits"]
    # the ordinal rows lie in the basis: parametrising does not change the model's start
    assert torch.allclose(model.encoder_embeddings["tok_flux_g"].token_emb.weight, before, atol=1e-4)
    # image rows are not scalars and stay plain parameters
    assert "tok_image" not in " ".join(n for n, _ in model.named_parameters() if "parametrizations" in n)
    with pytest.raises(ModelError, match="already parametrised"):
        smooth_scalar_rows(model)
    materialize(model)
    assert not any("parametrizations" in k for k in model.state_dict())
    assert torch.allclose(model.encoder_embeddings["tok_flux_g"].token_emb.weight, before, atol=1e-4)


def test_config_refuses_unknown_rows_and_a_refinement():
    with pytest.raises(ModelError, match="scalar_rows 'wavy' not known; accepted: free, smooth"):
        PretrainConfig(scalar_rows="wavy")
    with pytest.raises(ModelError, match="init_from"):
        PretrainConfig(scalar_rows="smooth", init_from="assets/models/aion-nano")


def test_smooth_training_saves_plain_rows_in_the_basis(train_data, tiny_preset, tmp_path):
    codecs = tmp_path / "codecs"
    train_codecs(train_data, codecs, tiny_preset, run_dir=tmp_path / "codec-run",
                 config=CodecTrainConfig(image_steps=2, spectrum_steps=2, batch_size=4, eval_objects=2))
    rows = {}
    for mode in ("free", "smooth"):
        out = shutil.copytree(codecs, tmp_path / mode)
        cfg = PretrainConfig(max_steps=12, batch_size=8, warmup=2, lr=3e-3, log_every=4, checkpoint_every=1000,
                             scalar_rows=mode)
        summary = pretrain(train_data, out, tiny_preset, cfg, run_dir=tmp_path / f"run-{mode}", evaluate=False)
        loaded = load_model(out).model  # strict load: official keys only
        rows[mode] = loaded.state_dict()[SCALAR_ROWS]
        assert summary["rank_param_digests"] == [params_digest(loaded)]  # the digest is of the saved weights
    # both start from the same ordinal rows (in the basis); only the free rows leave it when trained
    assert _off_basis(rows["smooth"]) < 1e-4
    assert _off_basis(rows["free"]) > 100 * max(_off_basis(rows["smooth"]), 1e-6)
