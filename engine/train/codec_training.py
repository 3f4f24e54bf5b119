"""``aion-engine train codecs``: fit every codec a dataset needs and report reconstruction quality.

Stages, each saved to ``<run_dir>/codec-stages/`` when done so a crashed run resumes at the
first unfinished stage: scalar quantile tables (seconds) → image codec → spectrum codec.
Held-out objects (:mod:`engine.train.split`) are never trained on; the report measures them:
image χ²/pixel of the token round trip, spectrum R², scalar median relative error.
Finally the codecs are written to ``MODEL_DIR/codecs/<name>/`` (official layout, swapped in
with renames) and the report to ``MODEL_DIR/report/codecs.json`` plus example PNGs.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from engine.data.store import open_dataset
from engine.errors import DatasetError
from engine.model.codecs import CODECS_DIR, CodecSet, build_codecs, load_codec_folder
from engine.model.modalities import MODALITIES, spec
from engine.model.presets import ModelPreset
from engine.train import image_codec, scalar_codecs, spectrum_codec
from engine.train.checkpoint import write_json_atomic
from engine.train.pretrain import default_run_dir
from engine.train.schedule import lr_at
from engine.train.split import heldout_mask

log = logging.getLogger(__name__)

#: A modality with fewer training objects gets no codec (and so no place in the model).
MIN_TRAIN_OBJECTS = 4


@dataclass(frozen=True)
class CodecTrainConfig:
    image_steps: int = 300
    spectrum_steps: int = 200
    batch_size: int = 16
    lr: float = 2e-3
    warmup: int = 30
    weight_decay: float = 1e-4
    grad_clip: float = 1.0
    seed: int = 0
    eval_objects: int = 256  # held-out objects per modality in the report


def present_token_keys(dataset) -> list[str]:
    """Token keys of the registry that at least one object of the dataset has."""
    cat = dataset.catalog
    keys = []
    for key, sp in MODALITIES.items():
        if sp.kind != "scalar" and not dataset.has_source(sp.source):
            continue
        if sp.present_in(cat).any():
            keys.append(key)
    return keys


def ids_with(dataset, token_key: str, *, heldout: bool) -> np.ndarray:
    cat = dataset.catalog
    present = spec(token_key).present_in(cat)
    ids = cat["object_id"].to_numpy()
    return ids[present & (heldout_mask(ids) == heldout)]


def fit(
    module: torch.nn.Module,
    loss_fn: Callable[[object], tuple[torch.Tensor, dict[str, float]]],
    batches: Iterator,
    *,
    steps: int,
    config: CodecTrainConfig,
    desc: str,
    device: torch.device,
    to_device: Callable[[object, torch.device], object],
) -> list[dict]:
    """AdamW + warmup/cosine + grad clipping over ``steps`` batches; returns the per-step history."""
    module.train().to(device)
    params = [p for p in module.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=config.lr, betas=(0.9, 0.95), weight_decay=config.weight_decay)
    history = []
    bar = tqdm(range(steps), desc=desc, unit="step", dynamic_ncols=True)
    for step in bar:
        lr = lr_at(step, peak=config.lr, warmup=config.warmup, total=steps)
        for g in opt.param_groups:
            g["lr"] = lr
        batch = to_device(next(batches), device)
        loss, stats = loss_fn(batch)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"{desc}: loss is {float(loss)} at step {step}; lower --lr (now {config.lr})")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        gnorm = torch.nn.utils.clip_grad_norm_(params, config.grad_clip)
        opt.step()
        history.append({"step": step, "loss": float(loss.detach()), "lr": lr, "grad_norm": float(gnorm), **stats})
        bar.set_postfix(loss=f"{history[-1]['loss']:.4g}")
    module.eval()
    return history


def _image_to(batch: image_codec.ImageBatch, device) -> image_codec.ImageBatch:
    return image_codec.ImageBatch(batch.flux.to(device), batch.ivar.to(device), batch.bands)


def _spectrum_to(s, device):
    from engine.model.modalities import modality_to

    return modality_to(s, device)


class _Stages:
    """Per-stage results in ``<run_dir>/codec-stages/<name>/`` (official codec folder + history.json)."""

    def __init__(self, run_dir: Path, resume: bool):
        self.root = Path(run_dir) / "codec-stages"
        if not resume and self.root.exists():
            shutil.rmtree(self.root)
        self.root.mkdir(parents=True, exist_ok=True)

    def done(self, name: str) -> bool:
        return (self.root / name / "history.json").is_file()

    def save(self, name: str, codecs: CodecSet, history: list[dict]) -> None:
        tmp = self.root / f".{name}.tmp-{uuid.uuid4().hex[:8]}"
        CodecSet({k: c for k, c in codecs.codecs.items() if spec(k).codec_name == name}, codecs.configs).save(tmp)
        (tmp / CODECS_DIR / name / "history.json").write_text(json.dumps(history))
        final = self.root / name
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp / CODECS_DIR / name, final)
        shutil.rmtree(tmp, ignore_errors=True)

    def load(self, name: str, codecs: CodecSet) -> list[dict]:
        key = next(k for k in codecs.token_keys if spec(k).codec_name == name)
        codec, _ = load_codec_folder(self.root / name, key)
        target = codecs[key]
        target.load_state_dict(codec.state_dict(), strict=True)
        if hasattr(codec.quantizer, "_generate_index_to_val"):
            target.quantizer._index_to_val = codec.quantizer._index_to_val.clone()
        return json.loads((self.root / name / "history.json").read_text())


def train_codecs(
    dataset_dir: str | os.PathLike,
    model_dir: str | os.PathLike,
    preset: ModelPreset,
    *,
    config: CodecTrainConfig = CodecTrainConfig(),
    token_keys: list[str] | None = None,
    run_dir: str | os.PathLike | None = None,
    resume: bool = False,
    device: str | None = None,
) -> dict:
    """Fit all codecs for ``dataset_dir`` at ``preset`` sizes, write them into ``model_dir``; return the report."""
    t0 = time.time()
    torch.manual_seed(config.seed)
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    ds = open_dataset(dataset_dir)
    model_dir = Path(model_dir)
    run_dir = Path(run_dir) if run_dir else default_run_dir(model_dir)
    keys = token_keys or present_token_keys(ds)
    if not keys:
        raise DatasetError(f"{ds.root}: no modality of the registry is present; accepted: {list(MODALITIES)}")
    skipped = {k: n for k in keys if (n := len(ids_with(ds, k, heldout=False))) < MIN_TRAIN_OBJECTS}
    keys = [k for k in keys if k not in skipped]
    if not keys:
        raise DatasetError(f"{ds.root}: every modality has fewer than {MIN_TRAIN_OBJECTS} training objects: {skipped}")
    codecs = build_codecs(preset, keys)
    stages = _Stages(run_dir, resume)
    histories: dict[str, list[dict]] = {}
    report: dict = {"dataset": str(ds.root), "dataset_hash": ds.info.get("hash"), "preset": preset.name,
                    "config": asdict(config), "token_keys": keys, "codecs": {},
                    "skipped_too_few_training_objects": skipped}

    # 1. scalar quantile tables -------------------------------------------------------------
    scalar_keys = [k for k in keys if scalar_codecs.is_scalar_key(k)]
    for key in tqdm(scalar_keys, desc="scalar codecs", unit="codec", dynamic_ncols=True):
        codec = codecs[key]
        train_ids = ids_with(ds, key, heldout=False)
        scalar_codecs.fill_scalar_codec(codec, scalar_codecs.scalar_values(ds, key, train_ids), key)
        held = ids_with(ds, key, heldout=True)[: config.eval_objects * 4]
        if len(held):
            values = scalar_codecs.scalar_values(ds, key, held)
            report["codecs"][key] = {"kind": spec(key).kind, "codec": type(codec).__name__,
                                     **scalar_codecs.heldout_errors(codec, values)}

    # 2. image codec ------------------------------------------------------------------------
    image_keys = [k for k in keys if spec(k).kind == "image"]
    if image_keys:
        name = spec(image_keys[0]).codec_name
        codec = codecs[image_keys[0]]
        if resume and stages.done(name):
            histories[name] = stages.load(name, codecs)
        else:
            train_ids = {spec(k).source: ids_with(ds, k, heldout=False) for k in image_keys}
            stream = image_codec.batch_stream(ds, train_ids, config.batch_size, np.random.default_rng(config.seed))
            histories[name] = fit(codec, lambda b: image_codec.loss(codec, b), stream, steps=config.image_steps,
                                  config=config, desc="image codec", device=dev, to_device=_image_to)
            stages.save(name, codecs, histories[name])
        codec.to(dev).eval()
        for key in image_keys:
            held = ids_with(ds, key, heldout=True)[: config.eval_objects]
            if not len(held):
                continue
            batch = _image_to(image_codec.read_images(ds, spec(key).source, held), dev)
            chi2 = image_codec.chi2_per_pixel(codec, batch)
            untrained = image_codec.chi2_per_pixel(build_codecs(preset, [key])[key].to(dev).eval(), batch)
            report["codecs"][key] = {"kind": "image", "codec": "ImageCodec", "n": len(held),
                                     "chi2_per_pixel_median": float(np.median(chi2)),
                                     "chi2_per_pixel_mean": float(np.mean(chi2)),
                                     "untrained_chi2_per_pixel_median": float(np.median(untrained))}

    # 3. spectrum codec ---------------------------------------------------------------------
    spec_keys = [k for k in keys if spec(k).kind == "spectrum"]
    if spec_keys:
        name = spec(spec_keys[0]).codec_name
        codec = codecs[spec_keys[0]]
        if resume and stages.done(name):
            histories[name] = stages.load(name, codecs)
        else:
            train_ids = {k: ids_with(ds, k, heldout=False) for k in spec_keys}
            stream = spectrum_codec.batch_stream(ds, train_ids, config.batch_size,
                                                 np.random.default_rng([config.seed, 2]))
            histories[name] = fit(codec, lambda s: spectrum_codec.loss(codec, s), stream,
                                  steps=config.spectrum_steps, config=config, desc="spectrum codec",
                                  device=dev, to_device=_spectrum_to)
            stages.save(name, codecs, histories[name])
        codec.to(dev).eval()
        for key in spec_keys:
            held = ids_with(ds, key, heldout=True)[: config.eval_objects]
            if not len(held):
                continue
            s = _spectrum_to(spectrum_codec.read_spectra(ds, key, held), dev)
            q = spectrum_codec.roundtrip_quality(codec, s)
            report["codecs"][key] = {"kind": "spectrum", "codec": "SpectrumCodec", "n": len(held),
                                     "r2_median": float(np.median(q["r2"])), "r2_mean": float(np.mean(q["r2"])),
                                     "r2_noise_ceiling_median": float(np.median(q["r2_noise_ceiling"])),
                                     "chi2_per_pixel_median": float(np.median(q["chi2"]))}

    for name, hist in histories.items():
        first, last = hist[: max(1, len(hist) // 20)], hist[-max(1, len(hist) // 20):]
        report.setdefault("training", {})[name] = {
            "steps": len(hist),
            "loss_first_5pct": float(np.mean([h["loss"] for h in first])),
            "loss_last_5pct": float(np.mean([h["loss"] for h in last])),
        }
    report["seconds"] = round(time.time() - t0, 1)
    codecs.to("cpu")
    _install_codecs(codecs, model_dir)
    report_dir = model_dir / "report"
    report_dir.mkdir(parents=True, exist_ok=True)
    for name, hist in histories.items():
        write_json_atomic(report_dir / f"codec_{name}_history.json", hist)
    write_json_atomic(report_dir / "codecs.json", report)
    try:
        from engine.train import plots

        plots.codec_report_pngs(ds, codecs, histories, report_dir)
    except Exception as exc:  # plots are a convenience; the JSON report is the record
        log.warning("codec report plots failed: %s", exc)
        report["plots_error"] = str(exc)
    return report


def _install_codecs(codecs: CodecSet, model_dir: Path) -> None:
    """Write the codecs beside the model folder and swap them in with renames (never a half folder)."""
    model_dir.mkdir(parents=True, exist_ok=True)
    tmp = model_dir / f".codecs.tmp-{uuid.uuid4().hex[:8]}"
    codecs.save(tmp)
    final = model_dir / CODECS_DIR
    trash = model_dir / f".codecs.old-{uuid.uuid4().hex[:8]}"
    if final.exists():
        os.replace(final, trash)
    os.replace(tmp / CODECS_DIR, final)
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.rmtree(trash, ignore_errors=True)
