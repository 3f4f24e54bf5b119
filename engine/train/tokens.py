"""Tokenize a dataset once and keep the token ids on disk for pretraining and evaluation.

Tokens are small (a 10 000-object survey is ~20 MB as int16), and running the codecs every
step would cost more than the transformer. The cache folder is named by a fingerprint of the
dataset hash, the codec weights and the token keys, so stale caches are never reused; it is
written to a temporary folder and renamed, so a crash never leaves a half cache.

Layout: ``tokens-<fingerprint>/`` with ``object_id.npy``, ``<key>.npy`` (N, n) int16,
``<key>.present.npy`` (N,) bool and ``meta.json``. Only ``.npy`` without pickles and JSON.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from engine.errors import ModelError
from engine.model.codecs import CODECS_DIR, CodecSet
from engine.model.modalities import load_modalities, select_rows, spec


@dataclass
class TokenTable:
    """Token ids and presence flags for every object of a dataset, row-aligned with ``object_ids``."""

    object_ids: np.ndarray
    tokens: dict[str, np.ndarray]
    present: dict[str, np.ndarray]

    @property
    def keys(self) -> list[str]:
        return list(self.tokens)

    @property
    def counts(self) -> dict[str, int]:
        return {k: int(v.shape[1]) for k, v in self.tokens.items()}

    def __len__(self) -> int:
        return len(self.object_ids)


def codecs_fingerprint(model_dir: Path) -> str:
    """sha256 over the codec folders' config and weights files."""
    root = Path(model_dir) / CODECS_DIR
    h = hashlib.sha256()
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix in (".json", ".safetensors"))
    if not files:
        raise ModelError(f"{root}: no codecs (run `aion-engine train codecs` first)")
    for path in files:
        h.update(str(path.relative_to(root)).encode())
        h.update(path.read_bytes())
    return h.hexdigest()


def cache_fingerprint(dataset, model_dir: Path, token_keys: list[str], codecs_id: str | None = None) -> str:
    """Name of the token table of (dataset, codecs, keys); ``codecs_id``: :func:`codecs_fingerprint`, if known."""
    data_id = dataset.info.get("hash") or str(dataset.root.resolve())
    payload = json.dumps([data_id, codecs_id or codecs_fingerprint(model_dir), list(token_keys)])
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def tokenize_dataset(dataset, codecs: CodecSet, token_keys: list[str], batch_size: int = 64,
                     progress: bool = True) -> TokenTable:
    """Run every codec over the whole dataset (absent modalities get id 0 and present=False)."""
    ids = dataset.ids
    tokens = {k: np.zeros((len(ids), spec(k).num_tokens), dtype=np.int16) for k in token_keys}
    present = {k: np.zeros(len(ids), dtype=bool) for k in token_keys}
    for start in tqdm(range(0, len(ids), batch_size), desc="tokenize", unit="batch", dynamic_ncols=True,
                      disable=not progress):
        chunk = ids[start : start + batch_size]
        mods = load_modalities(dataset, chunk, token_keys)
        for key, (modality, mask) in mods.items():
            if not mask.any():
                continue
            rows = np.flatnonzero(mask)
            out = codecs.encode({key: select_rows(modality, rows)})[key].cpu().numpy()
            tokens[key][start + rows] = out.astype(np.int16)
            present[key][start + rows] = True
    return TokenTable(ids.copy(), tokens, present)


def save_table(table: TokenTable, folder: Path, meta: dict) -> None:
    folder = Path(folder)
    tmp = folder.with_name(f".{folder.name}.tmp-{uuid.uuid4().hex[:8]}")
    tmp.mkdir(parents=True)
    try:
        np.save(tmp / "object_id.npy", table.object_ids)
        for key in table.keys:
            np.save(tmp / f"{key}.npy", table.tokens[key])
            np.save(tmp / f"{key}.present.npy", table.present[key])
        (tmp / "meta.json").write_text(json.dumps({**meta, "keys": table.keys}, indent=2))
        if folder.exists():
            shutil.rmtree(folder)
        os.replace(tmp, folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def load_table(folder: Path) -> TokenTable:
    folder = Path(folder)
    try:
        meta = json.loads((folder / "meta.json").read_text())
        ids = np.load(folder / "object_id.npy", allow_pickle=False)
        tokens = {k: np.load(folder / f"{k}.npy", allow_pickle=False) for k in meta["keys"]}
        present = {k: np.load(folder / f"{k}.present.npy", allow_pickle=False) for k in meta["keys"]}
    except (OSError, ValueError, KeyError) as exc:
        raise ModelError(f"{folder}: cannot read token cache ({exc}); delete it to rebuild") from exc
    return TokenTable(ids, tokens, present)


def load_or_build(
    dataset, model_dir: Path, codecs: CodecSet, token_keys: list[str], cache_root: Path, *, build: bool = True,
    progress: bool = True,
) -> TokenTable:
    """The cached token table for (dataset, codecs, keys); built and saved when missing and ``build``."""
    folder = Path(cache_root) / f"tokens-{cache_fingerprint(dataset, model_dir, token_keys)}"
    if (folder / "meta.json").is_file():
        return load_table(folder)
    if not build:
        raise ModelError(f"{folder}: token cache missing")
    table = tokenize_dataset(dataset, codecs, token_keys, progress=progress)
    save_table(table, folder, {"dataset": str(dataset.root), "dataset_hash": dataset.info.get("hash")})
    return table


#: the folder under a dataset's results (``indexes/<dataset>/<model>/``) where ``prepare`` keeps its token table
DATASET_TABLE_DIR = "token_ids"


def table_roots(dataset, model_dir: Path, runs_root: Path | None = None) -> list[Path]:
    """Folders that may hold token tables of ``dataset`` under ``model_dir``'s codecs: the one
    ``prepare`` writes (:data:`DATASET_TABLE_DIR`), then the caches of the pretraining runs under
    ``runs_root`` (default ``<project>/runs``)."""
    from engine.paths import PROJECT_ROOT, results_dir

    runs_root = PROJECT_ROOT / "runs" if runs_root is None else Path(runs_root)
    return [results_dir(dataset.name, model_dir) / DATASET_TABLE_DIR, *sorted(runs_root.glob("*/cache"))]


def find_table(dataset, model_dir: Path | None, keys, roots: list[Path] | None = None) -> TokenTable | None:
    """A finished token table with every one of ``keys`` for all of ``dataset``'s objects, made by
    ``model_dir``'s very codecs (its folder name is the fingerprint of dataset, codecs and keys); None
    if there is none. Lets views, probes and predictions skip the codecs, the slow half of encoding."""
    if model_dir is None:
        return None
    codecs_id = None
    for root in table_roots(dataset, model_dir) if roots is None else roots:
        for meta_path in sorted(Path(root).glob("tokens-*/meta.json")):
            try:
                table_keys = json.loads(meta_path.read_text()).get("keys", [])
                if not set(keys) <= set(table_keys):
                    continue
                codecs_id = codecs_id or codecs_fingerprint(model_dir)
                if meta_path.parent.name != f"tokens-{cache_fingerprint(dataset, model_dir, table_keys, codecs_id)}":
                    continue
                table = load_table(meta_path.parent)
            except (OSError, ValueError, ModelError):
                continue
            if len(table) == len(dataset):
                return table
    return None
