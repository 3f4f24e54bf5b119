"""Held-out scores with the eight dihedral views averaged at prediction (test-time augmentation).

The image heads and the image baselines train on the eight rotations/reflections of each training
galaxy (:mod:`engine.tasks.augment`); a galaxy's class and masks do not depend on how its cutout is
turned, so averaging a net's outputs over the eight turned cutouts of a held-out galaxy is a better
estimate than the one view as observed. This module scores the *saved* heads that way, after
:func:`engine.tasks.probes.train_probes` trained them (nothing is retrained): the held-out galaxies'
cutouts are turned, tokenized and encoded once more each into
``tokens/<combo>.heldout-views/view1..7/`` (resumable token caches, like the training views), the
morphology probes' class probabilities are averaged, and the segmentation head's sigmoid maps are
turned back onto the observed grid and averaged before the 0.5 threshold. The baselines score their
CNN and U-Net the same way inside :func:`engine.tasks.baselines.run_baselines`.

It costs seven extra encodings per held-out galaxy, so the table reports it *beside* the
as-observed scores, which stay the headline: the app's cached predictions encode one view (its
``predict --views 8`` averages the morphology of one galaxy live).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from engine.tasks import arrays, metrics, segmentation
from engine.tasks.augment import N_VIEWS, mean_class_probabilities, mean_mask_probabilities
from engine.tasks.features import (
    INPUT_COMBOS,
    TokenCache,
    build_token_cache,
    cache_is_current,
    combo_keys,
    open_token_cache,
    tokenize_many,
)
from engine.tasks.fitting import load_head
from engine.tasks.probes import (
    MORPHOLOGY_TARGET,
    SEGMENTATION_COMBO,
    _tensor,
    build_head,
    head_stem,
    segmentation_subset,
    select_objects,
)
from engine.tasks.splits import split_rows

#: bump when the way views are averaged changes: cached view-averaged scores of another version are recomputed
VIEW_AVERAGING_VERSION = 1
CACHE_NAME = "views_averaged.json"


def view_averaged_morphology(object_ids: np.ndarray, true: np.ndarray, pred: np.ndarray, observed: dict) -> dict:
    """Accuracy of view-averaged classes next to the one-view accuracy ``observed`` reported; the
    per-galaxy classes are kept for the paired bootstrap (:func:`paired_morphology`)."""
    return {"accuracy": metrics.accuracy(true, pred), "accuracy_observed": observed.get("accuracy"),
            "n_test": len(true), "object_id": [int(i) for i in object_ids], "true": [int(t) for t in true],
            "pred": [int(p) for p in pred]}


def heldout_view_scores(loaded, dataset, out: Path, probes: dict, *, progress: bool = True,
                        n_views: int = N_VIEWS) -> dict:
    """``{"morphology": {method: scores}, "segmentation": {method: scores}}`` of the saved image heads of
    ``loaded`` under ``out`` (the folder of the probe run ``probes``, as :func:`train_probes` returned it:
    its seed and object caps pick the held-out galaxies), the first ``n_views`` views averaged.

    Cached in ``out/views_averaged.json``, keyed by the heads' fingerprints; heads that are missing,
    trained as observed or belong to another model are left out.
    """
    out = Path(out)
    seed, max_objects, max_seg_galaxies = probes.get("seed", 0), probes.get("max_objects"), probes.get("max_seg_galaxies")
    ids = select_objects(dataset.catalog, max_objects, seed)
    plan = _heads_to_score(loaded, out)
    key = {"version": VIEW_AVERAGING_VERSION, "model_hash": loaded.hash, "dataset_hash": dataset.info.get("hash"),
           "seed": seed, "n_views": n_views, "max_objects": max_objects, "max_seg_galaxies": max_seg_galaxies,
           "heads": _fingerprints(plan)}
    cache_path = out / CACHE_NAME
    if cache_path.is_file():
        try:
            cached = json.loads(cache_path.read_text())
        except ValueError:
            cached = {}
        if cached.get("key") == key:
            return cached["scores"]
    scores: dict = {"morphology": {}, "segmentation": {}}
    for combo, heads in plan.items():
        keys = combo_keys(combo, loaded.token_keys)
        cache = open_token_cache(out / "tokens" / combo)
        targets: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        if "morphology" in heads:
            frame = pd.read_parquet(head_stem(out, combo, "morphology").with_name("morphology.heldout.parquet"))
            frame = frame[frame["target"] == MORPHOLOGY_TARGET]
            targets["morphology"] = (frame["object_id"].to_numpy(np.int64), frame["true"].to_numpy().astype(np.int64))
        if "segmentation" in heads:
            ids_k = segmentation_subset(dataset, ids, seed, max_seg_galaxies)
            split = split_rows(ids_k, seed)
            if split is not None:
                targets["segmentation"] = (ids_k[split[2]], np.empty(0))
        wanted = np.unique(np.concatenate([np.empty(0, np.int64), *(t[0] for t in targets.values())]))
        if len(wanted) == 0:
            continue
        views = _heldout_view_caches(loaded, dataset, out, combo, keys, wanted, progress)
        if "morphology" in targets:
            test_ids, true = targets["morphology"]
            module, meta = heads["morphology"]
            prob = _morphology_probs(module, cache, views, test_ids, n_views)
            scores["morphology"][f"probe: {combo}"] = view_averaged_morphology(
                test_ids, true, prob.argmax(1).numpy(), meta["metrics"])
        if "segmentation" in targets:
            test_ids = targets["segmentation"][0]
            module, meta = heads["segmentation"]
            prob = _segmentation_probs(module, cache, views, test_ids, n_views)
            true = arrays.segmaps(dataset, test_ids)
            scores["segmentation"][f"head on frozen tokens ({combo})"] = {
                **segmentation.scores(test_ids, true, prob.numpy() > segmentation.THRESHOLD),
                "n_train": meta["metrics"].get("n_train")}
    tmp = cache_path.with_name(f"{CACHE_NAME}.tmp{os.getpid()}")
    tmp.write_text(json.dumps({"key": key, "scores": scores}))
    os.replace(tmp, cache_path)
    return scores


def cached_view_scores(loaded, out: Path) -> dict:
    """The scores :func:`heldout_view_scores` cached under ``out`` if they belong to the heads saved there
    now (this model, the same fingerprints), else {}: for a table written from the caches alone."""
    try:
        cached = json.loads((Path(out) / CACHE_NAME).read_text())
    except (OSError, ValueError):
        return {}
    key = cached.get("key", {})
    fresh = key.get("version") == VIEW_AVERAGING_VERSION and key.get("model_hash") == loaded.hash
    return cached.get("scores", {}) if fresh and key.get("heads") == _fingerprints(_heads_to_score(loaded, Path(out))) else {}


def _fingerprints(plan: dict[str, dict[str, tuple]]) -> dict[str, str]:
    """``"<combo>/<head>" -> fingerprint`` of the heads :func:`_heads_to_score` found: what the cache is keyed by."""
    return {f"{combo}/{name}": meta["fingerprint"] for combo, heads in plan.items() for name, (_, meta) in heads.items()}


def _heads_to_score(loaded, out: Path) -> dict[str, dict[str, tuple]]:
    """combo -> {"morphology"|"segmentation": (module, meta)} for the saved image heads of this model
    that trained on the views (a head trained as observed is not compared with view-trained baselines)."""
    plan: dict = {}
    for combo in INPUT_COMBOS:
        if "tok_image" not in combo_keys(combo, loaded.token_keys):
            continue
        for name in ("morphology", "segmentation"):
            if name == "segmentation" and combo != SEGMENTATION_COMBO:
                continue
            stem = head_stem(out, combo, name)
            if not stem.with_suffix(".json").is_file():
                continue
            module, meta = load_head(stem, build_head)
            if meta.get("model_hash") == loaded.hash and meta.get("views", 1) == N_VIEWS and "fingerprint" in meta:
                plan.setdefault(combo, {})[name] = (module, meta)
    return plan


def _heldout_view_caches(loaded, dataset, out: Path, combo: str, keys, ids: np.ndarray, progress: bool) -> list[TokenCache]:
    """Token caches of views 1..7 of the held-out galaxies ``ids`` (the codecs of the modalities that do
    not turn run once for all seven)."""
    folders = [out / "tokens" / f"{combo}.heldout-views" / f"view{v}" for v in range(1, N_VIEWS)]
    stale = any(not cache_is_current(loaded, dataset, ids, keys, f, v) for v, f in enumerate(folders, 1))
    token_ids = tokenize_many(loaded, dataset, ids, keys, progress=progress) if stale else None
    return [build_token_cache(loaded, dataset, ids, keys, f, progress=progress, token_ids=token_ids, view=v)
            for v, f in enumerate(folders, 1)]


@torch.inference_mode()
def _morphology_probs(module, cache: TokenCache, views: list[TokenCache], ids: np.ndarray, n_views: int = N_VIEWS,
                      batch: int = 64) -> torch.Tensor:
    """(N, classes) probabilities averaged over the observed cutout and its seven turned views; the
    masks of absent tokens come from the observed cache (they do not turn)."""
    module.eval()
    caches = [cache, *views]
    parts = []
    for s in range(0, len(ids), batch):
        chunk = ids[s : s + batch]
        tok, msk = _tensor(cache, cache.rows(chunk))  # view 0; its masks serve every view
        parts.append(mean_class_probabilities(
            lambda v: module((tok if v == 0 else _tensor(caches[v], caches[v].rows(chunk))[0]).float(), msk),  # noqa: B023
            n_views))
    return torch.cat(parts)


@torch.inference_mode()
def _segmentation_probs(module, cache: TokenCache, views: list[TokenCache], ids: np.ndarray, n_views: int = N_VIEWS,
                        batch: int = 32) -> torch.Tensor:
    """(N, classes, 96, 96) mask probabilities averaged over the eight views, each turned back."""
    module.eval()
    caches = [cache, *views]
    image = cache.layout.slice_of("tok_image")
    parts = []
    for s in range(0, len(ids), batch):
        chunk = ids[s : s + batch]
        parts.append(mean_mask_probabilities(
            lambda v: module(_tensor(caches[v], caches[v].rows(chunk))[0][:, image].float()), n_views))  # noqa: B023
    return torch.cat(parts)


def paired_morphology(a: dict, b: dict, seed: int = 0) -> dict | None:
    """Paired bootstrap of two view-averaged morphology scorings on the galaxies both scored (None when
    they share fewer than two)."""
    pa = pd.DataFrame({"true": a["true"], "pred": a["pred"]}, index=a["object_id"])
    pb = pd.DataFrame({"pred": b["pred"]}, index=b["object_id"])
    common = pa.index.intersection(pb.index)
    if len(common) < 2:
        return None
    return metrics.paired_bootstrap(metrics.accuracy, pa.loc[common, "true"].to_numpy(), pa.loc[common, "pred"].to_numpy(),
                                    pb.loc[common, "pred"].to_numpy(), seed=seed)
