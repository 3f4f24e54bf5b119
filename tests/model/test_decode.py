"""Decoder read-outs: one slot is exactly ``AION.forward``; padded slots are exactly the training forward."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from aion import modalities as am

from engine.errors import ModelError
from engine.model.decode import decoder_logits
from engine.model.loading import build_model
from engine.train.masking import build_mod_dict
from engine.train.metrics import decoder_outputs

KEYS = ["tok_image", "tok_flux_g", "tok_flux_r", "tok_z"]


@pytest.fixture(scope="module")
def model_and_batch():
    torch.manual_seed(0)
    model = build_model("nano", KEYS).eval()
    gen = torch.Generator().manual_seed(1)
    b = 3
    tokens = {"tok_image": torch.randint(0, 4000, (b, 576), generator=gen),
              "tok_flux_g": torch.randint(0, 1024, (b, 1), generator=gen),
              "tok_flux_r": torch.randint(0, 1024, (b, 1), generator=gen),
              "tok_z": torch.randint(0, 1024, (b, 1), generator=gen)}
    hidden = {k: torch.zeros(b, t.shape[1], dtype=torch.bool) for k, t in tokens.items() if k != "tok_z"}
    hidden["tok_image"][:, 200:] = True  # part of the image shown
    hidden["tok_flux_r"][1] = True  # one object without r
    return model, tokens, hidden


def test_one_slot_is_the_official_forward(model_and_batch):
    model, tokens, hidden = model_and_batch
    inputs = {k: tokens[k] for k in hidden}
    with torch.no_grad():
        official = model(inputs, target_modality=[am.Z], input_mask=hidden)["tok_z"]
        target = {"tok_z": torch.zeros(3, 1, dtype=torch.bool)}
        same_encoder = decoder_logits(model, inputs, hidden, target, num_encoder_tokens=578)["tok_z"]
        ours = decoder_logits(model, inputs, hidden, target)["tok_z"]  # hidden tokens cut from the encoder
    assert ours.shape == (3, 1, 1025)
    assert torch.equal(same_encoder, official)
    torch.testing.assert_close(ours, official, rtol=1e-5, atol=1e-5)


def test_padded_slots_are_the_training_forward(model_and_batch):
    model, tokens, hidden = model_and_batch
    inputs = {k: tokens[k] for k in hidden}
    b = 3
    in_mask = {k: hidden[k].numpy() for k in hidden} | {"tok_z": np.ones((b, 1), bool)}
    tgt_mask = {k: np.ones(tokens[k].shape, bool) for k in hidden} | {"tok_z": np.zeros((b, 1), bool)}
    n_in = int(sum((~hidden[k]).sum(1) for k in hidden).max())
    with torch.no_grad():
        y, _, dmod = decoder_outputs(model, build_mod_dict(tokens, in_mask, tgt_mask), n_in, 64)
        training = model.decoder_embeddings["tok_z"].forward_logits(y[dmod == model.modality_info["tok_z"]["id"]])
        padded = decoder_logits(model, inputs, hidden, {"tok_z": torch.zeros(b, 1, dtype=torch.bool)}, 64)["tok_z"]
        one = decoder_logits(model, inputs, hidden, {"tok_z": torch.zeros(b, 1, dtype=torch.bool)})["tok_z"]
    torch.testing.assert_close(padded.reshape(b, -1), training.reshape(b, -1), rtol=1e-5, atol=1e-5)
    # the empty slots change what the target reads (the uniform decoder self-attention pools them)
    assert float((padded - one).abs().max()) > 1e-3


def test_bad_targets_are_refused(model_and_batch):
    model, tokens, hidden = model_and_batch
    inputs = {k: tokens[k] for k in hidden}
    ragged = torch.ones(3, 576, dtype=torch.bool)
    ragged[0, :2] = False
    ragged[1:, :1] = False
    with pytest.raises(ModelError, match="same number of tok_image positions, got \\[1, 2\\]"):
        decoder_logits(model, inputs, hidden, {"tok_image": ragged}, 64)
    with pytest.raises(ModelError, match="at least one target"):
        decoder_logits(model, inputs, hidden, {}, 64)
