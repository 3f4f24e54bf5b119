"""The files of a view folder and the manifest that says what was built from what.

``indexes/<dataset>/<model>/<view>/``:

- ``embeddings.npy``  float16 (n_catalog, dim), row-aligned with the catalog; zeros where invalid
- ``valid.npy``       bool (n_catalog,): the object had the view's modalities
- ``embeddings.json`` who computed the embeddings (model id + hash, dataset hash, run id, time)
- ``index.faiss``     the FAISS index over the valid rows (FAISS id i = i-th valid catalog row),
  holding them mapped by the search space and L2-normalised
- ``search_space.safetensors`` the view's search space (whitening fitted on its valid rows,
  ``search_space.py``) that every query of the view goes through
- ``manifest.json``   what the index is (kind, factory, search params, measured recall, timings,
  checksum, library versions) and what it was built from (model/dataset hash, embeddings run)

The manifest is written last, so its presence means the index beside it is complete; the
loader refuses an index whose checksum, dataset, model or embeddings run no longer match,
and names the command that rebuilds it.
"""

from __future__ import annotations

import json
import os
import platform
import shlex
import time
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from engine.errors import IndexError_, MissingFileError
from engine.index.atomic import sha256_file, write_json_atomic, write_with_atomic
from engine.index.faiss_build import RECALL_K, RECALL_TARGET, BuiltIndex, Tuning
from engine.index.search_space import SPACE_FILE, SPACE_VERSION, SearchSpace

FORMAT_VERSION = 1
EMBEDDINGS_FILE = "embeddings.npy"
VALID_FILE = "valid.npy"
EMBEDDINGS_META = "embeddings.json"
INDEX_FILE = "index.faiss"
MANIFEST_FILE = "manifest.json"
METRIC = "cosine (inner product of L2-normalised vectors, in the view's search space)"
VIEWS: tuple[str, ...] = ("image", "spectrum", "photometry", "joint")


def library_versions() -> dict[str, str]:
    versions = {"faiss": faiss.__version__, "numpy": np.__version__, "python": platform.python_version()}
    for name in ("torch", "aion"):
        try:
            from importlib.metadata import version

            versions[name] = version("polymathic-aion" if name == "aion" else name)
        except Exception:  # not installed: nothing to record
            pass
    return versions


def rebuild_command(dataset_dir: str | os.PathLike, model: str | os.PathLike, view: str) -> str:
    d, m = shlex.quote(str(dataset_dir)), shlex.quote(str(model))
    return (
        f"aion-engine embed --dataset {d} --model {m} --view {view} && "
        f"aion-engine index --dataset {d} --model {m} --view {view}"
    )


def read_json(path: Path, what: str) -> dict[str, Any]:
    if not path.is_file():
        raise MissingFileError(f"{path}: missing {what}")
    try:
        return json.loads(path.read_text())
    except ValueError as exc:
        raise IndexError_(f"{path}: cannot parse {what} ({exc})") from exc


def write_index_and_manifest(
    view_dir: str | os.PathLike,
    built: BuiltIndex,
    tuning: Tuning,
    *,
    dataset_hash: str,
    model_id: str,
    model_hash: str,
    latency: dict[str, float] | None = None,
    extra: dict[str, Any] | None = None,
    space: SearchSpace | None = None,
) -> dict[str, Any]:
    """Write ``search_space.safetensors``, ``index.faiss`` then ``manifest.json``, each atomically.

    ``space`` is what the index's vectors went through before normalisation; ``None`` means
    they were indexed as given (an identity space is written, so queries stay consistent).
    Returns the manifest.
    """
    view_dir = Path(view_dir)
    emb_meta = read_json(view_dir / EMBEDDINGS_META, "embeddings metadata (run `aion-engine embed` first)")
    space = SearchSpace.identity(int(built.index.d)) if space is None else space
    if space.out_dim != built.index.d:
        raise IndexError_(f"{view_dir}: search space maps to dim {space.out_dim}, the index has {built.index.d}")
    space_path = space.save(view_dir)
    index_path = view_dir / INDEX_FILE
    write_with_atomic(index_path, lambda tmp: faiss.write_index(built.index, tmp))
    manifest = {
        "format_version": FORMAT_VERSION,
        "model_id": model_id,
        "model_hash": model_hash,
        "dataset_hash": dataset_hash,
        "dataset_name": emb_meta.get("dataset_name"),
        "view": emb_meta["view"],
        "dim": int(built.index.d),
        "metric": METRIC,
        "count": int(built.index.ntotal),
        "n_objects": int(emb_meta["count"]),
        "kind": built.kind,
        "factory": built.factory,
        "search_params": tuning.params,
        "recall_at_10": round(tuning.recall, 4),
        "recall_k": RECALL_K,
        "recall_target": RECALL_TARGET,
        "recall_measured_on": "database vectors as queries (self excluded) vs exact search",
        "tuning": tuning.tried,
        "build_s": round(built.build_s, 3),
        "built_on": built.built_on,
        "latency": latency or {},
        "index_file": INDEX_FILE,
        "index_sha256": sha256_file(index_path),
        "index_bytes": index_path.stat().st_size,
        "search_space": {**space.describe(), "file": SPACE_FILE, "sha256": sha256_file(space_path)},
        "embeddings_run": emb_meta["run_id"],
        "versions": library_versions(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        **(extra or {}),
    }
    write_json_atomic(view_dir / MANIFEST_FILE, manifest)
    return manifest


def check_manifest(
    view_dir: Path,
    manifest: dict[str, Any],
    *,
    dataset_hash: str,
    model_hash: str | None,
    embeddings_run: str,
    rebuild: str,
    verify_checksum: bool = True,
) -> None:
    """Raise IndexError_ (with the rebuild command) if the index no longer matches its inputs."""
    problems = []
    if manifest.get("format_version") != FORMAT_VERSION:
        problems.append(f"format_version {manifest.get('format_version')!r} (this engine reads {FORMAT_VERSION})")
    if manifest.get("dataset_hash") != dataset_hash:
        problems.append(f"dataset hash {manifest.get('dataset_hash')!r} at build, {dataset_hash!r} now")
    if model_hash is not None and manifest.get("model_hash") != model_hash:
        problems.append(f"model hash {manifest.get('model_hash')!r} at build, {model_hash!r} now")
    if manifest.get("embeddings_run") != embeddings_run:
        problems.append("embeddings were recomputed after the index was built")
    index_path = view_dir / INDEX_FILE
    if not index_path.is_file():
        problems.append(f"{INDEX_FILE} is missing")
    elif verify_checksum and sha256_file(index_path) != manifest.get("index_sha256"):
        problems.append(f"{INDEX_FILE} checksum does not match the manifest (damaged or replaced)")
    space = manifest.get("search_space")
    if not isinstance(space, dict) or space.get("version") != SPACE_VERSION:
        found = space.get("version") if isinstance(space, dict) else None
        problems.append("no search space recorded (built before search spaces)" if found is None else
                        f"search space version {found!r} (this engine reads {SPACE_VERSION})")
    elif space.get("file") != SPACE_FILE:
        problems.append(f"search space file {space.get('file')!r} (this engine reads {SPACE_FILE})")
    elif not (view_dir / SPACE_FILE).is_file():
        problems.append(f"{SPACE_FILE} is missing")
    elif verify_checksum and sha256_file(view_dir / SPACE_FILE) != space.get("sha256"):
        problems.append(f"{SPACE_FILE} checksum does not match the manifest (damaged or replaced)")
    if problems:
        raise IndexError_(f"{view_dir}: stale index ({'; '.join(problems)}); rebuild with: {rebuild}")
