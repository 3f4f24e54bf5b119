"""Training checkpoints that resume EXACTLY: weights, optimizer state, RNG states and a JSON meta.

Only safetensors and JSON are written (and read back), never pickles, so a checkpoint folder
is as safe to load as a model folder. Layout under ``<run_dir>/checkpoints/``::

    step-000120/  model.safetensors  optimizer.safetensors  optimizer.json  rng.safetensors  meta.json
    latest.json   {"step": 120, "dir": "step-000120"}

A checkpoint is written to a temporary folder, renamed into place, and only then does
``latest.json`` (replaced atomically) point to it, so a kill at any moment leaves the previous
checkpoint usable. Older checkpoints beyond ``keep`` are removed afterwards.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import uuid
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, load_model, save_file, save_model

from engine.errors import ModelError

LATEST = "latest.json"


def write_json_atomic(path: Path, obj: Any) -> None:
    """Write JSON to a temporary sibling and rename it over ``path``."""
    tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:8]}")
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=True))
    os.replace(tmp, path)


def _optimizer_to_flat(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    state = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for idx, entry in state["state"].items():
        for name, value in entry.items():
            if torch.is_tensor(value):
                tensors[f"{idx}.{name}"] = value.detach().cpu().contiguous()
            else:
                scalars.setdefault(str(idx), {})[name] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def _optimizer_from_flat(optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], info: dict) -> None:
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        idx, name = key.split(".", 1)
        state.setdefault(int(idx), {})[name] = value
    for idx, entry in info.get("scalars", {}).items():
        state.setdefault(int(idx), {}).update(entry)
    groups = info["param_groups"]
    for group in groups:
        if isinstance(group.get("betas"), list):
            group["betas"] = tuple(group["betas"])
    optimizer.load_state_dict({"state": state, "param_groups": groups})


def _rng_states() -> tuple[dict[str, torch.Tensor], dict]:
    tensors = {"torch_cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"torch_cuda_{i}"] = s
    version, internal, gauss = random.getstate()
    return tensors, {"python_random": [version, list(internal), gauss]}


def _restore_rng(tensors: dict[str, torch.Tensor], info: dict) -> None:
    torch.set_rng_state(tensors["torch_cpu"])
    cuda = [tensors[k] for k in sorted(tensors) if k.startswith("torch_cuda_")]
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)
    version, internal, gauss = info["python_random"]
    random.setstate((version, tuple(internal), gauss))


def save_checkpoint(
    run_dir: Path, *, step: int, model: torch.nn.Module, optimizer: torch.optim.Optimizer, meta: dict, keep: int = 2
) -> Path:
    """Write the checkpoint for ``step`` (call on rank 0 only; ``model`` is the raw, unwrapped model)."""
    root = Path(run_dir) / "checkpoints"
    root.mkdir(parents=True, exist_ok=True)
    name = f"step-{step:07d}"
    tmp = root / f".{name}.tmp-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        save_model(model, str(tmp / "model.safetensors"))  # handles the tied encoder/decoder embeddings
        opt_tensors, opt_info = _optimizer_to_flat(optimizer)
        save_file(opt_tensors, str(tmp / "optimizer.safetensors"))
        (tmp / "optimizer.json").write_text(json.dumps(opt_info))
        rng_tensors, rng_info = _rng_states()
        save_file(rng_tensors, str(tmp / "rng.safetensors"))
        (tmp / "meta.json").write_text(json.dumps({**meta, "step": step, **rng_info}, indent=2, sort_keys=True))
        final = root / name
        if final.exists():  # a stale copy from a run killed before latest.json moved on
            shutil.rmtree(final)
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    write_json_atomic(root / LATEST, {"step": step, "dir": name})
    old = sorted(p for p in root.glob("step-*") if p.is_dir() and p.name != name)
    for path in old[: max(0, len(old) - (keep - 1))]:
        shutil.rmtree(path, ignore_errors=True)
    return final


def latest_checkpoint(run_dir: Path) -> Path | None:
    """The folder ``latest.json`` points to, or None when the run has no checkpoint yet."""
    pointer = Path(run_dir) / "checkpoints" / LATEST
    if not pointer.is_file():
        return None
    try:
        name = json.loads(pointer.read_text())["dir"]
    except (ValueError, KeyError) as exc:
        raise ModelError(f"{pointer}: cannot parse checkpoint pointer ({exc})") from exc
    path = pointer.parent / name
    if not (path / "meta.json").is_file():
        raise ModelError(f"{pointer}: points to {name!r}, which has no meta.json")
    return path


def load_checkpoint(path: Path, *, model: torch.nn.Module, optimizer: torch.optim.Optimizer | None) -> dict:
    """Load weights (strictly), optimizer and RNG states in place; return the meta dict."""
    path = Path(path)
    try:
        meta = json.loads((path / "meta.json").read_text())
        missing, unexpected = load_model(model, str(path / "model.safetensors"), strict=False)
        if missing or unexpected:
            raise ModelError(
                f"{path / 'model.safetensors'}: weights do not match the model "
                f"(missing {sorted(missing)[:5]}, unexpected {sorted(unexpected)[:5]})"
            )
        if optimizer is not None:
            info = json.loads((path / "optimizer.json").read_text())
            _optimizer_from_flat(optimizer, load_file(str(path / "optimizer.safetensors")), info)
        _restore_rng(load_file(str(path / "rng.safetensors")), meta)
    except (OSError, ValueError) as exc:
        raise ModelError(f"{path}: cannot load checkpoint ({exc})") from exc
    return meta
