"""Dihedral augmentation: the eight views, targets turned with their cutouts, every (example, view)
pair once per epoch, and turned cutouts encoded through the codec again."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from engine.tasks.augment import (
    N_VIEWS,
    PixelViews,
    TokenViews,
    dihedral,
    mean_class_probabilities,
    mean_mask_probabilities,
    undo_dihedral,
    view_epochs,
)
from engine.tasks.fitting import FitConfig, fit


def test_the_eight_views_are_distinct_and_view_zero_is_the_cutout():
    x = torch.arange(12.0).reshape(1, 3, 4)[:, :, :3].reshape(1, 3, 3)  # no symmetry
    turned = [dihedral(x, v) for v in range(N_VIEWS)]
    assert torch.equal(turned[0], x)
    assert len({t.numpy().tobytes() for t in turned}) == N_VIEWS == 8
    assert torch.equal(dihedral(x, 1), torch.rot90(x, 1, dims=(-2, -1)))
    assert torch.equal(dihedral(x, 4), torch.flip(x, dims=(-1,)))
    with pytest.raises(ValueError, match="view 8"):
        dihedral(x, 8)


def test_undo_dihedral_puts_every_view_back():
    x = torch.rand(2, 3, 5, 5, generator=torch.Generator().manual_seed(0))
    for v in range(N_VIEWS):
        assert torch.equal(undo_dihedral(dihedral(x, v), v), x)
    with pytest.raises(ValueError, match="view 9"):
        undo_dihedral(x, 9)


def test_view_averaged_maps_are_turned_back_before_averaging():
    gen = torch.Generator().manual_seed(1)
    x = torch.rand(3, 2, 8, 8, generator=gen)
    # a per-pixel net turns with its input: its maps, turned back, are the observed view's (none is smeared)
    net = nn.Conv2d(2, 4, 1)
    with torch.no_grad():
        avg = mean_mask_probabilities(lambda v: net(dihedral(x, v)))
        torch.testing.assert_close(avg, net(x).sigmoid())
        # a net blind to its input paints the same (asymmetric) map on every view: the average is that map
        # made symmetric under the eight turns, and it stays a probability
        fixed = torch.randn(1, 4, 8, 8, generator=gen)
        avg = mean_mask_probabilities(lambda v: fixed)
    for v in range(N_VIEWS):
        torch.testing.assert_close(dihedral(avg, v), avg)
    assert not torch.allclose(avg, fixed.sigmoid()) and avg.min() > 0 and avg.max() < 1


def test_view_averaged_classes_are_the_mean_of_each_views_probabilities():
    logits = torch.tensor([[[4.0, 0.0]], [[0.0, 1.0]]])  # two views that disagree, one object
    prob = mean_class_probabilities(lambda v: logits[v], n_views=2)
    torch.testing.assert_close(prob, (logits[0].softmax(-1) + logits[1].softmax(-1)) / 2)
    torch.testing.assert_close(prob.sum(-1), torch.ones(1))


def test_pixel_views_turn_the_masks_with_the_cutouts():
    gen = torch.Generator().manual_seed(0)
    images = torch.rand(6, 2, 8, 8, generator=gen)
    masks = images[:, :1] > 0.5
    views = PixelViews(images, masks, turn_target=True)
    idx, view = torch.arange(6), torch.tensor([0, 1, 2, 3, 5, 7])
    (x,), y = views(idx, view)
    assert torch.equal(y, x[:, :1] > 0.5)  # mask and image turned alike
    for b in range(6):
        assert torch.equal(x[b], dihedral(images[b], int(view[b])))
    (_,), labels = PixelViews(images, torch.arange(6), turn_target=False)(idx, view)
    assert torch.equal(labels, torch.arange(6))  # class labels do not turn


def test_token_views_read_each_view_from_its_cache():
    base = torch.zeros(4, 3, 3)  # already cut to the columns, as the caches' rows will be
    caches = [np.full((10, 5, 3), float(v), dtype=np.float16) for v in range(1, N_VIEWS)]
    rows = np.array([7, 2, 9, 0])
    mask = torch.zeros(4, 3, dtype=torch.bool)
    views = TokenViews(base, caches, rows, [mask], torch.arange(4), columns=slice(1, 4))
    (x, m), y = views(torch.tensor([0, 1, 2, 3]), torch.tensor([0, 3, 6, 7]))
    assert x.shape == (4, 3, 3)
    assert x[0].eq(0).all() and x[1].eq(3).all() and x[2].eq(6).all() and x[3].eq(7).all()
    assert torch.equal(m, mask) and torch.equal(y, torch.arange(4))
    with pytest.raises(ValueError, match="7 turned views"):
        TokenViews(base, caches[:3], rows, [], torch.arange(4))


def test_fit_passes_over_every_example_in_every_view_once_per_epoch():
    """With views, ``fit`` runs ``view_epochs`` of the configured budget (8 -> 2), each a pass over every
    (example, view) pair; without views it runs the budget as given."""
    seen: list[tuple[int, int]] = []

    def views(idx, view):
        seen.extend(zip(idx.tolist(), view.tolist(), strict=True))
        return [torch.ones(len(idx), 2)], torch.zeros(len(idx), 1)

    model = nn.Linear(2, 1)
    x, y = torch.ones(5, 2), torch.zeros(5, 1)
    config = FitConfig(epochs=8, batch_size=4, progress=False)
    history = fit(model, (x,), y, (x,), y, nn.functional.mse_loss, config, views=views)
    assert view_epochs(8) == 2 and history["epochs"] == 2 and len(history["train_loss"]) == 2
    assert len(seen) == 2 * 5 * N_VIEWS
    assert sorted(seen[: 5 * N_VIEWS]) == [(i, v) for i in range(5) for v in range(N_VIEWS)]
    plain = fit(nn.Linear(2, 1), (x,), y, (x,), y, nn.functional.mse_loss, config)
    assert plain["epochs"] == 8 and len(plain["train_loss"]) == 8
    assert [view_epochs(e) for e in (1, 4, 5, 30, 60)] == [1, 1, 2, 8, 15]


def test_turned_cutouts_are_tokenized_again(tiny_mock, task_model_dir):
    """A view's image tokens are the codec's tokens of the turned cutout (not the turned tokens); the
    other modalities' tokens do not change, and view 0 is the cutout as observed."""
    from engine.data import open_dataset
    from engine.model.loading import load_model
    from engine.model.modalities import load_modalities
    from engine.tasks.features import tokenize

    loaded, ds = load_model(task_model_dir), open_dataset(tiny_mock)
    cat = ds.catalog
    ids = cat.loc[cat["has_image_ls"], "object_id"].to_numpy()[:2]
    keys = ("tok_flux_g", "tok_image")
    plain, _ = tokenize(loaded, ds, ids, keys)
    same, _ = tokenize(loaded, ds, ids, keys, view=0)
    turned, _ = tokenize(loaded, ds, ids, keys, view=3)
    assert torch.equal(plain["tok_image"], same["tok_image"])
    assert torch.equal(plain["tok_flux_g"], turned["tok_flux_g"])
    assert not torch.equal(plain["tok_image"], turned["tok_image"])
    mods = load_modalities(ds, ids, ("tok_image",))
    mods["tok_image"][0].flux = dihedral(mods["tok_image"][0].flux, 3).contiguous()
    assert torch.equal(loaded.codecs.encode(mods)["tok_image"], turned["tok_image"])
