"""Property and morphology probes on the frozen encoder (``aion-engine train probes``).

Recipe (AION-1 paper): for each input combination (photometry; + image; + spectrum) the
frozen encoder's token embeddings are computed once and cached (:mod:`engine.tasks.features`);
then small heads train in seconds:

* galaxies: redshift, log stellar mass, sSFR — attentive pooling + 2-layer MLP per target;
* stars: Teff, log g, [Fe/H] — the same;
* morphology over the 10 Galaxy10 classes — masked mean pooling + 2-layer MLP.

Train and held-out objects come from :mod:`engine.tasks.splits` (hash of object id and seed);
a further 10 % of train is a validation set that picks the best epoch. Heads are saved as
safetensors + JSON under ``<results_dir>/probes/heads/<combo>/``; metrics go to
``probes.json`` and held-out predictions to ``heldout.parquet`` (for the evaluation plots).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import time
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn

from engine.data import schema
from engine.data.store import open_dataset
from engine.errors import DatasetError
from engine.paths import results_dir
from engine.tasks import arrays, metrics, segmentation
from engine.tasks.augment import N_VIEWS, TokenViews
from engine.tasks.features import (
    FEATURE_VERSION,
    INPUT_COMBOS,
    TokenCache,
    build_token_cache,
    cache_is_current,
    combo_keys,
    tokenize_many,
)
from engine.tasks.fitting import FitConfig, fit, load_head, masked_mse, predict, save_head
from engine.tasks.heads import (
    MorphologyProbe,
    PropertyProbe,
    RadialMorphologyProbe,
    SegmentationHead,
    SpatialMorphologyProbe,
)
from engine.tasks.splits import split_rows, unit_hash

GALAXY_TARGETS: tuple[str, ...] = ("truth_z", "truth_log_mstar", "truth_ssfr")
STAR_TARGETS: tuple[str, ...] = ("truth_teff", "truth_logg", "truth_feh")
MORPHOLOGY_TARGET = "truth_morphology"
#: probe group -> (object kind, targets)
PROPERTY_GROUPS: dict[str, tuple[str, tuple[str, ...]]] = {
    "galaxy": ("galaxy", GALAXY_TARGETS),
    "star": ("star", STAR_TARGETS),
}
BEST_COMBO = "photometry+image+spectrum"
#: the segmentation head reads the image tokens of this combination's encoder pass
SEGMENTATION_COMBO = "photometry+image"
DEFAULT_EPOCHS = 30
#: Version of the heads' architectures; heads saved under another one count as missing (retrained).
#: 2: the morphology head reads the radial profile of the image tokens (``RadialMorphologyProbe``);
#: 3: and the amplitudes of their m = 1, 2 angular modes per annulus;
#: 4: property probes pool each modality group (photometry, image, spectrum) separately.
HEADS_VERSION = 4
#: Version of the morphology head that reads the image, kept apart from :data:`HEADS_VERSION` so that
#: changing it retrains that head alone (the segmentation head costs ~35 min on 2 cores):
#: 1: radial profile + angular modes (``RadialMorphologyProbe``);
#: 2: a conv stack over the standardised token grid (``SpatialMorphologyProbe``, session 17) when the head
#: trains on the eight dihedral views; without them (``augment=False``, what ``prepare`` trains) the radial
#: head stays, which needs no views to be blind to the position angle.
IMAGE_MORPHOLOGY_HEAD = 2
#: Version of the segmentation head, apart from :data:`HEADS_VERSION` for the same reason:
#: 1: a LayerNorm per image token before the conv upsampler;
#: 2: each feature channel standardised on the training galaxies instead (session 18), as the
#: morphology head's conv stack needs.
SEGMENTATION_HEAD = 2
#: learning rate of the morphology heads that read the image
MORPHOLOGY_LR = 1e-3
#: Property probes train this many times the probes' epochs. Measured on the default mock's
#: photometry+image+spectrum galaxies: at 30 epochs the best validation epoch was the 29th (still
#: improving); at 90, log M* and log sSFR gained 0.06-0.13 in R² (``docs/tasks.md``).
PROPERTY_EPOCH_FACTOR = 3
#: Channels of the sinusoidal position code the property probes append to each token
#: (:func:`engine.tasks.heads.position_code`).
POSITION_CHANNELS = 32
#: labelled objects used by default (a deterministic subset): bounds the one-off encoding on a CPU
DEFAULT_MAX_OBJECTS = 3000


def probes_dir(dataset, model) -> Path:
    """``<results_dir>/probes``: token caches, heads, metrics."""
    return results_dir(dataset.name, model) / "probes"


#: shares of a capped subset: morphology labels are rare in the mock (~20 % of galaxies) and stars
#: are 10 % of objects, so a plain random cap would leave too few of either to train and score.
SUBSET_SHARES = {"morphology": 0.5, "star": 0.15}


def select_objects(catalog: pd.DataFrame, max_objects: int | None, seed: int = 0) -> np.ndarray:
    """Galaxies and stars with any truth label; capped to a deterministic stratified subset.

    Under a cap, morphology-labelled galaxies fill up to 50 % and stars up to 15 % of it, other
    galaxies the rest (each group in hash order, so the choice is stable). Sorted ids.
    """
    kinds = catalog["kind"].astype(str).to_numpy()
    truth_cols = [c for c in (*GALAXY_TARGETS, *STAR_TARGETS) if c in catalog.columns]
    if not truth_cols:
        raise DatasetError(f"catalog has none of the truth columns {list(GALAXY_TARGETS + STAR_TARGETS)}; probes need labels")
    labelled = np.isfinite(catalog[truth_cols].to_numpy(dtype=float)).any(axis=1)
    use = np.isin(kinds, ("galaxy", "star")) & labelled
    ids = catalog["object_id"].to_numpy()
    if max_objects is None or use.sum() <= max_objects:
        return np.sort(ids[use])
    morph = catalog[MORPHOLOGY_TARGET].to_numpy(dtype=float) if MORPHOLOGY_TARGET in catalog.columns else np.full(len(ids), -1.0)
    groups = {"morphology": use & (kinds == "galaxy") & (morph >= 0), "star": use & (kinds == "star")}
    groups["rest"] = use & ~groups["morphology"] & ~groups["star"]
    chosen = []
    for name in ("morphology", "star"):
        g = ids[groups[name]]
        chosen.append(g[np.argsort(unit_hash(g, seed + 1), kind="stable")][: int(SUBSET_SHARES[name] * max_objects)])
    left = max_objects - sum(len(c) for c in chosen)
    rest = ids[groups["rest"]]
    chosen.append(rest[np.argsort(unit_hash(rest, seed + 1), kind="stable")][:left])
    return np.sort(np.concatenate(chosen))


def _tensor(cache: TokenCache, rows: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    order = np.argsort(rows)
    emb = np.empty((len(rows), *cache.embeddings.shape[1:]), dtype=np.float16)
    emb[order] = cache.embeddings[rows[order]]
    msk = np.asarray(cache.mask[rows])
    return torch.from_numpy(emb), torch.from_numpy(msk)


def _labels(catalog: pd.DataFrame, ids: np.ndarray, columns) -> np.ndarray:
    rows = catalog.set_index("object_id").loc[ids]
    return np.stack([rows[c].to_numpy(dtype=np.float64) if c in rows.columns else np.full(len(ids), np.nan) for c in columns], 1)


def _fit_property_group(cache, catalog, ids, kind, targets, seed, config, desc):
    """Train one PropertyProbe for ``targets`` on objects of ``kind``; return (module, meta, heldout frame)."""
    kinds = catalog.set_index("object_id").loc[ids, "kind"].astype(str).to_numpy()
    y = _labels(catalog, ids, targets)
    use = (kinds == kind) & np.isfinite(y).any(axis=1)
    ids_k, y = ids[use], y[use]
    split = split_rows(ids_k, seed)
    if split is None:
        return None
    fit_r, val_r, test_r = split
    mean = np.nanmean(y[fit_r], axis=0)
    std = np.nanstd(y[fit_r], axis=0)
    std = np.where(std > 0, std, 1.0)
    yz = torch.from_numpy(((y - mean) / std).astype(np.float32))
    cache_rows = cache.rows(ids_k)
    tok, msk = _tensor(cache, cache_rows)
    groups = cache.layout.groups()
    module = PropertyProbe(tok.shape[-1], len(targets), groups=groups, position_channels=POSITION_CHANNELS)
    history = fit(module, (tok[fit_r], msk[fit_r]), yz[fit_r], (tok[val_r], msk[val_r]), yz[val_r],
                  masked_mse, config, desc=desc)
    pred = predict(module, (tok[test_r], msk[test_r])).numpy() * std + mean
    true = y[test_r]
    scores = {}
    frames = []
    for j, t in enumerate(targets):
        scores[t] = {"r2": metrics.r2_score(true[:, j], pred[:, j]), "rmse": metrics.rmse(true[:, j], pred[:, j]),
                     "n_train": int(np.isfinite(y[fit_r, j]).sum()), "n_test": int(np.isfinite(true[:, j]).sum())}
        if t == "truth_z":
            scores[t]["nmad"] = metrics.nmad_dz(true[:, j], pred[:, j])
        frames.append(pd.DataFrame({"object_id": ids_k[test_r], "target": t, "true": true[:, j], "pred": pred[:, j]}))
    meta = {"head": "property", "kind": kind, "targets": list(targets), "dim": int(tok.shape[-1]), "n_targets": len(targets),
            "hidden": 256, "num_heads": 4, "groups": [list(g) for g in groups], "position_channels": POSITION_CHANNELS,
            "mean": mean.tolist(), "std": std.tolist(), "keys": list(cache.layout.keys),
            "metrics": scores, "best_epoch": history["best_epoch"], "epochs": history["epochs"], "seed": seed}
    return module, meta, pd.concat(frames, ignore_index=True)


def morphology_ids(catalog: pd.DataFrame, ids: np.ndarray) -> np.ndarray:
    """Galaxies among ``ids`` with a morphology label."""
    if MORPHOLOGY_TARGET not in catalog.columns:
        return ids[:0]
    label = _labels(catalog, ids, [MORPHOLOGY_TARGET])[:, 0]
    return ids[np.isfinite(label) & (label >= 0)]


def _token_views(views: list[TokenCache] | None, ids_fit: np.ndarray, tok: torch.Tensor, extra, target, **kw):
    """The fit examples in all dihedral views (:class:`TokenViews`), or None without view caches."""
    if views is None:
        return None
    return TokenViews(tok, [v.embeddings for v in views], views[0].rows(ids_fit), extra, target, **kw)


def _fit_morphology(cache, catalog, ids, seed, config, desc, views: list[TokenCache] | None = None):
    ids_k = morphology_ids(catalog, ids)
    if len(ids_k) == 0:
        return None
    y = _labels(catalog, ids_k, [MORPHOLOGY_TARGET])[:, 0].astype(np.int64)
    split = split_rows(ids_k, seed)
    if split is None:
        return None
    fit_r, val_r, test_r = split
    tok, msk = _tensor(cache, cache.rows(ids_k))
    n_classes = len(schema.MORPHOLOGY_CLASSES)
    shape = {"dim": int(tok.shape[-1]), "n_classes": n_classes}
    if "tok_image" in cache.layout.keys:
        sl = cache.layout.slice_of("tok_image")
        if views is not None:  # the pattern of the image tokens on their grid, turned eight ways
            shape |= {"pooling": "spatial", "image_slice": [int(sl.start), int(sl.stop)], "grid": 24, "width": 64,
                      "hidden": 256, "dropout": 0.3}
        else:  # one view: the radial profile is blind to the position angle by construction
            shape |= {"pooling": "radial", "image_slice": [int(sl.start), int(sl.stop)], "hidden": 512, "dropout": 0.5,
                      "harmonics": [1, 2], "proj": 32}
        config = dataclasses.replace(config, lr=MORPHOLOGY_LR)
    else:
        shape |= {"pooling": "mean", "hidden": 256}
    module = build_head({"head": "morphology", **shape})
    if isinstance(module, RadialMorphologyProbe | SpatialMorphologyProbe):
        module.standardize_on(tok[fit_r], msk[fit_r])
    yt = torch.from_numpy(y)
    history = fit(module, (tok[fit_r], msk[fit_r]), yt[fit_r], (tok[val_r], msk[val_r]), yt[val_r],
                  nn.functional.cross_entropy, config, desc=desc,
                  views=_token_views(views, ids_k[fit_r], tok[fit_r], [msk[fit_r]], yt[fit_r]))
    prob = predict(module, (tok[test_r], msk[test_r])).softmax(-1).numpy()
    pred = prob.argmax(1)
    cm = metrics.confusion_matrix(y[test_r], pred, n_classes)
    scores = {"accuracy": metrics.accuracy(y[test_r], pred), "n_train": len(fit_r), "n_test": len(test_r),
              "confusion": cm.tolist()}
    meta = {"head": "morphology", **shape, "classes": list(schema.MORPHOLOGY_CLASSES), "keys": list(cache.layout.keys), "metrics": scores,
            "best_epoch": history["best_epoch"], "epochs": history["epochs"], "views": N_VIEWS if views else 1, "seed": seed}
    frame = pd.DataFrame({"object_id": ids_k[test_r], "target": MORPHOLOGY_TARGET, "true": y[test_r].astype(float),
                          "pred": pred.astype(float)})
    return module, meta, frame


def segmentation_ids(dataset, ids: np.ndarray) -> np.ndarray:
    """Galaxies among ``ids`` that have a segmentation map."""
    cat = dataset.catalog.set_index("object_id").loc[ids]
    flag = schema.source("segmap").flag
    if flag not in cat.columns or not dataset.has_source("segmap"):
        return ids[:0]
    return ids[(cat["kind"].astype(str).to_numpy() == "galaxy") & cat[flag].to_numpy(bool)]


def segmentation_subset(dataset, ids: np.ndarray, seed: int, max_galaxies: int | None) -> np.ndarray:
    """The galaxies the segmentation head (and the U-Net) use: those with a map, at most ``max_galaxies``
    (a stable hash-ordered subset)."""
    ids_k = segmentation_ids(dataset, ids)
    if max_galaxies is not None and len(ids_k) > max_galaxies:
        ids_k = np.sort(ids_k[np.argsort(unit_hash(ids_k, seed + 2))[:max_galaxies]])
    return ids_k


def fit_ids(ids_k: np.ndarray, seed: int) -> np.ndarray:
    """The training (not validation, not held-out) objects of ``ids_k`` under the shared split."""
    split = split_rows(ids_k, seed)
    return ids_k[:0] if split is None else ids_k[split[0]]


def _fit_segmentation(cache, dataset, ids, seed, config, desc, max_galaxies: int | None,
                      views: list[TokenCache] | None = None):
    if "tok_image" not in cache.layout.keys:
        return None
    ids_k = segmentation_subset(dataset, ids, seed, max_galaxies)
    split = split_rows(ids_k, seed)
    if split is None:
        return None
    fit_r, val_r, test_r = split
    image = cache.layout.slice_of("tok_image")
    tok, _ = _tensor(cache, cache.rows(ids_k))
    tok = tok[:, image].contiguous()
    masks = torch.from_numpy(arrays.segmaps(dataset, ids_k))
    head = SegmentationHead(tok.shape[-1], len(segmentation.CLASSES), standardize=True)
    head.standardize_on(tok[fit_r])
    history = fit(head, (tok[fit_r],), masks[fit_r], (tok[val_r],), masks[val_r], segmentation.seg_loss, config, desc,
                  views=_token_views(views, ids_k[fit_r], tok[fit_r], [], masks[fit_r], columns=image, turn_target=True))
    pred = segmentation.predict_masks(head, (tok[test_r],))
    true = masks[test_r].numpy()
    scores = {**segmentation.scores(ids_k[test_r], true, pred), "n_train": len(fit_r)}
    meta = {"head": "segmentation", "dim": int(tok.shape[-1]), "classes": list(segmentation.CLASSES),
            "standardize": True, "keys": list(cache.layout.keys), "metrics": scores,
            "best_epoch": history["best_epoch"], "epochs": history["epochs"], "views": N_VIEWS if views else 1, "seed": seed}
    examples = {"object_id": ids_k[test_r][:6], "true": true[:6], "pred": pred[:6]}
    return head, meta, examples


def _fingerprint(inputs: dict, head: str, config: FitConfig) -> str:
    """What a head is trained from: its inputs (model, dataset, objects, combination, views), its name and
    its training settings. Equal fingerprints mean :func:`_head` may reuse the saved head."""
    fields = {**inputs, "head": head, **{k: v for k, v in dataclasses.asdict(config).items() if k != "progress"}}
    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:16]


def _head(stem: Path, fingerprint: str, combo: str, model_hash: str, reuse: bool, train):
    """(meta, held-out frame or, for segmentation, the examples file) of the head at ``stem``: reused when
    a finished head with this fingerprint is saved there, else ``train()``-ed and saved; None when
    ``train`` has nothing to train on. The old JSON is removed before anything of the new head is
    written and the new JSON is written last, so a JSON carrying the fingerprint means its weights and
    held-out predictions (or examples) are complete and belong to it, even after a kill mid-write."""
    examples = stem.name == "segmentation"  # keeps its example masks where the others keep held-out predictions
    extra = stem.with_name(stem.name + (".examples.npz" if examples else ".heldout.parquet"))
    info = stem.with_suffix(".json")
    if reuse and info.is_file() and stem.with_suffix(".safetensors").is_file() and extra.is_file():
        try:
            meta = json.loads(info.read_text())
        except ValueError:
            meta = {}
        if meta.get("fingerprint") == fingerprint:
            return meta, extra if examples else pd.read_parquet(extra)
    fitted = train()
    if fitted is None:
        return None
    module, meta, frame = fitted
    _stamp(meta, combo, model_hash)
    meta["fingerprint"] = fingerprint
    stem.parent.mkdir(parents=True, exist_ok=True)
    info.unlink(missing_ok=True)
    tmp = extra.with_name(f"{extra.name}.tmp{os.getpid()}")
    if examples:
        with open(tmp, "wb") as f:
            np.savez_compressed(f, **frame)
    else:
        frame.to_parquet(tmp)
    os.replace(tmp, extra)
    save_head(stem, module, meta)
    return meta, extra if examples else frame


def _stamp(meta: dict, combo: str, model_hash: str) -> None:
    """What :func:`load_heads` checks before applying a saved head: its inputs, encoder and versions."""
    meta.update(combo=combo, model_hash=model_hash, features=FEATURE_VERSION, heads=HEADS_VERSION)


def build_head(meta: dict) -> nn.Module:
    """Rebuild a saved head from its JSON config (used by :func:`engine.tasks.fitting.load_head`)."""
    if meta["head"] == "property":
        groups = meta.get("groups")
        return PropertyProbe(meta["dim"], meta["n_targets"], meta["hidden"], meta["num_heads"],
                             tuple(map(tuple, groups)) if groups is not None else None,
                             meta.get("position_channels", 0))
    if meta["head"] == "morphology" and meta.get("pooling", "mean") == "radial":
        return RadialMorphologyProbe(meta["dim"], meta["n_classes"], tuple(meta["image_slice"]), meta["hidden"],
                                     meta["dropout"], tuple(meta["harmonics"]), meta["proj"])
    if meta["head"] == "morphology" and meta.get("pooling") == "spatial":
        return SpatialMorphologyProbe(meta["dim"], meta["n_classes"], tuple(meta["image_slice"]), meta["grid"],
                                      meta["width"], meta["hidden"], meta["dropout"])
    if meta["head"] == "morphology":
        return MorphologyProbe(meta["dim"], meta["n_classes"], meta["hidden"])
    if meta["head"] == "segmentation":
        return SegmentationHead(meta["dim"], len(meta["classes"]), standardize=meta.get("standardize", False))
    raise ValueError(f"unknown head type {meta['head']!r}; accepted: property, morphology, segmentation")


def head_stem(out_dir: Path, combo: str, name: str) -> Path:
    return Path(out_dir) / "heads" / combo / name


def default_seg_epochs(epochs: int) -> int:
    """The segmentation head's epochs when not given: twice the probes' (a dense 96x96 target needs more
    passes over a few hundred galaxies than a scalar does). Measured on 1000 galaxies of the default mock
    (719 fit, 200 held out): at 15 epochs the head was still improving on its last epoch (arms IoU 0.313);
    at 60 it reaches 0.387 (best epoch 50), and the U-Net given the same 60 reaches 0.542 (best epoch 53)."""
    return max(1, 2 * epochs)


#: epochs of the segmentation head *and* of the U-Net it is compared with (one number, so the comparison is fair)
SEGMENTATION_EPOCHS = default_seg_epochs(DEFAULT_EPOCHS)


def train_probes(
    dataset_dir,
    model_dir,
    out_dir=None,
    *,
    seed: int = 0,
    epochs: int = DEFAULT_EPOCHS,
    progress: bool = True,
    max_objects: int | None = DEFAULT_MAX_OBJECTS,
    combos: tuple[str, ...] | None = None,
    batch_size: int = 64,
    max_seg_galaxies: int | None = 1500,
    seg_epochs: int | None = None,
    property_epochs: int | None = None,
    segmentation_only: tuple[str, ...] = (),
    augment: bool = True,
    loaded=None,
    reuse: bool = True,
) -> dict:
    """Cache frozen-encoder tokens per input combination, train every probe, save heads + metrics.

    Each head is saved with a fingerprint of what it was trained from (model, dataset, objects, inputs,
    settings, versions) and its held-out predictions; with ``reuse`` a head whose fingerprint matches is
    taken as it is instead of trained again, so a run killed after some heads resumes from there and a
    run that changes one head's settings retrains only that head.

    With ``augment`` the heads that read the image (morphology, segmentation) train on all eight
    dihedral views of their training galaxies (:mod:`engine.tasks.augment`): the turned cutouts are
    encoded once more each into ``tokens/<combo>.views/view<v>/`` (7 extra encodings of the training
    galaxies of those two heads).

    For the combinations in ``segmentation_only`` only the segmentation head is trained (what
    ``prepare`` needs of the segmentation combination: the app reads its other heads nowhere).

    Returns the metrics dict also written to ``<out_dir>/probes.json`` (out_dir defaults to
    ``<results_dir(dataset, model)>/probes``). ``max_objects`` caps the labelled objects used
    (a deterministic subset), which bounds the one-off encoding cost on a CPU. The segmentation
    head trains ``seg_epochs`` epochs (default :func:`default_seg_epochs`) on ``max_seg_galaxies``; the
    property probes ``property_epochs`` (default :data:`PROPERTY_EPOCH_FACTOR` x ``epochs``).
    """
    from engine.model.fast import enable_fast_attention
    from engine.model.loading import load_model

    dataset = open_dataset(dataset_dir)
    loaded = loaded if loaded is not None else load_model(model_dir)
    enable_fast_attention(loaded.model)
    out = Path(out_dir) if out_dir is not None else probes_dir(dataset, model_dir)
    catalog = dataset.catalog
    ids = select_objects(catalog, max_objects, seed)
    if len(ids) == 0:
        raise DatasetError(f"{dataset.root}: no labelled galaxies or stars to train probes on")
    config = FitConfig(epochs=epochs, batch_size=batch_size, lr=2e-3, seed=seed, progress=progress)
    property_config = dataclasses.replace(config, epochs=property_epochs or PROPERTY_EPOCH_FACTOR * epochs)
    seg_config = FitConfig(epochs=seg_epochs or default_seg_epochs(epochs), batch_size=32, lr=2e-3, seed=seed,
                           progress=progress)
    t0 = time.time()
    trained_from = {"model_hash": loaded.hash, "dataset_hash": dataset.info.get("hash"), "seed": seed,
                    "objects": hashlib.sha256(np.asarray(ids, dtype=np.int64).tobytes()).hexdigest()[:16],
                    "features": FEATURE_VERSION, "heads": HEADS_VERSION}
    results: dict = {"dataset": dataset.name, "dataset_hash": dataset.info.get("hash"), "model_id": loaded.model_id,
                     "model_hash": loaded.hash, "seed": seed, "epochs": epochs, "max_objects": max_objects,
                     "property_epochs": property_config.epochs, "position_channels": POSITION_CHANNELS,
                     "max_seg_galaxies": max_seg_galaxies, "seg_epochs": seg_config.epochs,
                     "features": FEATURE_VERSION, "heads": HEADS_VERSION,
                     "image_morphology_head": IMAGE_MORPHOLOGY_HEAD, "segmentation_head": SEGMENTATION_HEAD,
                     "segmentation_only": sorted(segmentation_only), "augment": bool(augment),
                     "n_objects": int(len(ids)), "combos": {}}
    heldout_frames = []
    combo_list = combos or tuple(INPUT_COMBOS)
    all_keys = tuple(dict.fromkeys(k for c in combo_list for k in combo_keys(c, loaded.token_keys)))
    stale = [c for c in combo_list if not cache_is_current(loaded, dataset, ids, combo_keys(c, loaded.token_keys),
                                                           out / "tokens" / c)]
    token_ids = tokenize_many(loaded, dataset, ids, all_keys, progress=progress) if stale else None
    for combo in combo_list:
        keys = combo_keys(combo, loaded.token_keys)
        cache = build_token_cache(loaded, dataset, ids, keys, out / "tokens" / combo, progress=progress,
                                  token_ids=token_ids)
        views = _view_caches(loaded, dataset, out, combo, keys, ids, token_ids, seed, max_seg_galaxies,
                             segmentation_only, progress) if augment else None
        combo_res: dict = {"keys": list(keys)}
        inputs = {**trained_from, "combo": combo, "keys": list(keys), "views": views is not None}
        for group, (kind, targets) in PROPERTY_GROUPS.items() if combo not in segmentation_only else ():
            done = _head(head_stem(out, combo, group),
                         _fingerprint({**inputs, "position_channels": POSITION_CHANNELS}, group, property_config),
                         combo, loaded.hash, reuse,
                         partial(_fit_property_group, cache, catalog, ids, kind, targets, seed, property_config,
                                 f"{combo} {group}"))
            if done is None:
                continue
            meta, frame = done
            combo_res.update(meta["metrics"])
            heldout_frames.append(frame.assign(combo=combo))
        done = None if combo in segmentation_only else _head(
            head_stem(out, combo, "morphology"),
            _fingerprint({**inputs, "image_morphology_head": IMAGE_MORPHOLOGY_HEAD}, "morphology", config), combo,
            loaded.hash, reuse,
            partial(_fit_morphology, cache, catalog, ids, seed, config, f"{combo} morphology", views))
        if done is not None:
            meta, frame = done
            combo_res[MORPHOLOGY_TARGET] = meta["metrics"]
            heldout_frames.append(frame.assign(combo=combo))
        if combo == SEGMENTATION_COMBO:
            done = _head(head_stem(out, combo, "segmentation"),
                         _fingerprint({**inputs, "max_seg_galaxies": max_seg_galaxies,
                                       "segmentation_head": SEGMENTATION_HEAD}, "segmentation", seg_config),
                         combo, loaded.hash, reuse,
                         partial(_fit_segmentation, cache, dataset, ids, seed, seg_config, f"{combo} segmentation",
                                 max_seg_galaxies, views))
            if done is not None:
                meta, examples = done
                results["segmentation"] = {"combo": combo, **meta["metrics"]}
                out.mkdir(parents=True, exist_ok=True)
                tmp = out / f"segmentation_examples.tmp{os.getpid()}.npz"
                shutil.copyfile(examples, tmp)
                os.replace(tmp, out / "segmentation_examples.npz")
        results["combos"][combo] = combo_res
    results["seconds"] = round(time.time() - t0, 1)
    out.mkdir(parents=True, exist_ok=True)
    _atomic_write(out / "probes.json", json.dumps(results, indent=2, default=float))
    if heldout_frames:
        tmp = out / f"heldout.parquet.tmp{os.getpid()}"
        pd.concat(heldout_frames, ignore_index=True).to_parquet(tmp)
        os.replace(tmp, out / "heldout.parquet")
    return results


def _view_caches(loaded, dataset, out: Path, combo: str, keys, ids: np.ndarray, token_ids, seed: int,
                 max_seg_galaxies: int | None, segmentation_only, progress: bool) -> list[TokenCache] | None:
    """Token caches of the seven turned views of the training galaxies of ``combo``'s image heads
    (morphology unless segmentation-only; segmentation for :data:`SEGMENTATION_COMBO`); None if the
    combination has no image or those heads have nothing to train on."""
    if "tok_image" not in keys:
        return None
    wanted = []
    if combo not in segmentation_only:
        wanted.append(fit_ids(morphology_ids(dataset.catalog, ids), seed))
    if combo == SEGMENTATION_COMBO:
        wanted.append(fit_ids(segmentation_subset(dataset, ids, seed, max_seg_galaxies), seed))
    view_ids = np.unique(np.concatenate([ids[:0], *wanted]))
    if len(view_ids) == 0:
        return None
    folders = [out / "tokens" / f"{combo}.views" / f"view{v}" for v in range(1, N_VIEWS)]
    stale = [not cache_is_current(loaded, dataset, view_ids, keys, f, v) for v, f in enumerate(folders, 1)]
    sub_ids = None
    if any(stale):  # the codecs of the modalities that do not turn run once, not once per view
        if token_ids is not None:
            rows = pd.Index(ids).get_indexer(view_ids)
            sub_ids = ({k: t[rows] for k, t in token_ids[0].items()}, {k: p[rows] for k, p in token_ids[1].items()})
        else:
            sub_ids = tokenize_many(loaded, dataset, view_ids, keys, progress=progress)
    return [build_token_cache(loaded, dataset, view_ids, keys, f, progress=progress, token_ids=sub_ids, view=v)
            for v, f in enumerate(folders, 1)]


def load_heads(
    out_dir: Path, combo: str = BEST_COMBO, model_hash: str | None = None
) -> dict[str, tuple[nn.Module, dict]]:
    """The trained heads of one combination: ``{"galaxy"|"star"|"morphology": (module, meta)}``.

    With ``model_hash``, heads trained on another model's encoder are left out (as if missing):
    applied to a retrained model's tokens they would give confident nonsense.
    """
    heads = {}
    for name in ("galaxy", "star", "morphology", "segmentation"):
        stem = head_stem(out_dir, combo, name)
        if stem.with_suffix(".json").is_file():
            module, meta = load_head(stem, build_head)
            if meta.get("features") != FEATURE_VERSION:  # trained on other features (another width)
                continue
            if meta.get("heads", 1) != HEADS_VERSION:  # an older head architecture
                continue
            if model_hash is not None and meta.get("model_hash") != model_hash:
                continue
            heads[name] = (module, meta)
    return heads


@torch.inference_mode()
def apply_heads(heads: dict, tokens: torch.Tensor, mask: torch.Tensor, kinds: np.ndarray) -> pd.DataFrame:
    """Per-object predictions from cached/live tokens: ``pred_<target>`` columns, NaN where not applicable."""
    n = len(kinds)
    cols: dict[str, np.ndarray] = {}
    for module, meta in heads.values():
        if meta["head"] == "segmentation":
            continue
        if meta["head"] == "property":
            out = module(tokens.float(), mask).numpy() * np.array(meta["std"]) + np.array(meta["mean"])
            use = kinds == meta["kind"]
            for j, t in enumerate(meta["targets"]):
                cols["pred_" + t.removeprefix("truth_")] = np.where(use, out[:, j], np.nan)
        elif meta["head"] == "morphology":
            prob = module(tokens.float(), mask).softmax(-1).numpy()
            gal = kinds == "galaxy"
            cols["pred_morphology"] = np.where(gal, prob.argmax(1), -1).astype(np.int64)
            cols["pred_morphology_prob"] = np.where(gal, prob.max(1), np.nan)
    return pd.DataFrame(cols, index=range(n))


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)
