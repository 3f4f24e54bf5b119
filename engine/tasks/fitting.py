"""One small training loop for every head and baseline: AdamW + cosine, best-on-validation.

Heads are tiny and inputs are precomputed, so the loop is plain: shuffle with a seeded
generator, keep the weights of the epoch with the lowest validation loss (early stopping
without a patience knob), and show a tqdm bar. Saving writes safetensors + JSON atomically.
"""

from __future__ import annotations

import copy
import json
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn
from tqdm.auto import tqdm

from engine.errors import ModelError
from engine.tasks.augment import N_VIEWS, view_epochs


@dataclass(frozen=True)
class FitConfig:
    epochs: int = 30
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 1e-4
    seed: int = 0
    progress: bool = True


def _batch(arrays: Sequence[torch.Tensor], idx: torch.Tensor) -> list[torch.Tensor]:
    out = []
    for a in arrays:
        b = a[idx]
        out.append(b.float() if b.is_floating_point() else b)
    return out


def fit(
    model: nn.Module,
    inputs: Sequence[torch.Tensor],
    target: torch.Tensor,
    val_inputs: Sequence[torch.Tensor],
    val_target: torch.Tensor,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    config: FitConfig,
    desc: str = "fit",
    views: Callable[[torch.Tensor, torch.Tensor], tuple[list[torch.Tensor], torch.Tensor]] | None = None,
) -> dict:
    """Train ``model(*inputs) -> prediction`` against ``target``; restore the best-validation weights.

    Inputs may be stored float16 (the token caches); each batch is cast to float32.
    ``views`` (:mod:`engine.tasks.augment`) gives each training example in each of the eight dihedral
    views of its cutout: ``views(idx, view)`` returns that batch's inputs and target, and an epoch is
    a pass over every (example, view) pair; ``config.epochs`` is then the budget as if without views,
    and :func:`~engine.tasks.augment.view_epochs` of it are run. Validation always sees the examples
    as observed. Returns a small history dict (epochs run, best epoch, losses) for the results JSON.
    """
    n_examples = len(target)
    if n_examples == 0:
        raise ValueError(f"{desc}: no training examples")
    n_views = N_VIEWS if views is not None else 1
    epochs = view_epochs(config.epochs) if views is not None else config.epochs
    n = n_examples * n_views
    gen = torch.Generator().manual_seed(config.seed)
    torch.manual_seed(config.seed)
    opt = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    steps_per_epoch = math.ceil(n / config.batch_size)
    total = max(1, epochs * steps_per_epoch)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, total) / total)))
    best = (math.inf, -1, copy.deepcopy(model.state_dict()))
    history = {"epochs": epochs, "train_loss": [], "val_loss": []}
    bar = tqdm(range(epochs), desc=desc, disable=not config.progress, leave=False)
    for epoch in bar:
        model.train()
        perm = torch.randperm(n, generator=gen)
        running = 0.0
        for start in range(0, n, config.batch_size):
            idx = perm[start : start + config.batch_size]
            if views is None:
                *xb, yb = _batch([*inputs, target], idx)
            else:
                xb, yb = views(idx % n_examples, idx // n_examples)
            loss = loss_fn(model(*xb), yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            running += loss.item() * len(idx)
        val = evaluate_loss(model, val_inputs, val_target, loss_fn, config.batch_size) if len(val_target) else math.nan
        history["train_loss"].append(running / n)
        history["val_loss"].append(val)
        score = val if not math.isnan(val) else running / n
        if score < best[0]:
            best = (score, epoch, copy.deepcopy(model.state_dict()))
        bar.set_postfix(train=f"{running / n:.4f}", val=f"{val:.4f}")
    model.load_state_dict(best[2])
    model.eval()
    history["best_epoch"] = best[1]
    return history


@torch.no_grad()
def evaluate_loss(model, inputs, target, loss_fn, batch_size: int = 256) -> float:
    model.eval()
    total, n = 0.0, len(target)
    for start in range(0, n, batch_size):
        idx = torch.arange(start, min(n, start + batch_size))
        *xb, yb = _batch([*inputs, target], idx)
        total += float(loss_fn(model(*xb), yb)) * len(idx)
    return total / max(n, 1)


@torch.no_grad()
def predict(model: nn.Module, inputs: Sequence[torch.Tensor], batch_size: int = 256) -> torch.Tensor:
    """Model outputs over all rows, batched, in eval mode (float32)."""
    model.eval()
    n = len(inputs[0])
    outs = [model(*_batch(inputs, torch.arange(s, min(n, s + batch_size)))) for s in range(0, n, batch_size)]
    return torch.cat(outs) if outs else torch.empty(0)


def masked_mse(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """MSE over finite targets only (stars lack galaxy targets and the other way round)."""
    ok = torch.isfinite(target)
    if not ok.any():
        return pred.sum() * 0.0
    return ((pred - torch.nan_to_num(target)) ** 2)[ok].mean()


# --- persistence -------------------------------------------------------------------


def save_head(stem: Path, module: nn.Module, meta: dict) -> None:
    """Write ``stem.safetensors`` + ``stem.json`` (config, normalisation, metrics) atomically."""
    stem.parent.mkdir(parents=True, exist_ok=True)
    weights = stem.with_suffix(".safetensors")
    info = stem.with_suffix(".json")
    tmp_w = weights.with_name(weights.name + f".tmp{os.getpid()}")
    tmp_i = info.with_name(info.name + f".tmp{os.getpid()}")
    save_file({k: v.detach().contiguous().cpu() for k, v in module.state_dict().items()}, str(tmp_w))
    tmp_i.write_text(json.dumps(meta, indent=2, default=_json_default))
    os.replace(tmp_w, weights)
    os.replace(tmp_i, info)


def load_head(stem: Path, build: Callable[[dict], nn.Module]) -> tuple[nn.Module, dict]:
    """Rebuild a head from its JSON (via ``build``) and load its safetensors strictly."""
    weights, info = stem.with_suffix(".safetensors"), stem.with_suffix(".json")
    for path in (weights, info):
        if not path.is_file():
            raise ModelError(f"{path}: missing trained head (run `aion-engine train probes` first)")
    try:
        meta = json.loads(info.read_text())
    except ValueError as exc:
        raise ModelError(f"{info}: cannot parse head config ({exc})") from exc
    module = build(meta)
    try:
        module.load_state_dict(load_file(str(weights)), strict=True)
    except (RuntimeError, OSError) as exc:
        raise ModelError(f"{weights}: weights do not match config {info.name} ({exc})") from exc
    module.eval()
    return module, meta


def _json_default(obj):
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")
