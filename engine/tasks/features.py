"""Frozen-encoder token embeddings per input combination, computed once and cached on disk.

Probes train in seconds on cached features; the encoder runs once per (dataset, model,
input combination). Outputs are stored in a *canonical layout*: the combination's token keys
in order, each with its official token count (e.g. 576 image tokens in 24x24 raster order),
so token position t always means the same modality and patch. Tokens an object lacks (no
spectrum, no Gaia flux) are zero with ``mask`` True. This is what attentive pooling and the
segmentation head (which needs the image tokens on their grid) consume.

Each token's feature is two frozen layers side by side (``2 x dim``): the encoder's *input*
embedding of the token (the embedding-table lookup of its code, before any transformer block)
and the last encoder layer's output. The nano model's encoder washes out much of what its
tokenizers keep (morphology from the image codes: 0.52 with the embedding layer, 0.26 with the
last layer alone; ``bench/probe_features.py``), so the heads read both, as multi-layer probes do.

Cache folder ``<results_dir>/probes/tokens/<combo>/``: ``embeddings.npy`` (float16, N x T x D),
``mask.npy`` (bool, N x T), ``object_ids.npy``, ``meta.json`` (model hash, dataset hash,
keys). It is filled chunk by chunk into ``*.partial`` files whose progress is recorded, so an
interrupted run resumes where it stopped; the final files appear by rename only when complete.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from einops import repeat
from tqdm.auto import tqdm

from engine.errors import ModelError
from engine.model.encode import TokenSource, two_layer_tokens
from engine.model.modalities import MODALITIES, VIEWS, load_modalities
from engine.paths import PROJECT_ROOT
from engine.tasks.augment import dihedral

PHOTOMETRY_KEYS: tuple[str, ...] = VIEWS["photometry"]

#: The paper's input combinations for property probes (keys restricted to what a model accepts).
INPUT_COMBOS: dict[str, tuple[str, ...]] = {
    "photometry": PHOTOMETRY_KEYS,
    "photometry+image": (*PHOTOMETRY_KEYS, "tok_image"),
    "photometry+image+spectrum": (*PHOTOMETRY_KEYS, "tok_image", "tok_spectrum_desi"),
}

CACHE_FORMAT = 2
#: What a token's feature is; heads trained on another version cannot be applied (other width).
FEATURE_VERSION = 2
FEATURES = "embedding layer + last encoder layer (2 x dim)"


def feature_dim(loaded) -> int:
    """Width of one token's feature: the model's dim for each of the two layers (FEATURE_VERSION 2)."""
    return 2 * loaded.dim

#: where pretraining runs keep their token tables (``engine.train.pretrain.default_run_dir``)
RUNS_ROOT = PROJECT_ROOT / "runs"


@dataclass(frozen=True)
class Layout:
    """Canonical token layout: key order and where each key's tokens sit."""

    keys: tuple[str, ...]

    @property
    def counts(self) -> tuple[int, ...]:
        return tuple(MODALITIES[k].num_tokens for k in self.keys)

    @property
    def total(self) -> int:
        return int(sum(self.counts))

    def groups(self) -> tuple[tuple[int, int], ...]:
        """Token ranges a property probe pools separately: each run of consecutive one-token
        modalities (the photometry) as one range, every multi-token modality as its own."""
        ranges: list[tuple[int, int]] = []
        start, prev_single = 0, False
        for count in self.counts:
            single = count == 1
            if single and prev_single:
                ranges[-1] = (ranges[-1][0], start + 1)
            else:
                ranges.append((start, start + count))
            start, prev_single = start + count, single
        return tuple(ranges)

    def slice_of(self, key: str) -> slice:
        if key not in self.keys:
            raise ModelError(f"token key {key!r} is not in this input combination {list(self.keys)}")
        start = int(sum(self.counts[: self.keys.index(key)]))
        return slice(start, start + MODALITIES[key].num_tokens)


def combo_keys(combo: str, model_keys) -> tuple[str, ...]:
    """The keys of input combination ``combo`` that the model accepts; error if none."""
    if combo not in INPUT_COMBOS:
        raise ModelError(f"unknown input combination {combo!r}; accepted: {', '.join(INPUT_COMBOS)}")
    allowed = set(model_keys)
    keys = tuple(k for k in INPUT_COMBOS[combo] if k in allowed)
    if not keys:
        raise ModelError(f"the model accepts none of {combo!r}'s modalities {list(INPUT_COMBOS[combo])}; its inputs: {sorted(allowed)}")
    return keys


def tokenize(loaded, dataset, object_ids: np.ndarray, keys, view: int = 0, source: TokenSource | None = None
             ) -> tuple[dict[str, torch.Tensor], dict[str, np.ndarray]]:
    """Codec token ids and presence flags for ``object_ids`` (in order), one entry per key.

    ``view`` (:data:`engine.tasks.augment.VIEWS`) turns the image cutouts before the codec sees them.
    ``source``: a token table of this dataset made by these codecs (``engine.train.tokens.find_table``)
    to look the untouched view's ids up in instead of running the codecs.
    """
    if source is not None and not view:
        pos = source.rows(np.asarray(object_ids, dtype=np.int64))
        table, device = source.table, loaded.codecs.device
        return ({k: torch.from_numpy(table.tokens[k][pos].astype(np.int64)).to(device) for k in keys},
                {k: np.asarray(table.present[k][pos], dtype=bool) for k in keys})
    mods = load_modalities(dataset, object_ids, keys)
    if view:
        for key in keys:
            if MODALITIES[key].kind == "image":
                mods[key][0].flux = dihedral(mods[key][0].flux, view).contiguous()
    tokens = loaded.codecs.encode(mods)
    present = {k: np.asarray(mods[k][1], dtype=bool) for k in keys}
    return tokens, present


@torch.inference_mode()
def encode_canonical(
    model, tokens: dict[str, torch.Tensor], present: dict[str, np.ndarray], layout: Layout
) -> tuple[torch.Tensor, torch.Tensor]:
    """Frozen features (B, T, 2D: input embedding, last encoder layer) and mask (B, T, True = absent)
    in the canonical layout.

    Absent modalities are masked at the encoder input; the official encoder packs the
    present tokens first in concatenation order, so outputs are scattered back to their
    canonical positions with the same deterministic sort the encoder used.
    """
    device = next(model.parameters()).device
    b = next(iter(tokens.values())).shape[0]
    input_dict, input_mask = {}, {}
    for key in layout.keys:
        n = MODALITIES[key].num_tokens
        input_dict[key] = tokens[key].to(device).long().reshape(b, n)
        absent = torch.as_tensor(~present[key], device=device)
        input_mask[key] = absent[:, None].expand(b, n).clone()
    out = two_layer_tokens(model, input_dict, input_mask, layout.total)
    mask_all = torch.cat([input_mask[k] for k in layout.keys], dim=1)
    order = torch.argsort(mask_all.float() + torch.arange(layout.total, device=device)[None] * 1e-6, dim=1)
    canonical = torch.zeros(b, layout.total, out.shape[-1], device=device, dtype=out.dtype)
    canonical.scatter_(1, repeat(order[:, : out.shape[1]], "b n -> b n d", d=out.shape[-1]), out)
    canonical[mask_all] = 0.0
    return canonical, mask_all


def embed_objects_canonical(loaded, dataset, object_ids: np.ndarray, layout: Layout, view: int = 0,
                            source: TokenSource | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Tokenize (or look up in ``source``, see :func:`tokenize`) + encode a batch (the live path of the Predictor)."""
    tokens, present = tokenize(loaded, dataset, object_ids, layout.keys, view, source)
    return encode_canonical(loaded.model, tokens, present, layout)


# --- disk cache ------------------------------------------------------------------------


@dataclass
class TokenCache:
    """A finished cache, memory-mapped: ``embeddings`` (N, T, D) float16, ``mask`` (N, T)."""

    folder: Path
    object_ids: np.ndarray
    embeddings: np.ndarray
    mask: np.ndarray
    layout: Layout
    meta: dict

    def rows(self, ids: np.ndarray) -> np.ndarray:
        index = {int(i): r for r, i in enumerate(self.object_ids)}
        missing = [int(i) for i in ids if int(i) not in index]
        if missing:
            raise ModelError(f"{self.folder}: token cache lacks object_id {missing[:5]} (rebuild with a larger subset)")
        return np.array([index[int(i)] for i in ids], dtype=np.int64)


def _meta_for(loaded, dataset, layout: Layout, object_ids: np.ndarray, view: int = 0) -> dict:
    ids_hash = hashlib.sha256(np.asarray(object_ids, dtype=np.int64).tobytes()).hexdigest()[:16]
    return ({"view": int(view)} if view else {}) | {
        "format": CACHE_FORMAT,
        "model_id": loaded.model_id,
        "model_hash": loaded.hash,
        "dataset": dataset.name,
        "dataset_hash": dataset.info.get("hash"),
        "keys": list(layout.keys),
        "tokens": layout.total,
        "dim": feature_dim(loaded),
        "features": FEATURES,
        "count": len(object_ids),
        "ids_digest": ids_hash,
    }


def _same(meta_a: dict, meta_b: dict) -> bool:
    fields = ("format", "model_hash", "dataset_hash", "keys", "tokens", "dim", "count", "ids_digest")
    return all(meta_a.get(f) == meta_b.get(f) for f in fields) and meta_a.get("view", 0) == meta_b.get("view", 0)


def tokenize_many(loaded, dataset, object_ids: np.ndarray, keys, *, batch_size: int = 64, progress: bool = True
                  ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Codec token ids (int32 arrays) and presence flags for many objects, in ``object_ids`` order.

    The codecs are the slow half of encoding; tokenizing once lets every input combination
    reuse the same ids.
    """
    ids = np.asarray(object_ids, dtype=np.int64)
    reused = _from_training_table(loaded, dataset, ids, keys)
    if reused is not None:
        return reused
    tokens: dict[str, list] = {k: [] for k in keys}
    present: dict[str, list] = {k: [] for k in keys}
    for start in tqdm(range(0, len(ids), batch_size), desc="tokenize", disable=not progress, unit="batch"):
        t, p = tokenize(loaded, dataset, ids[start : start + batch_size], keys)
        for k in keys:
            tokens[k].append(t[k].cpu().numpy().astype(np.int32))
            present[k].append(p[k])
    return {k: np.concatenate(v) for k, v in tokens.items()}, {k: np.concatenate(v) for k, v in present.items()}


def _from_training_table(loaded, dataset, ids: np.ndarray, keys) -> tuple[dict, dict] | None:
    """Token ids from a token table made with these very codecs on this dataset (``prepare``'s, or a
    pretraining run's under ``RUNS_ROOT``): saves running the codecs again."""
    from engine.train import tokens as train_tokens

    if loaded.path is None:
        return None
    table = train_tokens.find_table(dataset, loaded.path, keys, train_tokens.table_roots(dataset, loaded.path, RUNS_ROOT))
    if table is None:
        return None
    pos = pd.Index(table.object_ids).get_indexer(ids)
    if (pos < 0).any():
        return None
    return ({k: table.tokens[k][pos].astype(np.int32) for k in keys}, {k: table.present[k][pos] for k in keys})


def cache_is_current(loaded, dataset, object_ids: np.ndarray, keys, folder: Path, view: int = 0) -> bool:
    """Whether ``folder`` holds a finished cache for exactly this model, dataset, ids, keys and view."""
    meta_path = Path(folder) / "meta.json"
    if not meta_path.is_file():
        return False
    try:
        return _same(json.loads(meta_path.read_text()),
                     _meta_for(loaded, dataset, Layout(tuple(keys)), np.asarray(object_ids), view))
    except ValueError:
        return False


def build_token_cache(
    loaded, dataset, object_ids: np.ndarray, keys, folder: Path, *, batch_size: int = 32, progress: bool = True,
    token_ids: tuple[dict[str, np.ndarray], dict[str, np.ndarray]] | None = None, view: int = 0,
) -> TokenCache:
    """Encode ``object_ids`` once with the combination ``keys``; reuse a matching finished cache.

    ``token_ids``: optional output of :func:`tokenize_many` for these ids (a superset of keys),
    so the codecs do not run again for every combination. ``view`` (:mod:`engine.tasks.augment`):
    encode the cutouts turned by this dihedral view; only the image codec runs again. Resumable: chunks go into ``*.partial`` memmaps and ``progress.json`` records how many
    rows are done; a rerun with the same model/dataset/ids continues from there.
    """
    layout = Layout(tuple(keys))
    ids = np.asarray(object_ids, dtype=np.int64)
    folder = Path(folder)
    meta = _meta_for(loaded, dataset, layout, ids, view)
    meta_path = folder / "meta.json"
    if meta_path.is_file():
        try:
            if _same(json.loads(meta_path.read_text()), meta):
                return open_token_cache(folder)
        except ValueError:
            pass
    folder.mkdir(parents=True, exist_ok=True)
    part_e, part_m, prog_path = folder / "embeddings.partial.npy", folder / "mask.partial.npy", folder / "progress.json"
    done = 0
    shape = (len(ids), layout.total, feature_dim(loaded))
    if prog_path.is_file() and part_e.is_file() and part_m.is_file():
        try:
            prog = json.loads(prog_path.read_text())
            if _same(prog.get("meta", {}), meta):
                done = int(prog["done"])
        except (ValueError, KeyError):
            done = 0
    mode = "r+" if done else "w+"
    emb = np.lib.format.open_memmap(part_e, mode=mode, dtype=np.float16, shape=shape)
    msk = np.lib.format.open_memmap(part_m, mode=mode, dtype=np.bool_, shape=shape[:2])
    bar = tqdm(total=len(ids), initial=done, desc=f"encode {'+'.join(k.removeprefix('tok_') for k in layout.keys[-2:])}",
               disable=not progress, unit="obj")
    for start in range(done, len(ids), batch_size):
        chunk = ids[start : start + batch_size]
        if token_ids is None:
            out, mask = embed_objects_canonical(loaded, dataset, chunk, layout, view)
        else:
            sl = slice(start, start + len(chunk))
            tokens = {k: torch.from_numpy(token_ids[0][k][sl]) for k in layout.keys}
            turned = [k for k in layout.keys if view and MODALITIES[k].kind == "image"]
            if turned:
                tokens |= tokenize(loaded, dataset, chunk, turned, view)[0]
            out, mask = encode_canonical(loaded.model, tokens, {k: token_ids[1][k][sl] for k in layout.keys}, layout)
        emb[start : start + len(chunk)] = out.float().cpu().numpy().astype(np.float16)
        msk[start : start + len(chunk)] = mask.cpu().numpy()
        emb.flush()
        msk.flush()
        _write_json(prog_path, {"done": start + len(chunk), "meta": meta})
        bar.update(len(chunk))
    bar.close()
    del emb, msk
    np.save(folder / "object_ids.partial.npy", ids)
    os.replace(folder / "object_ids.partial.npy", folder / "object_ids.npy")
    os.replace(part_e, folder / "embeddings.npy")
    os.replace(part_m, folder / "mask.npy")
    _write_json(meta_path, meta)
    prog_path.unlink(missing_ok=True)
    return open_token_cache(folder)


def open_token_cache(folder: Path) -> TokenCache:
    folder = Path(folder)
    meta_path = folder / "meta.json"
    if not meta_path.is_file():
        raise ModelError(f"{meta_path}: missing token cache (run `aion-engine train probes` first)")
    meta = json.loads(meta_path.read_text())
    return TokenCache(
        folder=folder,
        object_ids=np.load(folder / "object_ids.npy"),
        embeddings=np.load(folder / "embeddings.npy", mmap_mode="r"),
        mask=np.load(folder / "mask.npy", mmap_mode="r"),
        layout=Layout(tuple(meta["keys"])),
        meta=meta,
    )


def _write_json(path: Path, obj: dict) -> None:
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    tmp.write_text(json.dumps(obj, indent=2))
    os.replace(tmp, path)
