"""From-scratch baselines on the probes' splits, so the table says whether the foundation model helps.

* gradient-boosted trees (sklearn ``HistGradientBoosting``) on photometry: every property
  and morphology;
* a small CNN on the 96x96 LS cutouts, trained from scratch: galaxy properties + morphology
  (one network, two heads, one summed loss);
* a 1-D CNN on binned DESI spectra: galaxy and star properties.

Objects, splits (:mod:`engine.tasks.splits`) and the validation set are the same as the
probes'. Baselines do not depend on the model, so their results are cached per dataset
under ``<index root>/<dataset>/baselines/`` and reused by every evaluation.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn

from engine.data import schema
from engine.data.store import open_dataset
from engine.paths import results_dir
from engine.tasks import arrays, metrics
from engine.tasks.augment import PixelViews, dihedral, mean_class_probabilities, mean_mask_probabilities
from engine.tasks.fitting import FitConfig, fit, masked_mse, predict
from engine.tasks.probes import (
    DEFAULT_EPOCHS,
    DEFAULT_MAX_OBJECTS,
    GALAXY_TARGETS,
    MORPHOLOGY_TARGET,
    PROPERTY_EPOCH_FACTOR,
    SEGMENTATION_EPOCHS,
    STAR_TARGETS,
    segmentation_subset,
    select_objects,
)
from engine.tasks.splits import is_held_out, split_rows
from engine.tasks.view_average import VIEW_AVERAGING_VERSION, view_averaged_morphology

N_CLASSES = len(schema.MORPHOLOGY_CLASSES)


def baselines_dir(dataset) -> Path:
    return results_dir(dataset.name, "baselines")


# --- networks ---------------------------------------------------------------------------


def _conv_block(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1), nn.BatchNorm2d(c_out), nn.GELU(), nn.MaxPool2d(2))


class ImageCNN(nn.Module):
    """4 conv blocks (96 -> 6 px) + global average pool; a regression head and a class head."""

    def __init__(self, n_targets: int, n_classes: int, in_ch: int = 4, width: int = 16):
        super().__init__()
        self.body = nn.Sequential(
            _conv_block(in_ch, width), _conv_block(width, 2 * width), _conv_block(2 * width, 4 * width),
            _conv_block(4 * width, 4 * width), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        )
        self.reg = nn.Sequential(nn.Linear(4 * width, 64), nn.GELU(), nn.Linear(64, n_targets))
        self.cls = nn.Sequential(nn.Linear(4 * width, 64), nn.GELU(), nn.Linear(64, n_classes))
        self.n_targets = n_targets

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.body(x)
        return torch.cat([self.reg(h), self.cls(h)], dim=1)


class SpectrumCNN(nn.Module):
    """1-D CNN: 5 strided conv blocks + global average pool + MLP regressor."""

    def __init__(self, n_targets: int, in_ch: int = 2, width: int = 16):
        super().__init__()
        layers, c = [], in_ch
        for w in (width, width, 2 * width, 2 * width, 4 * width):
            layers += [nn.Conv1d(c, w, 7, stride=2, padding=3), nn.BatchNorm1d(w), nn.GELU()]
            c = w
        self.body = nn.Sequential(*layers, nn.AdaptiveAvgPool1d(1), nn.Flatten())
        self.head = nn.Sequential(nn.Linear(c, 64), nn.GELU(), nn.Linear(64, n_targets))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


def _joint_loss(n_targets: int):
    def loss(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        reg = masked_mse(out[:, :n_targets], y[:, :n_targets])
        label = y[:, n_targets]
        ok = label >= 0
        cls = nn.functional.cross_entropy(out[ok, n_targets:], label[ok].long()) if ok.any() else out.sum() * 0
        return reg + cls
    return loss


# --- shared helpers --------------------------------------------------------------------


def _standardise(y: np.ndarray, fit_r: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    mean = np.nanmean(y[fit_r], axis=0)
    std = np.nanstd(y[fit_r], axis=0)
    std = np.where(np.isfinite(std) & (std > 0), std, 1.0)
    mean = np.where(np.isfinite(mean), mean, 0.0)
    return ((y - mean) / std).astype(np.float32), mean, std


def _score(method: str, ids, targets, true, pred, frames, results):
    for j, t in enumerate(targets):
        ok = np.isfinite(true[:, j])
        if ok.sum() < 2:
            continue
        res = {"r2": metrics.r2_score(true[ok, j], pred[ok, j]), "rmse": metrics.rmse(true[ok, j], pred[ok, j]),
               "n_test": int(ok.sum())}
        if t == "truth_z":
            res["nmad"] = metrics.nmad_dz(true[ok, j], pred[ok, j])
        results.setdefault(method, {})[t] = res
        frames.append(pd.DataFrame({"object_id": ids[ok], "target": t, "true": true[ok, j], "pred": pred[ok, j], "method": method}))


def _morph_score(method, ids, true, pred, frames, results):
    results.setdefault(method, {})[MORPHOLOGY_TARGET] = {
        "accuracy": metrics.accuracy(true, pred), "n_test": len(true),
        "confusion": metrics.confusion_matrix(true, pred, N_CLASSES).tolist(),
    }
    frames.append(pd.DataFrame({"object_id": ids, "target": MORPHOLOGY_TARGET, "true": true.astype(float),
                                "pred": pred.astype(float), "method": method}))


def _labels(cat: pd.DataFrame, ids: np.ndarray, cols) -> np.ndarray:
    rows = cat.loc[ids]
    return np.stack([rows[c].to_numpy(dtype=float) if c in rows.columns else np.full(len(ids), np.nan) for c in cols], 1)


# --- the three baselines ---------------------------------------------------------------


def _informative_columns(x: np.ndarray) -> np.ndarray:
    """Feature columns with at least two distinct finite values (sklearn's binning needs them)."""
    return np.array([len(np.unique(c[np.isfinite(c)])) > 1 for c in x.T], dtype=bool)


def trees_on_photometry(cat, ids, seed, frames, results) -> None:
    from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor

    kinds = cat.loc[ids, "kind"].astype(str).to_numpy()
    x_all = arrays.photometry_features(cat.loc[ids])
    for kind, targets in (("galaxy", GALAXY_TARGETS), ("star", STAR_TARGETS)):
        sel = kinds == kind
        ids_k, x = ids[sel], x_all[sel]
        y = _labels(cat, ids_k, targets)
        held = is_held_out(ids_k, seed)
        if held.sum() < 2 or (~held).sum() < 4:
            continue
        pred = np.full((held.sum(), len(targets)), np.nan)
        for j in range(len(targets)):
            ok = ~held & np.isfinite(y[:, j])
            if ok.sum() < 4:
                continue
            cols = _informative_columns(x[ok])
            model = HistGradientBoostingRegressor(max_iter=300, learning_rate=0.05, early_stopping=ok.sum() >= 200,
                                                  random_state=seed)
            pred[:, j] = model.fit(x[ok][:, cols], y[ok, j]).predict(x[held][:, cols])
        _score("trees (photometry)", ids_k[held], targets, y[held], pred, frames, results)
    if MORPHOLOGY_TARGET in cat.columns:
        label = _labels(cat, ids, [MORPHOLOGY_TARGET])[:, 0]
        ok = np.isfinite(label) & (label >= 0)
        held = is_held_out(ids, seed)
        tr, te = ok & ~held, ok & held
        if tr.sum() >= 4 and te.sum() >= 2 and len(np.unique(label[tr])) > 1:
            cols = _informative_columns(x_all[tr])
            smallest_class = int(np.unique(label[tr], return_counts=True)[1].min())
            clf = HistGradientBoostingClassifier(max_iter=300, learning_rate=0.05, early_stopping=smallest_class >= 5,
                                                 random_state=seed)
            pred = clf.fit(x_all[tr][:, cols], label[tr].astype(int)).predict(x_all[te][:, cols])
            _morph_score("trees (photometry)", ids[te], label[te].astype(int), pred, frames, results)


def cnn_on_images(dataset, cat, ids, seed, config, frames, results, augment: bool = False,
                  training: dict | None = None, views_averaged: dict | None = None) -> nn.Module | None:
    """The image CNN (galaxy properties + morphology) trained and scored; returns the trained net
    (None where there is nothing to train on), e.g. for scoring it on turned cutouts. ``training``
    receives its epochs run and best epoch; ``views_averaged`` its morphology scored with the class
    probabilities averaged over the eight turned cutouts of each held-out galaxy."""
    kinds = cat.loc[ids, "kind"].astype(str).to_numpy()
    has = cat.loc[ids, schema.source("image_ls").flag].to_numpy(bool) if "has_image_ls" in cat.columns else np.ones(len(ids), bool)
    ids_k = ids[(kinds == "galaxy") & has]
    if len(ids_k) < 8 or not dataset.has_source("image_ls"):
        return None
    cols = [*GALAXY_TARGETS, MORPHOLOGY_TARGET]
    y = _labels(cat, ids_k, cols)
    y[:, -1] = np.where(np.isfinite(y[:, -1]), y[:, -1], -1)
    split = split_rows(ids_k, seed)
    if split is None:
        return None
    fit_r, val_r, test_r = split
    yz, mean, std = _standardise(y[:, :-1], fit_r)
    target = torch.from_numpy(np.concatenate([yz, y[:, -1:].astype(np.float32)], 1))
    x = torch.from_numpy(arrays.images(dataset, ids_k))
    net = ImageCNN(len(GALAXY_TARGETS), N_CLASSES)
    views = PixelViews(x[fit_r], target[fit_r], turn_target=False) if augment else None
    history = fit(net, (x[fit_r],), target[fit_r], (x[val_r],), target[val_r], _joint_loss(len(GALAXY_TARGETS)),
                  config, "image CNN", views=views)
    _record(training, "CNN (image)", history)
    out = predict(net, (x[test_r],)).numpy()
    pred = out[:, : len(GALAXY_TARGETS)] * std + mean
    _score("CNN (image)", ids_k[test_r], GALAXY_TARGETS, y[test_r, :-1], pred, frames, results)
    lab = y[test_r, -1]
    ok = lab >= 0
    if ok.sum() >= 2:
        _morph_score("CNN (image)", ids_k[test_r][ok], lab[ok].astype(int), out[ok, len(GALAXY_TARGETS):].argmax(1), frames, results)
        if views_averaged is not None:
            held = x[test_r][torch.from_numpy(ok)]
            prob = mean_class_probabilities(
                lambda v: predict(net, (dihedral(held, v).contiguous(),))[:, len(GALAXY_TARGETS):])
            views_averaged["CNN (image)"] = view_averaged_morphology(
                ids_k[test_r][ok], lab[ok].astype(int), prob.argmax(1).numpy(), results["CNN (image)"][MORPHOLOGY_TARGET])
    return net


def cnn_on_spectra(dataset, cat, ids, seed, config, frames, results, training: dict | None = None) -> None:
    if not dataset.has_source("spectrum_desi"):
        return
    has = cat.loc[ids, "has_spectrum_desi"].to_numpy(bool) if "has_spectrum_desi" in cat.columns else np.ones(len(ids), bool)
    ids_k = ids[has]
    if len(ids_k) < 8:
        return
    targets = (*GALAXY_TARGETS, *STAR_TARGETS)
    y = _labels(cat, ids_k, targets)
    kinds = cat.loc[ids_k, "kind"].astype(str).to_numpy()
    y[kinds != "galaxy", : len(GALAXY_TARGETS)] = np.nan
    y[kinds != "star", len(GALAXY_TARGETS):] = np.nan
    split = split_rows(ids_k, seed)
    if split is None:
        return
    fit_r, val_r, test_r = split
    yz, mean, std = _standardise(y, fit_r)
    x = torch.from_numpy(arrays.spectra(dataset, ids_k)[3])
    net = SpectrumCNN(len(targets))
    history = fit(net, (x[fit_r],), torch.from_numpy(yz[fit_r]), (x[val_r],), torch.from_numpy(yz[val_r]), masked_mse,
                  config, "spectrum 1-D CNN")
    _record(training, "1-D CNN (spectrum)", history)
    pred = predict(net, (x[test_r],)).numpy() * std + mean
    _score("1-D CNN (spectrum)", ids_k[test_r], targets, y[test_r], pred, frames, results)


def unet_on_images(dataset, ids, seed, config, results, max_galaxies: int | None, augment: bool = False,
                   training: dict | None = None, views_averaged: dict | None = None) -> dict | None:
    """U-Net from scratch on the same galaxies (and the same cap) as the token segmentation head;
    ``views_averaged`` receives its scores with each held-out galaxy's masks averaged over the eight
    turned cutouts (each map turned back before averaging)."""
    from engine.tasks import segmentation

    ids_k = segmentation_subset(dataset, ids, seed, max_galaxies)
    split = split_rows(ids_k, seed)
    if split is None:
        return None
    fit_r, val_r, test_r = split
    x = torch.from_numpy(arrays.images(dataset, ids_k))
    masks = torch.from_numpy(arrays.segmaps(dataset, ids_k))
    net = segmentation.UNet(len(segmentation.CLASSES))
    views = PixelViews(x[fit_r], masks[fit_r], turn_target=True) if augment else None
    history = fit(net, (x[fit_r],), masks[fit_r], (x[val_r],), masks[val_r], segmentation.seg_loss, config,
                  "U-Net", views=views)
    _record(training, "U-Net (image)", history)
    pred = segmentation.predict_masks(net, (x[test_r],))
    true = masks[test_r].numpy()
    results["U-Net (image)"] = {**segmentation.scores(ids_k[test_r], true, pred), "n_train": len(fit_r)}
    if views_averaged is not None:
        held = x[test_r].float()
        prob = mean_mask_probabilities(lambda v: predict(net, (dihedral(held, v).contiguous(),), 64))
        views_averaged["U-Net (image)"] = {**segmentation.scores(ids_k[test_r], true, prob.numpy() > segmentation.THRESHOLD),
                                           "n_train": len(fit_r)}
    return {"object_id": ids_k[test_r][:6], "image": x[test_r][:6].numpy(), "true": true[:6], "pred": pred[:6]}


def _record(training: dict | None, method: str, history: dict) -> None:
    """Epochs run and the best (kept) epoch, 0-based as `fit` counts, so one can tell whether a net had converged."""
    if training is not None:
        training[method] = {"epochs": history["epochs"], "best_epoch": history["best_epoch"]}


def run_baselines(
    dataset_dir, out_dir=None, *, seed: int = 0, epochs: int = DEFAULT_EPOCHS, max_objects: int | None = DEFAULT_MAX_OBJECTS,
    progress: bool = True, reuse: bool = True, max_seg_galaxies: int | None = 1500,
    seg_epochs: int = SEGMENTATION_EPOCHS, spectrum_epochs: int | None = None, augment: bool = True,
) -> dict:
    """Train and score the three baselines; results JSON + held-out predictions cached per dataset.

    With ``augment`` the image CNN and the U-Net train on the eight dihedral views of their training
    galaxies, with the epochs rule of the probes' image heads (:func:`~engine.tasks.augment.view_epochs`, applied by ``fit``), as those heads do.

    ``epochs`` trains the CNNs, by default the probes' (:data:`DEFAULT_EPOCHS`); ``seg_epochs`` trains the
    U-Net, by default the segmentation head's. Pass the heads' numbers when they differ, so both sides get
    the same budget. The 1-D CNN predicts only properties, so it trains ``spectrum_epochs``, by default
    as long as the property probes (:data:`~engine.tasks.probes.PROPERTY_EPOCH_FACTOR` x ``epochs``).
    """
    spectrum_epochs = spectrum_epochs or PROPERTY_EPOCH_FACTOR * epochs
    dataset = open_dataset(dataset_dir)
    out = Path(out_dir) if out_dir is not None else baselines_dir(dataset)
    settings = {"dataset_hash": dataset.info.get("hash"), "seed": seed, "epochs": epochs, "max_objects": max_objects,
                "max_seg_galaxies": max_seg_galaxies, "seg_epochs": seg_epochs, "spectrum_epochs": spectrum_epochs,
                "augment": bool(augment), "views_averaged": VIEW_AVERAGING_VERSION if augment else 0}
    res_path = out / "baselines.json"
    if reuse and res_path.is_file():
        cached = json.loads(res_path.read_text())
        if cached.get("settings") == settings and (out / "heldout.parquet").is_file():
            return cached
    out.mkdir(parents=True, exist_ok=True)
    with _exclusive(out / "baselines.lock"):  # a second caller waits for the first, then reuses its results
        if reuse and res_path.is_file():
            cached = json.loads(res_path.read_text())
            if cached.get("settings") == settings and (out / "heldout.parquet").is_file():
                return cached
        return _run_baselines(dataset, out, settings, seed=seed, epochs=epochs, max_objects=max_objects,
                              progress=progress, max_seg_galaxies=max_seg_galaxies, seg_epochs=seg_epochs,
                              spectrum_epochs=spectrum_epochs, augment=augment)


@contextlib.contextmanager
def _exclusive(lock: Path, poll_s: float = 5.0):
    """A lock file holding the owner's pid; a stale lock (owner dead) is taken over."""
    while True:
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            os.write(fd, str(os.getpid()).encode())
            os.close(fd)
            break
        except FileExistsError:
            try:
                owner = int(lock.read_text() or 0)
                os.kill(owner, 0)
            except (ValueError, ProcessLookupError, FileNotFoundError):
                lock.unlink(missing_ok=True)
                continue
            except PermissionError:
                pass
            time.sleep(poll_s)
    try:
        yield
    finally:
        lock.unlink(missing_ok=True)


def _run_baselines(dataset, out: Path, settings: dict, *, seed, epochs, max_objects, progress, max_seg_galaxies,
                   seg_epochs, spectrum_epochs, augment) -> dict:
    res_path = out / "baselines.json"
    cat = dataset.catalog.set_index("object_id", drop=False)
    ids = select_objects(dataset.catalog, max_objects, seed)
    config = FitConfig(epochs=epochs, batch_size=64, lr=2e-3, seed=seed, progress=progress)
    t0 = time.time()
    frames: list[pd.DataFrame] = []
    methods: dict = {}
    training: dict = {}
    averaged: dict = {"morphology": {}, "segmentation": {}} if augment else {}
    trees_on_photometry(cat, ids, seed, frames, methods)
    cnn_on_images(dataset, cat, ids, seed, config, frames, methods, augment, training, averaged.get("morphology"))
    cnn_on_spectra(dataset, cat, ids, seed, dataclasses.replace(config, epochs=spectrum_epochs), frames, methods, training)
    seg: dict = {}
    seg_config = FitConfig(epochs=seg_epochs, batch_size=32, lr=2e-3, seed=seed, progress=progress)
    examples = unet_on_images(dataset, ids, seed, seg_config, seg, max_seg_galaxies, augment, training,
                              averaged.get("segmentation"))
    results = {"settings": settings, "dataset": dataset.name, "methods": methods, "segmentation": seg,
               "views_averaged": averaged, "training": training, "seconds": round(time.time() - t0, 1)}
    out.mkdir(parents=True, exist_ok=True)
    if examples is not None:
        tmp = out / f"segmentation_examples.tmp{os.getpid()}.npz"
        np.savez_compressed(tmp, **examples)
        os.replace(tmp, out / "segmentation_examples.npz")
    if frames:
        tmp = out / f"heldout.parquet.tmp{os.getpid()}"
        pd.concat(frames, ignore_index=True).to_parquet(tmp)
        os.replace(tmp, out / "heldout.parquet")
    tmp = out / f"baselines.json.tmp{os.getpid()}"
    tmp.write_text(json.dumps(results, indent=2, default=float))
    os.replace(tmp, res_path)
    return results
