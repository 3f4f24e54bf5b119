"""Splits are stable per object; heads ignore masked tokens and can learn."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from engine.tasks import metrics
from engine.tasks.fitting import FitConfig, fit, masked_mse, predict
from engine.tasks.heads import (
    AttentivePooling,
    MorphologyProbe,
    PropertyProbe,
    SegmentationHead,
    position_code,
)
from engine.tasks.splits import is_held_out, split_ids, split_rows, validation_ids


def test_split_is_stable_under_subsetting_and_reordering():
    ids = np.arange(10_000, 12_000, dtype=np.int64)
    held = is_held_out(ids, seed=3)
    assert 0.15 < held.mean() < 0.25
    sub = ids[::-7]
    np.testing.assert_array_equal(is_held_out(sub, seed=3), held[np.searchsorted(ids, sub)])
    assert not np.array_equal(is_held_out(ids, seed=4), held)
    train, test = split_ids(ids, seed=3)
    fit_ids, val_ids = validation_ids(train, seed=3)
    assert len(np.intersect1d(train, test)) == 0 and len(np.intersect1d(fit_ids, test)) == 0
    assert len(np.intersect1d(val_ids, test)) == 0 and len(fit_ids) + len(val_ids) == len(train)


def test_split_rows_partition_the_rows_and_refuse_tiny_sets():
    ids = np.arange(5000, 5400)[::-1]  # any order: rows index ``ids`` as given
    fit_r, val_r, test_r = split_rows(ids, seed=3)
    assert sorted(np.concatenate([fit_r, val_r, test_r]).tolist()) == list(range(len(ids)))
    assert set(ids[test_r]) == set(ids[is_held_out(ids, 3)])
    fit_ids, val_ids = validation_ids(ids[~is_held_out(ids, 3)], 3)
    assert set(ids[fit_r]) == set(fit_ids) and set(ids[val_r]) == set(val_ids)
    assert split_rows(ids[:3], seed=3) is None and split_rows(ids[:0], seed=3) is None


def test_split_rejects_bad_fraction():
    with pytest.raises(ValueError, match="fraction"):
        is_held_out(np.arange(5), fraction=1.5)


def test_attentive_pooling_ignores_masked_tokens():
    torch.manual_seed(0)
    pool = AttentivePooling(16, n_queries=2, num_heads=4).eval()
    x = torch.randn(3, 10, 16)
    mask = torch.zeros(3, 10, dtype=torch.bool)
    mask[:, 6:] = True
    a = pool(x, mask)
    x2 = x.clone()
    x2[:, 6:] = 1000.0
    torch.testing.assert_close(a, pool(x2, mask))
    all_masked = pool(x, torch.ones(3, 10, dtype=torch.bool))
    assert torch.isfinite(all_masked).all()


def test_property_probe_learns_a_target_carried_by_one_token():
    """The signal sits in one token among 40 noisy ones: attentive pooling must find it."""
    g = torch.Generator().manual_seed(0)
    n, t, d = 1200, 40, 16
    x = torch.randn(n, t, d, generator=g)
    x[:, 7, 0] = 5.0  # a marker so the pooling can locate the informative token
    y = x[:, 7, 1:3].clone()
    mask = torch.zeros(n, t, dtype=torch.bool)
    probe = PropertyProbe(d, 2, hidden=64)
    fit(probe, (x[:1000], mask[:1000]), y[:1000], (x[1000:1100], mask[1000:1100]), y[1000:1100], masked_mse,
        FitConfig(epochs=20, batch_size=32, lr=3e-3, progress=False))
    pred = predict(probe, (x[1100:], mask[1100:])).numpy()
    assert metrics.r2_score(y[1100:, 0].numpy(), pred[:, 0]) > 0.7
    assert metrics.r2_score(y[1100:, 1].numpy(), pred[:, 1]) > 0.7


def test_grouped_property_probe_pools_each_group_on_its_own():
    """With groups, the photometry range's pooled vector ignores the image range: flooding the
    image tokens changes only the image pool's share of the MLP input, and a mask over a whole
    group (an object without that modality) still gives finite outputs."""
    torch.manual_seed(0)
    groups = ((0, 3), (3, 40))
    probe = PropertyProbe(16, 2, hidden=32, groups=groups).eval()
    x = torch.randn(4, 40, 16)
    mask = torch.zeros(4, 40, dtype=torch.bool)
    phot = probe.pools[0](x[:, :3], mask[:, :3])
    x2 = x.clone()
    x2[:, 3:] = 100.0 * torch.randn(4, 37, 16)
    torch.testing.assert_close(phot, probe.pools[0](x2[:, :3], mask[:, :3]))
    assert not torch.allclose(probe(x, mask), probe(x2, mask))
    mask[:, 3:] = True
    assert probe(x2, mask).shape == (4, 2) and torch.isfinite(probe(x2, mask)).all()
    torch.testing.assert_close(probe(x, mask), probe(x2, mask))  # a masked group is not read
    assert PropertyProbe(16, 2).groups is None  # the paper's single pool stays available


def test_position_code_tells_every_token_of_a_run_apart():
    spectrum, image = position_code(273, 32), position_code(576, 32)
    assert spectrum.shape == (273, 32) and image.shape == (576, 32)
    for code in (spectrum, image):
        assert torch.isfinite(code).all() and len(torch.unique(code, dim=0)) == len(code)
    # the image grid is coded by row and column: tokens of one row share the row half
    torch.testing.assert_close(image[24 * 5, :16], image[24 * 5 + 17, :16])
    assert not torch.allclose(image[24 * 5, 16:], image[24 * 5 + 17, 16:])
    assert position_code(1, 32).abs().sum() == 0
    with pytest.raises(ValueError, match="multiple of 4"):
        position_code(10, 6)
    with pytest.raises(ValueError, match="groups"):
        PropertyProbe(8, 1, position_channels=8)


def test_position_code_lets_a_probe_read_where_a_line_sits():
    """The target is *where* the one marked token sits (a line's wavelength: the redshift); its
    features say nothing else. Pooling alone cannot tell where the attended token was; with the
    position code the probe reads it."""
    g = torch.Generator().manual_seed(0)
    n, t, d = 1400, 60, 8
    x = 0.3 * torch.randn(n, t, d, generator=g)
    where = torch.randint(0, t, (n,), generator=g)
    x[torch.arange(n), where, 0] = 5.0
    y = (where.float() / t)[:, None]
    mask = torch.zeros(n, t, dtype=torch.bool)
    scores = {}
    for channels in (0, 16):
        torch.manual_seed(0)
        probe = PropertyProbe(d, 1, hidden=64, groups=((0, t),), position_channels=channels)
        fit(probe, (x[:1000], mask[:1000]), y[:1000], (x[1000:1200], mask[1000:1200]), y[1000:1200], masked_mse,
            FitConfig(epochs=25, batch_size=32, lr=3e-3, progress=False))
        scores[channels] = metrics.r2_score(y[1200:, 0].numpy(), predict(probe, (x[1200:], mask[1200:])).numpy()[:, 0])
    assert scores[0] < 0.2 and scores[16] > 0.8, scores


def test_layout_groups_merge_consecutive_one_token_modalities():
    from engine.tasks.features import Layout

    keys = ("tok_flux_g", "tok_flux_r", "tok_image", "tok_flux_z", "tok_spectrum_desi")
    assert Layout(keys).groups() == ((0, 2), (2, 578), (578, 579), (579, 852))
    assert Layout(("tok_flux_g",)).groups() == ((0, 1),)


def test_morphology_and_segmentation_heads_shapes():
    tokens = torch.randn(2, 576, 32)
    mask = torch.zeros(2, 576, dtype=torch.bool)
    assert MorphologyProbe(32, 10)(tokens, mask).shape == (2, 10)
    head = SegmentationHead(32, 6)
    assert head(tokens).shape == (2, 6, 96, 96)
    with pytest.raises(ValueError, match="576 image tokens"):
        head(tokens[:, :100])


def test_standardized_segmentation_head_is_blind_to_each_channels_scale(tmp_path):
    """Frozen layers of very different scales: with per-channel standardisation fitted on the training
    tokens, rescaling a channel changes nothing; a LayerNorm per token lets the large channels win. The
    saved head keeps its shift and scale."""
    from engine.tasks.fitting import load_head, save_head
    from engine.tasks.probes import build_head

    torch.manual_seed(0)
    tokens = torch.randn(3, 576, 32)
    scales = torch.logspace(-2, 1, 32)
    head = SegmentationHead(32, 6, standardize=True)
    head.standardize_on(tokens)
    before = head(tokens)
    head.standardize_on(tokens * scales)
    assert torch.allclose(head(tokens * scales), before, atol=1e-4)
    layer_norm = SegmentationHead(32, 6)
    assert not torch.allclose(layer_norm(tokens * scales), layer_norm(tokens), atol=1e-2)
    meta = {"head": "segmentation", "dim": 32, "classes": list("abcdef"), "standardize": True}
    save_head(tmp_path / "segmentation", head, meta)
    loaded, _ = load_head(tmp_path / "segmentation", build_head)
    assert torch.allclose(loaded(tokens * scales), before, atol=1e-4)
    with pytest.raises(ValueError, match="standardize=True"):
        layer_norm.standardize_on(tokens)


def test_radial_morphology_head_sees_where_the_light_is():
    """Classes that differ only in *which annulus* carries a signal (same total, so the same mean):
    the radial head separates them, the paper's mean-pooling probe cannot."""
    from engine.model.pooling import ring_of_token
    from engine.tasks.heads import RadialMorphologyProbe

    gen = torch.Generator().manual_seed(0)
    n, d, rings = 900, 8, (1, 4, 8)
    ring = torch.as_tensor(ring_of_token(576))
    y = torch.arange(n) % len(rings)
    x = 0.3 * torch.randn(n, 576 + 8, d, generator=gen)  # 576 image tokens, then 8 "flux" tokens
    signal = torch.randn(d, generator=gen)
    for c, r in enumerate(rings):
        where = ring == r
        rows, cols = torch.nonzero(y == c)[:, 0], torch.nonzero(where)[:, 0]
        x[rows[:, None], cols[None, :]] += signal * 40.0 / where.sum()  # the same total signal in every class
    mask = torch.zeros(n, 576 + 8, dtype=torch.bool)
    cfg = FitConfig(epochs=15, batch_size=64, lr=1e-3, progress=False)
    radial = RadialMorphologyProbe(d, 3, (0, 576), hidden=64, dropout=0.1)
    radial.standardize_on(x[:600], mask[:600])
    fit(radial, (x[:600], mask[:600]), y[:600], (x[600:700], mask[600:700]), y[600:700],
        torch.nn.functional.cross_entropy, cfg)
    mean = MorphologyProbe(d, 3, hidden=64)
    fit(mean, (x[:600], mask[:600]), y[:600], (x[600:700], mask[600:700]), y[600:700],
        torch.nn.functional.cross_entropy, cfg)
    acc = {name: float((predict(m, (x[700:], mask[700:])).argmax(-1) == y[700:]).float().mean())
           for name, m in (("radial", radial), ("mean", mean))}
    assert acc["radial"] > 0.9 and acc["mean"] < 0.6, acc
    state = radial.state_dict()
    assert {"shift", "scale"} <= set(state) and float(state["scale"].min()) > 0  # saved with the weights


def test_angular_power_is_blind_to_rotation_and_finds_the_mode():
    from engine.model.pooling import RINGS, angle_of_token, angular_power, ring_of_token

    theta = torch.as_tensor(angle_of_token(576), dtype=torch.float32)
    bar = torch.cos(2 * (theta - 0.4))[None, :, None].repeat(1, 1, 3)  # an m = 2 pattern at some angle
    grid = bar.reshape(1, 24, 24, 3)
    turned = torch.rot90(grid, 1, dims=(1, 2)).reshape(1, 576, 3)  # the same galaxy turned by 90 degrees
    power = angular_power(bar, (1, 2))
    torch.testing.assert_close(power, angular_power(turned, (1, 2)), atol=1e-5, rtol=1e-5)
    m1, m2 = power.reshape(2, RINGS, 3)
    outer = torch.as_tensor(ring_of_token(576)) >= 3
    assert outer.any() and float(m2[3:].min()) > 0.4 and float(m1[3:].max()) < 0.1


def test_angular_modes_separate_what_annulus_means_cannot():
    """Two classes with the same annulus means, one with a bar-like m = 2 pattern at a random angle."""
    from engine.model.pooling import angle_of_token, ring_of_token
    from engine.tasks.heads import RadialMorphologyProbe

    gen = torch.Generator().manual_seed(0)
    n, d = 600, 8
    theta = torch.as_tensor(angle_of_token(576), dtype=torch.float32)
    in_ring = torch.as_tensor((ring_of_token(576) >= 2) & (ring_of_token(576) <= 6))
    y = torch.arange(n) % 2
    x = 0.3 * torch.randn(n, 576, d, generator=gen)
    phase = 2 * torch.pi * torch.rand(n, generator=gen)
    pattern = torch.cos(2 * (theta[None, :] - phase[:, None])) * in_ring[None, :]  # (n, 576)
    x += (y[:, None, None] * pattern[:, :, None]) * torch.randn(d, generator=gen)[None, None, :]
    mask = torch.zeros(n, 576, dtype=torch.bool)
    cfg = FitConfig(epochs=15, batch_size=64, lr=1e-3, progress=False)
    acc = {}
    for name, harmonics in (("angular", (1, 2)), ("means only", ())):
        torch.manual_seed(0)
        head = RadialMorphologyProbe(d, 2, (0, 576), hidden=64, dropout=0.1, harmonics=harmonics, proj=8)
        head.standardize_on(x[:400], mask[:400])
        fit(head, (x[:400], mask[:400]), y[:400], (x[400:500], mask[400:500]), y[400:500],
            torch.nn.functional.cross_entropy, cfg)
        acc[name] = float((predict(head, (x[500:], mask[500:])).argmax(-1) == y[500:]).float().mean())
    assert acc["angular"] > 0.9 and acc["means only"] < 0.7, acc


def test_masked_mse_skips_missing_targets():
    pred = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    target = torch.tensor([[1.0, float("nan")], [float("nan"), 6.0]])
    assert float(masked_mse(pred, target)) == pytest.approx(2.0)


def test_metrics():
    assert metrics.r2_score(np.array([1.0, 2, 3]), np.array([1.0, 2, 3])) == 1.0
    assert metrics.iou(np.array([1, 1, 0, 0], bool), np.array([1, 0, 1, 0], bool)) == pytest.approx(1 / 3)
    cm = metrics.confusion_matrix(np.array([0, 1, 1]), np.array([0, 0, 1]), 2)
    assert cm.tolist() == [[1, 0], [1, 1]]
    chi = metrics.reduced_chi2(np.array([[1.0, 2.0, 9.0]]), np.array([[1.0, 3.0, 0.0]]), np.array([[4.0, 4.0, 0.0]]))
    assert chi[0] == pytest.approx(2.0)
    # sign test: 9 of 10 wins is p = 2 * 11 / 1024; an even split is 1; every loss as uneven as every win
    assert metrics.sign_test_p(9, 10) == pytest.approx(22 / 1024)
    assert metrics.sign_test_p(5, 10) == 1.0 and metrics.sign_test_p(1, 10) == metrics.sign_test_p(9, 10)
    with pytest.raises(ValueError, match="wins must be in 0..n=3"):
        metrics.sign_test_p(4, 3)


def test_capped_subset_is_stratified_and_stable():
    import pandas as pd

    from engine.tasks.probes import select_objects

    rng = np.random.default_rng(0)
    n = 2000
    cat = pd.DataFrame({"object_id": np.arange(n, dtype=np.int64) * 7 + 3,
                        "kind": np.where(np.arange(n) < 200, "star", np.where(np.arange(n) < 1900, "galaxy", "qso")),
                        "truth_z": rng.uniform(0, 1, n), "truth_teff": rng.uniform(3000, 9000, n)})
    cat["truth_morphology"] = np.where((cat.kind == "galaxy") & (rng.random(n) < 0.2), rng.integers(0, 10, n), -1)
    ids = select_objects(cat, 400, seed=0)
    sub = cat.set_index("object_id").loc[ids]
    assert len(ids) == 400 and "qso" not in set(sub.kind)
    assert (sub.truth_morphology >= 0).sum() == 200 and (sub.kind == "star").sum() == 60
    np.testing.assert_array_equal(ids, select_objects(cat.sample(frac=1, random_state=1), 400, seed=0))
    assert len(select_objects(cat, None)) == 1900


def test_spatial_morphology_head_reads_a_pattern_the_radial_head_cannot():
    """Two classes with the same token statistics per annulus: in one the signal channels alternate in
    sign between neighbouring tokens (a texture), in the other their signs are random. The signal sits in
    channels 20x smaller than the rest (as the embedding layer sits beside the last layer): the spatial
    head's per-channel standardisation finds it, its convolutions read the pattern; annulus means and
    m = 1, 2 modes cannot."""
    from engine.tasks.heads import RadialMorphologyProbe, SpatialMorphologyProbe

    gen = torch.Generator().manual_seed(0)
    n, d = 600, 8
    y = torch.arange(n) % 2
    rows, cols = torch.meshgrid(torch.arange(24), torch.arange(24), indexing="ij")
    checker = (1 - 2 * ((rows + cols) % 2)).reshape(576).float()  # +1 -1 +1 ...
    random_sign = torch.randint(0, 2, (n, 576), generator=gen).float() * 2 - 1
    sign = torch.where(y[:, None] == 1, checker[None, :], random_sign)
    x = torch.empty(n, 576 + 4, d)
    x[:, :, 4:] = 2.0 * torch.randn(n, 580, 4, generator=gen)  # large, uninformative channels
    x[:, :, :4] = 0.02 * torch.randn(n, 580, 4, generator=gen)
    x[:, :576, :4] += 0.1 * sign[..., None] * torch.rand(n, 1, 4, generator=gen)
    mask = torch.zeros(n, 580, dtype=torch.bool)
    cfg = FitConfig(epochs=10, batch_size=64, lr=2e-3, progress=False)
    acc = {}
    for name, head in (("spatial", SpatialMorphologyProbe(d, 2, (0, 576), width=16, hidden=32, dropout=0.1)),
                       ("radial", RadialMorphologyProbe(d, 2, (0, 576), hidden=32, dropout=0.1, proj=8))):
        torch.manual_seed(0)
        head.standardize_on(x[:400], mask[:400])
        fit(head, (x[:400], mask[:400]), y[:400], (x[400:500], mask[400:500]), y[400:500],
            torch.nn.functional.cross_entropy, cfg)
        acc[name] = float((predict(head, (x[500:], mask[500:])).argmax(-1) == y[500:]).float().mean())
    assert acc["spatial"] > 0.95 and acc["radial"] < 0.8, acc
    state = SpatialMorphologyProbe(d, 2, (0, 576)).state_dict()
    assert {"shift", "scale"} <= set(state)  # saved with the weights
    with pytest.raises(ValueError, match="24 x 24"):
        SpatialMorphologyProbe(d, 2, (0, 500))
