"""Ordinal scalar-token init: neighbouring bins start close, far bins apart; official shapes kept."""

import pytest
import torch

from engine.errors import ModelError
from engine.model.loading import build_model
from engine.train.ordinal_init import fourier_rows, init_scalar_embeddings
from engine.train.pretrain import PretrainConfig


def _cos(w: torch.Tensor, i: int, j: int) -> float:
    return float(torch.nn.functional.cosine_similarity(w[i], w[j], dim=0))


def test_fourier_rows_are_smooth_in_the_bin_index():
    rows = fourier_rows(1025, 96)
    assert rows.shape == (1025, 96)
    assert abs(float(rows.pow(2).mean()) - 1.0) < 1e-5
    assert _cos(rows, 500, 501) > 0.99
    assert _cos(rows, 500, 510) > 0.9
    assert abs(_cos(rows, 100, 900)) < 0.5


def test_init_touches_only_scalar_rows_and_keeps_shapes():
    torch.manual_seed(0)
    model = build_model("nano", ["tok_image", "tok_z", "tok_flux_g"])
    before = {k: v.clone() for k, v in model.state_dict().items()}
    changed = init_scalar_embeddings(model)
    assert changed == ["tok_flux_g", "tok_z"]
    after = model.state_dict()
    assert {k: v.shape for k, v in after.items()} == {k: v.shape for k, v in before.items()}
    moved = sorted(k for k in after if not torch.equal(after[k], before[k]))
    assert moved and all(("tok_z" in k or "tok_flux_g" in k) and k.endswith(("token_emb.weight", "to_logits.weight"))
                         for k in moved)
    enc = model.encoder_embeddings["tok_z"].token_emb.weight.detach()
    assert abs(float(enc.pow(2).mean().sqrt()) - 1.0) < 1e-3  # unit scale: the value must stand out
    logits_rows = model.decoder_embeddings["tok_z"].to_logits.weight.detach()
    assert abs(float(logits_rows.pow(2).mean().sqrt()) - 0.02) < 1e-4  # a flat start for the outputs
    assert _cos(enc, 300, 302) > 0.95  # random init gives ~0 here
    dec = model.decoder_embeddings["tok_z"].to_logits.weight.detach()
    assert _cos(dec, 300, 302) > 0.95
    other = model.encoder_embeddings["tok_flux_g"].token_emb.weight.detach()
    assert not torch.allclose(enc[:1000], other[:1000])  # each modality gets its own mixing


def test_unknown_scalar_init_is_refused():
    with pytest.raises(ModelError, match="scalar_init 'smooth' not known; accepted: ordinal, random"):
        PretrainConfig(scalar_init="smooth")
