"""``aion-engine train model``: masked multimodal pretraining of an AION transformer (4M objective).

One script for one process and for ``torchrun`` (DDP: NCCL on GPU, gloo on CPU). Read top to
bottom: tokens are cached once; each step takes a deterministic slice of a per-epoch
permutation (rank r takes the r-th part of the global batch), draws AION-1 masks with exact
budgets (:mod:`engine.train.masking`), runs ``FourM.forward`` under bf16 autocast on GPU, clips
gradients and steps AdamW (0.9, 0.95, wd 0.05) on a warmup + cosine schedule.

Everything random in a step is seeded from (seed, step, rank) — the batch, the masks, and the
Python ``random`` the 4M decoder uses to shuffle modalities — and the checkpoint holds weights,
optimizer and RNG states plus the step, so a run killed at any point and resumed with
``--resume`` ends with bit-identical weights (tested). Rank 0 writes checkpoints, metrics
(JSONL), the loss-curve PNG and finally the model folder.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import random
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from aion.fourm.fm import FourM
from tqdm.auto import tqdm

from engine.data.store import open_dataset
from engine.errors import ModelError
from engine.model.codecs import CodecSet
from engine.model.loading import build_model, save_model
from engine.model.modalities import MODALITIES
from engine.model.presets import ModelPreset
from engine.train import distributed, tokens
from engine.train.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint, write_json_atomic
from engine.train.masking import MaskingConfig, build_mod_dict, sample_masks
from engine.train.ordinal_init import INIT_CHOICES, init_scalar_embeddings
from engine.train.ordinal_loss import masked_modeling_loss
from engine.train.schedule import lr_at
from engine.train.smooth_rows import ROW_CHOICES, materialize, smooth_scalar_rows
from engine.train.split import heldout_mask

log = logging.getLogger(__name__)

SAVE_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}

#: Config keys that must match for a resume to be exact.
_RESUME_KEYS = ("batch_size", "seed", "max_steps", "lr", "warmup", "weight_decay", "input_tokens",
                "target_tokens", "grad_clip", "scalar_init", "scalar_rows", "scalar_inputs_only", "scalar_sigma",
                "init_from", "freeze_encoder", "readout_draws", "copy_draws")


@dataclass(frozen=True)
class PretrainConfig:
    max_steps: int = 2000
    batch_size: int = 32  # per rank
    lr: float = 1e-3
    warmup: int = 100
    weight_decay: float = 0.05
    grad_clip: float = 1.0
    seed: int = 0
    input_tokens: int | None = None  # default: the preset's
    target_tokens: int | None = None
    checkpoint_every: int = 250
    log_every: int = 10
    eval_batches: int = 8  # held-out batches in the final report (x batch_size objects)
    scalar_init: str = "ordinal"  # scalar token rows: smooth over bins, or official random (ordinal_init.py)
    scalar_rows: str = "free"  # scalar rows trained one by one, or through a smooth basis over bins (smooth_rows.py)
    scalar_inputs_only: float = 0.3  # share of examples whose inputs are one-token modalities only (masking.py)
    scalar_sigma: float = 0.0  # scalar targets smoothed over this many bins (ordinal_loss.py); 0 = official CE
    # decoder refinement (a second stage, docs/training.md): start from a trained model folder's
    # transformer, keep its encoder fixed, and ask for the one-token modalities more often
    init_from: str | None = None  # model folder whose transformer weights the run starts from
    freeze_encoder: bool = False  # encoder embeddings, blocks and norm fixed: embeddings stay bit-identical
    readout_draws: float = 0.0  # share of read-out draws: whole scalars shown or asked for (masking.py)
    copy_draws: float = 0.0  # share of copy draws: the shown scalars are the targets (masking.py)

    def __post_init__(self) -> None:
        if self.scalar_init not in INIT_CHOICES:
            raise ModelError(f"scalar_init {self.scalar_init!r} not known; accepted: {', '.join(INIT_CHOICES)}")
        if self.scalar_rows not in ROW_CHOICES:
            raise ModelError(f"scalar_rows {self.scalar_rows!r} not known; accepted: {', '.join(ROW_CHOICES)}")
        if self.scalar_rows == "smooth" and self.init_from:
            raise ModelError("scalar_rows='smooth' would project the trained rows of init_from onto its basis; "
                             "use it for runs from scratch")
        if not self.scalar_sigma >= 0:
            raise ModelError(f"scalar_sigma must be >= 0 bins (0 = the official loss), got {self.scalar_sigma!r}")
        try:  # the sampler's own check of its probabilities, as a ModelError at configuration time
            MaskingConfig(1, 1, scalar_inputs_only=self.scalar_inputs_only, readout_draws=self.readout_draws,
                          copy_draws=self.copy_draws)
        except ValueError as exc:
            raise ModelError(str(exc)) from None


class MaskedModelingObjective(torch.nn.Module):
    """Wraps an ``aion.AION`` so DDP hooks see the *training* forward.

    ``AION.forward`` is inference-only; the 4M loss is ``FourM.forward``. Calling it on the raw
    model would bypass DDP's gradient sync, so DDP wraps this module instead.
    """

    def __init__(self, model: torch.nn.Module, num_encoder_tokens: int, num_decoder_tokens: int,
                 scalar_sigma: float = 0.0):
        super().__init__()
        self.model = model
        self.num_encoder_tokens = num_encoder_tokens
        self.num_decoder_tokens = num_decoder_tokens
        self.scalar_sigma = scalar_sigma

    def forward(self, mod_dict):
        if self.scalar_sigma > 0:
            return masked_modeling_loss(self.model, mod_dict, self.num_encoder_tokens, self.num_decoder_tokens,
                                        self.scalar_sigma)
        return FourM.forward(self.model, mod_dict, self.num_encoder_tokens, self.num_decoder_tokens)


ENCODER_PREFIX = "encoder"  # encoder_embeddings.*, encoder.* (blocks), encoder_norm.* in aion.AION


def start_weights(raw: torch.nn.Module, model_dir: Path, config: dict | None = None) -> None:
    """Copy a trained model folder's transformer weights into ``raw`` (same preset and modalities);
    ``config``: its ``config.json``, when already read."""
    from engine.model.loading import load_transformer

    trained = load_transformer(model_dir, config).float().state_dict()
    mine = raw.state_dict()
    missing, extra = sorted(set(mine) - set(trained)), sorted(set(trained) - set(mine))
    shapes = sorted(k for k in set(mine) & set(trained) if mine[k].shape != trained[k].shape)
    if missing or extra or shapes:
        raise ModelError(
            f"--init-from {model_dir}: its transformer does not match this run's preset and modalities "
            f"(missing {missing[:5]}, unexpected {extra[:5]}, other shapes {shapes[:5]}); pass the same "
            "--preset and --exclude-modalities it was trained with"
        )
    raw.load_state_dict(trained, strict=True)


def default_run_dir(model_dir: Path, stage: str = "pretrain") -> Path:
    """``runs/<model name>/`` beside the project (git-ignored): checkpoints, token cache, metrics;
    ``runs/<model name>-refine/`` for a refinement, so it never meets the pretraining's checkpoints."""
    from engine.paths import PROJECT_ROOT

    name = Path(model_dir).resolve().name
    return PROJECT_ROOT / "runs" / (name if stage == "pretrain" else f"{name}-{stage}")


def batch_rows(train_rows: np.ndarray, step: int, batch_size: int, info: distributed.DistInfo, seed: int):
    """This rank's rows for ``step``: a slice of epoch e's permutation; also the (epoch, offset)."""
    global_batch = batch_size * info.world_size
    per_epoch = max(1, len(train_rows) // global_batch)
    epoch, pos = divmod(step, per_epoch)
    order = np.random.default_rng([seed, epoch]).permutation(train_rows)
    start = pos * global_batch + info.rank * batch_size
    rows = order[start : start + batch_size]
    if len(rows) < batch_size:  # fewer objects than one global batch: wrap around
        rows = np.resize(order, start + batch_size)[start:]
    return rows, {"epoch": int(epoch), "offset": int(pos * global_batch)}


def make_batch(table: tokens.TokenTable, rows: np.ndarray, masking: MaskingConfig, rng: np.random.Generator, device):
    toks = {k: torch.from_numpy(table.tokens[k][rows].astype(np.int64)) for k in table.keys}
    present = {k: table.present[k][rows] for k in table.keys}
    in_mask, tgt_mask = sample_masks(table.counts, present, masking, rng)
    return build_mod_dict(toks, in_mask, tgt_mask, device)


def _param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """Weight decay on matrices only; not on biases, norms, position / modality embeddings, mask tokens."""
    skip = set(model.no_weight_decay()) if hasattr(model, "no_weight_decay") else set()
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim < 2 or name in skip or any(name.endswith(s) for s in skip) else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def params_digest(model: torch.nn.Module) -> str:
    """sha256 of every parameter's bytes, in name order: equal digests = identical weights."""
    import hashlib

    h = hashlib.sha256()
    for name, p in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(p.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes() if p.numel() else b"")
    return h.hexdigest()


def pretrain(
    dataset_dir: str | os.PathLike,
    model_dir: str | os.PathLike,
    preset: ModelPreset,
    config: PretrainConfig = PretrainConfig(),
    *,
    run_dir: str | os.PathLike | None = None,
    resume: bool = False,
    restart: bool = False,
    device: str | None = None,
    callbacks: Sequence[Callable[[int, dict], None]] = (),
    evaluate: bool = True,
    exclude_keys: Sequence[str] = (),
    save_dtype: str = "float32",
) -> dict:
    """Pretrain on ``dataset_dir`` with the codecs in ``model_dir``; write the model folder there.

    ``callbacks`` are called as ``fn(step, record)`` after every optimizer step on every rank
    (progress hooks; an exception stops the run like a crash would). ``exclude_keys``: modalities
    left out of the model (e.g. redundant catalogue columns, to keep a small model small).
    ``save_dtype``: dtype of the saved weights (float16 halves the folder; loading casts back).
    Returns the run summary.
    """
    if save_dtype not in SAVE_DTYPES:
        raise ModelError(f"save dtype {save_dtype!r} not supported; accepted: {', '.join(SAVE_DTYPES)}")
    unknown = [k for k in exclude_keys if k not in MODALITIES]
    if unknown:
        raise ModelError(f"cannot exclude unknown modality {unknown}; accepted: {', '.join(MODALITIES)}")
    info = distributed.setup(device)
    model_dir = Path(model_dir)
    stage = _stage(config)
    run_dir = Path(run_dir) if run_dir else default_run_dir(model_dir, stage)
    n_in = config.input_tokens or preset.input_tokens
    n_tgt = config.target_tokens or preset.target_tokens
    masking = MaskingConfig(input_budget=n_in, target_budget=n_tgt, scalar_inputs_only=config.scalar_inputs_only,
                            readout_draws=config.readout_draws, copy_draws=config.copy_draws)
    init_from = str(Path(config.init_from).resolve()) if config.init_from else None
    init_config = None
    if init_from:
        from engine.model.loading import read_config

        init_config = read_config(Path(init_from))  # a missing or broken start model fails now, not after tokenizing
    run_config = {**asdict(config), "init_from": init_from, "input_tokens": n_in, "target_tokens": n_tgt, "preset": preset.name,
                  "exclude_keys": sorted(exclude_keys), "save_dtype": save_dtype}

    ds = open_dataset(dataset_dir)
    codecs = CodecSet.load(model_dir)
    from engine.train.codec_training import present_token_keys

    keys = [k for k in present_token_keys(ds) if k in codecs and k not in set(exclude_keys)]
    codecs = CodecSet({k: codecs[k] for k in keys}, codecs.configs)
    if not keys:
        raise ModelError(f"{model_dir}: its codecs cover none of the modalities of {ds.root}")

    # --- run folder: fresh, restart or resume ----------------------------------------------
    ckpt = latest_checkpoint(run_dir)
    if ckpt is not None and not resume and not restart:
        raise ModelError(
            f"{run_dir}: has a checkpoint ({ckpt.name}); pass --resume to continue it or --restart to discard it"
        )
    if info.is_main:
        if restart and run_dir.exists():
            for sub in ("checkpoints", "metrics.jsonl"):
                path = run_dir / sub
                shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)
            ckpt = None
        run_dir.mkdir(parents=True, exist_ok=True)
        table = tokens.load_or_build(ds, model_dir, codecs, keys, run_dir / "cache")
    distributed.barrier(info)
    if not info.is_main:
        table = tokens.load_or_build(ds, model_dir, codecs, keys, run_dir / "cache", build=False)
        ckpt = None if restart else latest_checkpoint(run_dir)

    held = heldout_mask(table.object_ids)
    train_rows, val_rows = np.flatnonzero(~held), np.flatnonzero(held)

    # --- model, optimizer, resume -------------------------------------------------------------
    torch.manual_seed(config.seed)
    raw = build_model(preset, keys)
    if init_from:
        start_weights(raw, Path(init_from), init_config)
    elif config.scalar_init == "ordinal":
        init_scalar_embeddings(raw, seed=config.seed)
    if config.scalar_rows == "smooth":
        smooth_scalar_rows(raw)
    if config.freeze_encoder:
        for name, p in raw.named_parameters():
            if name.startswith(ENCODER_PREFIX):
                p.requires_grad_(False)
    raw = raw.to(info.device)
    objective = MaskedModelingObjective(raw, n_in, n_tgt, config.scalar_sigma).to(info.device)
    opt = torch.optim.AdamW(_param_groups(raw, config.weight_decay), lr=config.lr, betas=(0.9, 0.95),
                            fused=info.device.type == "cuda")
    start = 0
    if resume and ckpt is not None:
        meta = load_checkpoint(ckpt, model=raw, optimizer=opt)
        defaults = asdict(PretrainConfig())  # a key newer than the checkpoint had its default then
        changed = {k: (meta["config"].get(k, defaults.get(k)), run_config[k]) for k in _RESUME_KEYS
                   if meta["config"].get(k, defaults.get(k)) != run_config[k]}
        if changed or meta.get("world_size") != info.world_size:
            raise ModelError(f"{ckpt}: cannot resume exactly, settings changed {changed} "
                             f"(world size {meta.get('world_size')} -> {info.world_size}); use --restart")
        start = int(meta["step"])
    model = objective
    if info.enabled:
        from torch.nn.parallel import DistributedDataParallel as DDP

        model = DDP(objective, device_ids=[info.device.index] if info.device.type == "cuda" else None,
                    find_unused_parameters=True)  # modalities without targets in a step leave heads unused

    # --- loop -------------------------------------------------------------------------------------
    metrics_path = run_dir / "metrics.jsonl"
    autocast = torch.autocast(device_type=info.device.type, dtype=torch.bfloat16, enabled=info.device.type == "cuda")
    bar = tqdm(range(start, config.max_steps), initial=start, total=config.max_steps, desc="pretrain",
               unit="step", disable=not info.is_main, dynamic_ncols=True)
    t_last, n_since = time.time(), 0
    model.train()
    position = {"epoch": 0, "offset": 0}
    for step in bar:
        lr = lr_at(step, peak=config.lr, warmup=config.warmup, total=config.max_steps)
        for g in opt.param_groups:
            g["lr"] = lr
        rows, position = batch_rows(train_rows, step, config.batch_size, info, config.seed)
        rng = np.random.default_rng([config.seed, step, info.rank, 1])
        random.seed(hash((config.seed, step, info.rank)))  # 4M shuffles decoder modalities with `random`
        mod_dict = make_batch(table, rows, masking, rng, info.device)
        with autocast:
            loss, mod_loss = model(mod_dict)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        gnorm = torch.nn.utils.clip_grad_norm_(raw.parameters(), config.grad_clip)
        opt.step()
        n_since += len(rows) * info.world_size
        record = {"step": step + 1, "loss": float(loss.detach()), "lr": lr, "grad_norm": float(gnorm)}
        if (step + 1) % config.log_every == 0 or step + 1 == config.max_steps:
            record["loss"] = distributed.mean_across_ranks(info, record["loss"])
            now = time.time()
            record["samples_per_s"] = n_since / max(now - t_last, 1e-9)
            t_last, n_since = now, 0
            record["mod_loss"] = {k: float(v.detach()) for k, v in mod_loss.items()}
            if info.is_main:
                with open(metrics_path, "a") as f:
                    f.write(json.dumps(record) + "\n")
            bar.set_postfix(loss=f"{record['loss']:.3f}")
        for fn in callbacks:
            fn(step + 1, record)
        if (step + 1) % config.checkpoint_every == 0 or step + 1 == config.max_steps:
            nxt = batch_rows(train_rows, step + 1, config.batch_size, info, config.seed)[1]
            if info.is_main:
                save_checkpoint(run_dir, step=step + 1, model=raw, optimizer=opt,
                                meta={"config": run_config, "world_size": info.world_size, "data_position": nxt,
                                      "token_keys": keys, "dataset": str(ds.root)})
            distributed.barrier(info)
    bar.close()

    # --- results ------------------------------------------------------------------------------------
    materialize(raw)  # official plain rows (a no-op for free rows), so the digests describe the saved weights
    digests = distributed.all_gather_objects(info, params_digest(raw))
    summary = {"steps": config.max_steps, "resumed_from": start, "world_size": info.world_size,
               "rank_param_digests": digests, "config": run_config, "token_keys": keys,
               "n_train": int(len(train_rows)), "n_heldout": int(len(val_rows))}
    if info.is_main:
        raw.eval()
        if evaluate:
            from engine.train import metrics

            # held-out masks from the default sampler, so runs with read-out/copy draws compare like for like
            eval_masking = dataclasses.replace(masking, readout_draws=0.0, copy_draws=0.0)
            summary["evaluation"] = metrics.evaluate(raw, codecs, table, ds, val_rows, train_rows, eval_masking,
                                                     batch_size=config.batch_size, n_batches=config.eval_batches,
                                                     seed=config.seed, device=info.device)
        write_json_atomic(run_dir / "summary.json", summary)
        report_dir = run_dir / "report"
        report_dir.mkdir(exist_ok=True)
        try:
            from engine.train import plots

            plots.loss_curve(metrics_path, report_dir / f"{stage}_loss.png")
        except Exception as exc:  # the JSONL is the record; the PNG is a convenience
            log.warning("loss curve plot failed: %s", exc)
        _install_model(model_dir, raw.cpu().to(SAVE_DTYPES[save_dtype]), codecs, summary, preset, run_dir,
                       stage)
    distributed.barrier(info)
    del model  # the DDP reducer must not hold the process group's last reference (see teardown)
    distributed.teardown(info)
    return summary


def _stage(config: PretrainConfig) -> str:
    """Report name: ``pretrain`` for a run from scratch, ``refine`` for one started from a trained model."""
    return "refine" if config.init_from else "pretrain"


def _install_model(model_dir: Path, raw, codecs: CodecSet, summary: dict, preset: ModelPreset, run_dir: Path,
                   stage: str = "pretrain") -> None:
    """Write the model folder atomically, keeping the codec report (and, for a refinement, the
    pretraining report) and adding this run's."""
    keep = {}
    old_report = model_dir / "report"
    if old_report.is_dir():
        keep = {p.name: p.read_bytes() for p in old_report.iterdir() if p.is_file()}
    old_top = {}
    if stage == "refine" and (model_dir / "report.json").is_file():
        old_top = json.loads((model_dir / "report.json").read_text())
    training = {k: v for k, v in summary.items() if k != "evaluation"}
    meta = {"preset": preset.to_dict(), "training": training, "evaluation": summary.get("evaluation", {})}
    save_model(model_dir, raw, codecs, meta)
    new_report = model_dir / "report"
    new_report.mkdir(exist_ok=True)
    for name, data in keep.items():
        (new_report / name).write_bytes(data)
    for path in (run_dir / "report").glob("*"):
        shutil.copy2(path, new_report / path.name)
    write_json_atomic(new_report / f"{stage}.json", summary)
    codec_report = json.loads(keep["codecs.json"]) if "codecs.json" in keep else {}
    top = {"codecs": codec_report.get("codecs", {}), "codec_training": codec_report.get("training", {}),
           "pretraining": training}
    if stage == "refine":
        top["pretraining"] = old_top.get("pretraining", {})
        top["pretraining_evaluation"] = old_top.get("evaluation", {})
        top["refinement"] = training
    top["evaluation"] = summary.get("evaluation", {})
    write_json_atomic(model_dir / "report.json", top)
