"""Per-object predictions for a whole dataset, cached where the app reads them.

``<results_dir(dataset, model)>/predictions.parquet``: ``object_id``, ``pred_z``,
``pred_log_mstar``, ``pred_ssfr``, ``pred_teff``, ``pred_logg``, ``pred_feh`` (NaN where the
object's kind has no such property), ``pred_morphology`` (class index, -1 for non-galaxies)
and ``pred_morphology_prob``. Made by the probes of the richest input combination; objects
without a spectrum or image simply have those tokens masked. Objects already in the probe
token cache reuse their cached encoder outputs; the rest are encoded in batches, each batch
written as a chunk so an interrupted run resumes, and the final file appears by rename.
A ``predictions.json`` beside it records the model and head hashes the file was made with.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from engine.data.store import open_dataset
from engine.model.encode import TokenSource
from engine.paths import results_dir
from engine.tasks.features import Layout, combo_keys, embed_objects_canonical, feature_dim, open_token_cache
from engine.tasks.heldout import heads_digest
from engine.tasks.probes import (
    BEST_COMBO,
    DEFAULT_MAX_OBJECTS,
    apply_heads,
    load_heads,
    probes_dir,
    train_probes,
)
from engine.train.tokens import find_table

PREDICTION_COLUMNS: tuple[str, ...] = (
    "pred_z", "pred_log_mstar", "pred_ssfr", "pred_teff", "pred_logg", "pred_feh", "pred_morphology", "pred_morphology_prob",
)
PREDICTIONS_FILE = "predictions.parquet"


def predictions_path(dataset, model) -> Path:
    return results_dir(dataset.name, model) / PREDICTIONS_FILE


def _frame(ids: np.ndarray, preds: pd.DataFrame) -> pd.DataFrame:
    out = pd.DataFrame({"object_id": ids.astype(np.int64)})
    for col in PREDICTION_COLUMNS:
        if col in preds.columns:
            out[col] = preds[col].to_numpy()
        elif col == "pred_morphology":
            out[col] = np.full(len(ids), -1, dtype=np.int64)
        else:
            out[col] = np.full(len(ids), np.nan)
    return out


def cache_predictions(
    dataset_dir, model_dir, *, batch_size: int = 32, progress: bool = True, train_if_missing: bool = True,
    max_objects: int | None = DEFAULT_MAX_OBJECTS, loaded=None, probe_options: dict | None = None,
) -> Path:
    """Write ``predictions.parquet`` for every catalog object (idempotent: reused when up to date).

    Trains the probes first when they are missing and ``train_if_missing`` (with ``max_objects``
    labelled objects and ``probe_options``, more keywords of :func:`train_probes`). Returns the
    path of the parquet file.
    """
    from engine.model.fast import enable_fast_attention
    from engine.model.loading import load_model

    dataset = open_dataset(dataset_dir)
    loaded = loaded if loaded is not None else load_model(model_dir)
    enable_fast_attention(loaded.model)
    pdir = probes_dir(dataset, model_dir)
    heads = load_heads(pdir, model_hash=loaded.hash)  # heads of an older model count as missing
    if not any(m["head"] in ("property", "morphology") for _, m in heads.values()):
        if not train_if_missing:
            from engine.errors import ModelError

            raise ModelError(f"{pdir}: no probes trained for model {loaded.hash} ({BEST_COMBO!r}); "
                             "run `aion-engine train probes` first")
        train_probes(dataset_dir, model_dir, pdir, progress=progress, max_objects=max_objects, loaded=loaded,
                     **(probe_options or {}))
        heads = load_heads(pdir, model_hash=loaded.hash)
    target = predictions_path(dataset, model_dir)
    meta = {"model_hash": loaded.hash, "dataset_hash": dataset.info.get("hash"), "heads": heads_digest(pdir, BEST_COMBO),
            "combo": BEST_COMBO, "count": len(dataset)}
    meta_path = target.with_suffix(".json")
    if target.is_file() and meta_path.is_file():
        try:
            if json.loads(meta_path.read_text()) == meta:
                return target
        except ValueError:
            pass
    layout = Layout(combo_keys(BEST_COMBO, loaded.token_keys))
    catalog = dataset.catalog
    ids = catalog["object_id"].to_numpy()
    kinds = catalog["kind"].astype(str).to_numpy()
    parts = target.parent / "predictions.partial"
    stamp = parts / "meta.json"
    if parts.is_dir() and (not stamp.is_file() or json.loads(stamp.read_text()) != meta):
        shutil.rmtree(parts)
    parts.mkdir(parents=True, exist_ok=True)
    stamp.write_text(json.dumps(meta))
    cache = None
    cache_folder = pdir / "tokens" / BEST_COMBO
    if (cache_folder / "meta.json").is_file():
        c = open_token_cache(cache_folder)
        if c.meta.get("model_hash") == loaded.hash and tuple(c.layout.keys) == layout.keys:
            cache = c
    cached_rows = {int(i): r for r, i in enumerate(cache.object_ids)} if cache is not None else {}
    table = find_table(dataset, loaded.path, layout.keys)  # prepare's token table: no codecs run again
    source = TokenSource(table) if table is not None else None
    bar = tqdm(total=len(ids), desc="predictions", disable=not progress, unit="obj")
    for n_chunk, start in enumerate(range(0, len(ids), batch_size)):
        chunk_path = parts / f"chunk-{n_chunk:06d}.parquet"
        chunk = ids[start : start + batch_size]
        ck = kinds[start : start + batch_size]
        if not chunk_path.is_file():
            preds = pd.DataFrame(index=range(len(chunk)))
            use = np.isin(ck, ("galaxy", "star"))
            if use.any():
                sub = chunk[use]
                hit = np.array([int(i) in cached_rows for i in sub])
                tok = torch.zeros(len(sub), layout.total, feature_dim(loaded))
                msk = torch.ones(len(sub), layout.total, dtype=torch.bool)
                if hit.any():
                    rows = np.array([cached_rows[int(i)] for i in sub[hit]])
                    tok[torch.from_numpy(hit)] = torch.from_numpy(np.asarray(cache.embeddings[rows], dtype=np.float32))
                    msk[torch.from_numpy(hit)] = torch.from_numpy(np.asarray(cache.mask[rows]))
                if (~hit).any():
                    t, m = embed_objects_canonical(loaded, dataset, sub[~hit], layout, source=source)
                    tok[torch.from_numpy(~hit)] = t.float().cpu()
                    msk[torch.from_numpy(~hit)] = m.cpu()
                sub_pred = apply_heads(heads, tok, msk, ck[use])
                preds = pd.DataFrame(index=range(len(chunk)), columns=sub_pred.columns, dtype=float)
                preds.loc[np.flatnonzero(use), :] = sub_pred.to_numpy()
            frame = _frame(chunk, preds)
            frame["pred_morphology"] = frame["pred_morphology"].fillna(-1).astype(np.int64)
            tmp = chunk_path.with_name(chunk_path.name + ".tmp")
            frame.to_parquet(tmp)
            os.replace(tmp, chunk_path)
        bar.update(len(chunk))
    bar.close()
    frames = [pd.read_parquet(p) for p in sorted(parts.glob("chunk-*.parquet"))]
    result = pd.concat(frames, ignore_index=True)
    tmp = target.with_name(target.name + f".tmp{os.getpid()}")
    result.to_parquet(tmp)
    os.replace(tmp, target)
    meta_tmp = meta_path.with_name(meta_path.name + ".tmp")
    meta_tmp.write_text(json.dumps(meta, indent=2))
    os.replace(meta_tmp, meta_path)
    shutil.rmtree(parts, ignore_errors=True)
    return target

