"""Gaussian-smoothed scalar targets: proper distributions, the official loss at sigma 0, images untouched."""

import random

import numpy as np
import pytest
import torch
from aion.fourm.fm import FourM

from engine.errors import ModelError
from engine.model.loading import build_model
from engine.model.modalities import spec
from engine.train.masking import MaskingConfig, build_mod_dict, sample_masks
from engine.train.ordinal_loss import gaussian_bin_targets, masked_modeling_loss, ordinal_keys
from engine.train.pretrain import PretrainConfig

KEYS = ("tok_image", "tok_flux_g", "tok_flux_r", "tok_z", "tok_xp_bp")


def test_gaussian_targets_are_distributions_centred_on_the_true_bin():
    target = torch.tensor([0, 5, 500, 1023])
    q = gaussian_bin_targets(target, 1024, sigma=8.0)
    assert q.shape == (4, 1024)
    torch.testing.assert_close(q.sum(-1), torch.ones(4))
    assert q.argmax(-1).tolist() == [0, 5, 500, 1023]
    mean = (q * (torch.arange(1024) + 0.5)).sum(-1)
    assert abs(float(mean[2]) - 500.5) < 1e-3  # interior: unbiased
    assert float(q[2, 492]) == pytest.approx(float(q[2, 508]), rel=1e-5)  # symmetric
    assert float(mean[0]) > 0.5  # at an edge the mass folds inward, renormalised
    sharp = gaussian_bin_targets(target, 1024, sigma=0.05)
    assert torch.equal(sharp.argmax(-1), target) and float(sharp.max(-1).values.min()) > 0.999


def test_ordinal_keys_are_scalars_and_xp_not_images():
    assert ordinal_keys(KEYS) == {"tok_flux_g", "tok_flux_r", "tok_z", "tok_xp_bp"}


def _batch(seed: int = 0, n: int = 6):
    g = torch.Generator().manual_seed(seed)
    tokens = {k: torch.randint(0, 1000, (n, spec(k).num_tokens), generator=g) for k in KEYS}
    present = {k: np.ones(n, dtype=bool) for k in KEYS}
    counts = {k: spec(k).num_tokens for k in KEYS}
    cfg = MaskingConfig(input_budget=48, target_budget=24)
    in_mask, tgt_mask = sample_masks(counts, present, cfg, np.random.default_rng(seed))
    return build_mod_dict(tokens, in_mask, tgt_mask), cfg


def test_sigma_zero_is_the_official_loss_and_smoothing_touches_only_scalars(tiny_preset):
    torch.manual_seed(0)
    model = build_model(tiny_preset, KEYS).eval()
    mod_dict, cfg = _batch()
    random.seed(1)
    official, official_mods = FourM.forward(model, mod_dict, cfg.input_budget, cfg.target_budget)
    random.seed(1)
    ours, ours_mods = masked_modeling_loss(model, mod_dict, cfg.input_budget, cfg.target_budget, sigma=0.0)
    torch.testing.assert_close(ours, official)
    random.seed(1)
    smooth, smooth_mods = masked_modeling_loss(model, mod_dict, cfg.input_budget, cfg.target_budget, sigma=16.0)
    torch.testing.assert_close(smooth_mods["tok_image"], official_mods["tok_image"])
    scalars_with_targets = [k for k in ordinal_keys(KEYS) if float(official_mods[k].detach()) > 0]
    assert scalars_with_targets
    for k in scalars_with_targets:
        assert not torch.allclose(smooth_mods[k], official_mods[k])


def test_smoothed_targets_stay_on_the_codecs_bins():
    """The official tok_z head has 1025 logits for the 1024-bin redshift grid: near the top edge
    the Gaussian's mass stays on the grid (renormalised), none goes to the extra logit."""
    q = gaussian_bin_targets(torch.tensor([1023, 0]), 1024, sigma=64.0, width=1025)
    assert q.shape == (2, 1025) and float(q[:, 1024].abs().max()) == 0.0
    torch.testing.assert_close(q.sum(-1), torch.ones(2))
    torch.testing.assert_close(q[:, :1024], gaussian_bin_targets(torch.tensor([1023, 0]), 1024, sigma=64.0))
    with pytest.raises(ValueError, match="width must be >= n_bins=1024"):
        gaussian_bin_targets(torch.tensor([3]), 1024, sigma=1.0, width=10)


def test_smoothed_loss_finds_the_neighbourhood_faster_than_cross_entropy():
    """The reason for the option: early in training, a 1024-bin head fit to noisy examples of a
    smooth function puts its mean near the truth sooner with smoothed targets than with one-hot
    ones (mean |error| 54 vs 107 bins here)."""
    g = torch.Generator().manual_seed(0)
    x = torch.rand(128, 1, generator=g)
    target = (x[:, 0] * 1023 + 40 * torch.randn(128, generator=g)).clamp(0, 1023).long()
    x_new = torch.rand(512, 1, generator=g)

    def fit(sigma: float) -> float:
        torch.manual_seed(0)
        net = torch.nn.Sequential(torch.nn.Linear(1, 64), torch.nn.GELU(), torch.nn.Linear(64, 1024))
        opt = torch.optim.Adam(net.parameters(), lr=1e-2)
        for _ in range(30):
            logits = net(x)
            if sigma > 0:
                loss = -(gaussian_bin_targets(target, 1024, sigma) * logits.log_softmax(-1)).sum(-1).mean()
            else:
                loss = torch.nn.functional.cross_entropy(logits, target)
            opt.zero_grad()
            loss.backward()
            opt.step()
        with torch.no_grad():
            mean_bin = (net(x_new).softmax(-1) * (torch.arange(1024) + 0.5)).sum(-1)
        return float((mean_bin - x_new[:, 0] * 1023).abs().mean())

    assert fit(32.0) < 0.7 * fit(0.0)


def test_negative_sigma_is_refused():
    with pytest.raises(ModelError, match="scalar_sigma must be >= 0"):
        PretrainConfig(scalar_sigma=-1.0)
