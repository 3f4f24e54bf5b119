"""The app's only door to the engine's search and prediction APIs: opened once per server (cached
on the store), and every way they can be missing turned into an AppMessage naming the command
that builds what is missing."""

from __future__ import annotations

import importlib
import threading

from app.messages import AppMessage, missing_engine_part, missing_index, missing_predictions
from engine.errors import EngineError

_LOCK = threading.Lock()


def _import(module: str, command: str):
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise missing_engine_part(module, command) from exc


def searcher(store, view: str):
    """``engine.index.searcher.Searcher`` for ``view``, opened once per (store, view)."""
    cache = store.__dict__.setdefault("_searcher_cache", {})
    with _LOCK:
        if view in cache:
            return cache[view]
    mod = _import("engine.index.searcher", "aion-engine index")
    cfg = store.config
    if not (cfg.view_dir(store.name, view) / "manifest.json").is_file():
        raise missing_index(cfg.dataset_dir, cfg.model, view)
    try:
        found = mod.Searcher.open(cfg.dataset_dir, cfg.model, view, view_dir=cfg.view_dir(store.name, view))
    except EngineError as exc:
        raise AppMessage(f"Cannot open the {view} index: {exc}") from exc
    with _LOCK:
        cache[view] = found
    return found


def call(fn, *args, **kwargs):
    """Run an engine call; its domain errors (which name the object and what it lacks) become messages."""
    try:
        return fn(*args, **kwargs)
    except EngineError as exc:
        raise AppMessage(str(exc), "warning") from exc


def predictor(store, task: str = "superres"):
    """``engine.tasks.api.Predictor`` for the store's dataset and model, opened once."""
    cache = store.__dict__.setdefault("_predictor_cache", {})
    with _LOCK:
        if "p" in cache:
            return cache["p"]
    mod = _import("engine.tasks.api", "aion-engine train probes")
    cfg = store.config
    try:
        found = mod.Predictor.open(cfg.dataset_dir, cfg.model)
    except FileNotFoundError as exc:
        raise missing_predictions(cfg.dataset_dir, cfg.model, task) from exc
    except EngineError as exc:
        raise AppMessage(f"Cannot load the model for {task} ({exc}); `aion-engine prepare --default` builds "
                         f"what the default dataset needs.") from exc
    with _LOCK:
        cache["p"] = found
    return found
