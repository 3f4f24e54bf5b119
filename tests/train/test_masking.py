"""The AION-1 masking sampler: budgets are exact over many random draws (property test)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from engine.train.masking import MaskingConfig, build_mod_dict, sample_masks

COUNTS = {"tok_image": 576, "tok_spectrum_desi": 273, "tok_flux_g": 1, "tok_flux_r": 1, "tok_z": 1, "tok_xp_bp": 55}


@pytest.mark.parametrize("budgets", [(256, 128), (32, 16), (1, 1), (900, 900), (5, 300)])
def test_budgets_exact_over_many_draws(budgets):
    cfg = MaskingConfig(*budgets)
    rng = np.random.default_rng(0)
    batch = 16
    for draw in range(40):
        present = {k: rng.random(batch) < 0.7 for k in COUNTS}
        if draw == 0:  # edge cases: nothing, one scalar only, everything
            present = {k: np.zeros(batch, bool) for k in COUNTS}
            present["tok_z"][1] = True
            present["tok_flux_g"][2] = present["tok_flux_r"][2] = True
            for k in COUNTS:
                present[k][3] = True
        in_mask, tgt_mask = sample_masks(COUNTS, present, cfg, rng)
        shown = np.concatenate([~in_mask[k] for k in COUNTS], axis=1)
        target = np.concatenate([~tgt_mask[k] for k in COUNTS], axis=1)
        avail = np.array([sum(COUNTS[k] * present[k][b] for k in COUNTS) for b in range(batch)])
        n_in = shown.sum(1)
        n_tgt = target.sum(1)
        expect_in = np.where(avail >= 2, np.minimum(cfg.input_budget, avail - 1), 0)
        expect_tgt = np.where(avail >= 2, np.minimum(cfg.target_budget, avail - expect_in), avail)
        np.testing.assert_array_equal(n_in, expect_in)
        np.testing.assert_array_equal(n_tgt, expect_tgt)
        assert not (shown & target).any(), "a token is both input and target"
        for k in COUNTS:  # absent modalities are never shown nor targeted
            absent = ~present[k]
            assert in_mask[k][absent].all() and tgt_mask[k][absent].all()


def test_anchor_and_target_distribution_are_varied():
    """Over many draws every modality is sometimes input and sometimes target; targets are skewed."""
    cfg = MaskingConfig(64, 32)
    rng = np.random.default_rng(1)
    present = {k: np.ones(256, bool) for k in COUNTS}
    in_mask, tgt_mask = sample_masks(COUNTS, present, cfg, rng)
    for k in COUNTS:
        assert (~in_mask[k]).any(axis=1).mean() > 0.05, k
        assert (~tgt_mask[k]).any(axis=1).mean() > 0.05, k
    # Beta skewed to zero: most examples draw targets from few modalities
    mods_per_example = np.stack([(~tgt_mask[k]).any(axis=1) for k in COUNTS], 1).sum(1)
    assert np.median(mods_per_example) < len(COUNTS)


def test_mod_dict_matches_fourm_contract():
    rng = np.random.default_rng(2)
    counts = {"tok_flux_g": 1, "tok_image": 576}
    present = {k: np.ones(3, bool) for k in counts}
    in_mask, tgt_mask = sample_masks(counts, present, MaskingConfig(8, 4), rng)
    toks = {k: torch.randint(0, 10, (3, n)) for k, n in counts.items()}
    md = build_mod_dict(toks, in_mask, tgt_mask)
    for k, n in counts.items():
        assert md[k]["tensor"].dtype == torch.long and md[k]["tensor"].shape == (3, n)
        assert md[k]["input_mask"].dtype == torch.bool and md[k]["target_mask"].shape == (3, n)
        assert md[k]["decoder_attention_mask"].dtype == torch.long


def test_rejects_bad_budgets():
    with pytest.raises(ValueError, match="budgets"):
        MaskingConfig(0, 4)


def test_scalar_inputs_only_draws_show_one_token_modalities_and_leave_some_as_targets():
    """With probability 1 the encoder sees only scalars (1 .. n-1 of them); arrays are targets only."""
    cfg = MaskingConfig(64, 32, scalar_inputs_only=1.0)
    rng = np.random.default_rng(3)
    present = {k: np.ones(200, bool) for k in COUNTS}
    in_mask, tgt_mask = sample_masks(COUNTS, present, cfg, rng)
    singles = [k for k, n in COUNTS.items() if n == 1]
    for k, n in COUNTS.items():
        if n > 1:
            assert in_mask[k].all(), f"{k} shown in a scalar-only draw"
    n_shown = sum((~in_mask[k]).sum(1) for k in singles)
    assert n_shown.min() >= 1 and n_shown.max() <= len(singles) - 1
    scalar_targets = sum((~tgt_mask[k]).sum(1) for k in singles)
    assert (scalar_targets > 0).mean() > 0.5  # scalars are learned from scalars
    for k in COUNTS:
        assert not ((~in_mask[k]) & (~tgt_mask[k])).any()
    # half the draws: some show arrays again
    in_half, _ = sample_masks(COUNTS, present, MaskingConfig(64, 32, scalar_inputs_only=0.5), rng)
    shows_image = (~in_half["tok_image"]).any(1).mean()
    assert 0.2 < shows_image < 0.8
    with pytest.raises(ValueError, match="'scalar_inputs_only': 1.5"):
        MaskingConfig(64, 32, scalar_inputs_only=1.5)


def test_readout_draws_show_or_ask_for_whole_scalars_beside_part_of_one_array():
    """A read-out draw (probability 1): every present one-token modality is either shown or a
    target, at least one is a target, arrays are never targets and at most one array is shown;
    budgets hold; with probability 0 the draws are the default sampler's, bit for bit."""
    singles = [k for k, n in COUNTS.items() if n == 1]
    arrays = [k for k, n in COUNTS.items() if n > 1]
    present = {k: np.random.default_rng(i).random(300) < 0.8 for i, k in enumerate(COUNTS)}
    n_singles = sum(present[k].astype(int) for k in singles)
    readout = n_singles >= 2  # fewer than two scalars: the default draw
    in_mask, tgt_mask = sample_masks(COUNTS, present, MaskingConfig(64, 32, readout_draws=1.0),
                                     np.random.default_rng(5))
    assert readout.mean() > 0.5
    for k in singles:
        shown, asked = ~in_mask[k][:, 0], ~tgt_mask[k][:, 0]
        assert not (shown & asked).any()
        assert np.array_equal((shown | asked)[readout], present[k][readout]), k
    asked = sum((~tgt_mask[k][:, 0]).astype(int) for k in singles)
    assert (asked[readout] >= 1).all()
    assert all(tgt_mask[k][readout].all() for k in arrays)
    arrays_shown = sum((~in_mask[k]).any(1).astype(int) for k in arrays)
    assert arrays_shown[readout].max() <= 1 and arrays_shown[readout].mean() > 0.3
    n_in = sum((~in_mask[k]).sum(1) for k in COUNTS)
    assert n_in.max() <= 64
    # budgets of 1: one input at most, one target
    in1, tgt1 = sample_masks(COUNTS, present, MaskingConfig(1, 1, readout_draws=1.0), np.random.default_rng(5))
    assert sum((~in1[k]).sum(1) for k in COUNTS).max() <= 1
    assert sum((~tgt1[k]).sum(1) for k in COUNTS)[readout].max() == 1
    # probability 0 leaves the default stream untouched
    a = sample_masks(COUNTS, present, MaskingConfig(64, 32), np.random.default_rng(9))
    b = sample_masks(COUNTS, present, MaskingConfig(64, 32, readout_draws=0.0), np.random.default_rng(9))
    for k in COUNTS:
        assert np.array_equal(a[0][k], b[0][k]) and np.array_equal(a[1][k], b[1][k])
    with pytest.raises(ValueError, match="'readout_draws': -0.1"):
        MaskingConfig(64, 32, readout_draws=-0.1)


def test_copy_draws_ask_for_the_shown_one_token_modalities():
    """A copy draw (probability 1): the targets are exactly the shown one-token modalities (up to
    the budget); a draw that shows none keeps its default targets; probability 0 changes nothing."""
    singles = [k for k, n in COUNTS.items() if n == 1]
    present = {k: np.ones(300, bool) for k in COUNTS}
    in_mask, tgt_mask = sample_masks(COUNTS, present, MaskingConfig(64, 32, copy_draws=1.0), np.random.default_rng(2))
    shown_singles = sum((~in_mask[k][:, 0]).astype(int) for k in singles)
    copied = shown_singles > 0
    assert 0.2 < copied.mean() < 1.0
    for k in singles:
        assert np.array_equal((~tgt_mask[k][:, 0])[copied], (~in_mask[k][:, 0])[copied]), k
    for k, n in COUNTS.items():
        if n > 1:
            assert tgt_mask[k][copied].all(), f"{k} asked for in a copy draw"
    n_tgt = sum((~tgt_mask[k]).sum(1) for k in COUNTS)
    assert (n_tgt[~copied] > 0).all()  # nothing to copy: the default targets stay
    _, tgt1 = sample_masks(COUNTS, present, MaskingConfig(64, 1, copy_draws=1.0), np.random.default_rng(2))
    assert sum((~tgt1[k]).sum(1) for k in COUNTS).max() == 1
    a = sample_masks(COUNTS, present, MaskingConfig(64, 32), np.random.default_rng(4))
    b = sample_masks(COUNTS, present, MaskingConfig(64, 32, copy_draws=0.0), np.random.default_rng(4))
    for k in COUNTS:
        assert np.array_equal(a[0][k], b[0][k]) and np.array_equal(a[1][k], b[1][k])
    with pytest.raises(ValueError, match="'copy_draws': 2"):
        MaskingConfig(64, 32, copy_draws=2)
