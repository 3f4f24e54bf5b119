"""``aion-engine train codecs|model|all|probes``: fit codecs, pretrain the transformer (torchrun-ready)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

HELP = "train codecs, pretrain an AION model (runs under torchrun unchanged), or probes"

WHATS = ("codecs", "model", "all", "probes")


def setup_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("what", choices=WHATS, help="codecs: tokenizers; model: masked pretraining; all: both")
    parser.add_argument("--dataset", required=True, help="dataset folder (see `aion-engine mock`)")
    parser.add_argument("--preset", default="nano",
                        help="model size: nano|small|base|large, or a JSON file of preset fields")
    parser.add_argument("--out", required=True, help="model folder to write (config.json, model.safetensors, codecs/)")
    parser.add_argument("--run-dir", default=None, help="checkpoints, token cache, metrics (default runs/<model name>)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=None, help="per process (default 32 model, 32 codecs)")
    parser.add_argument("--lr", type=float, default=None)
    parser.add_argument("--device", default=None, help="cpu|cuda (default: cuda when available)")
    parser.add_argument("--resume", action="store_true", help="continue from the run folder's last checkpoint/stage")
    parser.add_argument("--restart", action="store_true", help="discard the run folder's checkpoints and start over (probes: train every head again "
                             "instead of reusing the finished heads of a run with the same settings)")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    g = parser.add_argument_group("codecs")
    g.add_argument("--image-steps", type=int, default=None)
    g.add_argument("--spectrum-steps", type=int, default=None)
    g = parser.add_argument_group("model")
    g.add_argument("--max-steps", type=int, default=None)
    g.add_argument("--warmup", type=int, default=None)
    g.add_argument("--input-tokens", type=int, default=None, help="encoder token budget (default: preset)")
    g.add_argument("--target-tokens", type=int, default=None, help="decoder token budget (default: preset)")
    g.add_argument("--checkpoint-every", type=int, default=None)
    g.add_argument("--log-every", type=int, default=None)
    g.add_argument("--scalar-sigma", type=float, default=None,
                   help="smooth scalar targets over this many quantile bins (Gaussian; default 0 = official CE)")
    g.add_argument("--scalar-rows", default=None, choices=("free", "smooth"),
                   help="train scalar token rows one by one (default, official) or through a smooth basis over "
                        "the bins, saved as plain rows (smooth_rows.py)")
    g.add_argument("--init-from", default=None,
                   help="start from this trained model folder's transformer (a refinement stage) instead of fresh weights")
    g.add_argument("--freeze-encoder", action="store_true",
                   help="keep the encoder fixed (its embeddings, indexes and probes stay valid); train the decoder")
    g.add_argument("--readout-draws", type=float, default=None,
                   help="share of read-out draws: each one-token modality shown or asked for whole, beside part "
                        "of an image or spectrum (default 0)")
    g.add_argument("--copy-draws", type=float, default=None,
                   help="share of copy draws: the one-token modalities shown are also the targets (default 0)")
    g.add_argument("--no-eval", action="store_true", help="skip the held-out evaluation at the end")
    g.add_argument("--exclude-modalities", default="", help="comma-separated token keys to leave out of the model")
    g.add_argument("--save-dtype", default="float32", choices=("float32", "float16", "bfloat16"),
                   help="dtype of the saved weights (float16 halves the model folder)")


def _preset(value: str):
    from dataclasses import fields, replace

    from engine.errors import ValidationError
    from engine.model.presets import ModelPreset, get_preset

    path = Path(value)
    if not value.endswith(".json"):
        return get_preset(value)
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ValidationError(f"--preset {value!r}: cannot read JSON preset ({exc})") from exc
    if not isinstance(data, dict):
        raise ValidationError(f"{path}: expected a JSON object of preset fields, got {type(data).__name__}")
    base_name = data.pop("base", None)
    known = {f.name for f in fields(ModelPreset)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValidationError(f"{path}: unknown preset field(s) {unknown}; accepted: 'base' and {sorted(known)}")
    values = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}
    try:
        return replace(get_preset(base_name), **values) if base_name else ModelPreset(**values)
    except TypeError as exc:
        raise ValidationError(f"{path}: incomplete preset ({exc}); give 'base': 'nano' to start from a preset") from exc


def _given(args, **names) -> dict:
    return {field: getattr(args, attr) for field, attr in names.items() if getattr(args, attr) is not None}


def run_cli(args: argparse.Namespace) -> int:
    if args.what == "probes":
        from engine.tasks.probes import train_probes

        result = train_probes(args.dataset, args.out, seed=args.seed, reuse=not args.restart)
        if int(__import__("os").environ.get("RANK", "0")) == 0:
            print(json.dumps(result, indent=2, default=str) if args.json else f"probes trained for {args.out}")
        return 0
    if args.resume and args.restart:
        print("aion-engine train: error: --resume and --restart exclude each other", file=sys.stderr)
        return 2
    if args.what == "all" and args.init_from:
        print("aion-engine train: error: --init-from refines a trained model with `train model`; "
              "`train all` retrains its codecs first", file=sys.stderr)
        return 2
    preset = _preset(args.preset)
    summary: dict = {}
    if args.what in ("codecs", "all"):
        from engine.train.codec_training import CodecTrainConfig, train_codecs

        cfg = CodecTrainConfig(seed=args.seed, **_given(args, image_steps="image_steps", spectrum_steps="spectrum_steps",
                                                        batch_size="batch_size", lr="lr"))
        summary["codecs"] = train_codecs(args.dataset, args.out, preset, config=cfg, run_dir=args.run_dir,
                                         resume=args.resume, device=args.device)
    if args.what in ("model", "all"):
        from engine.train.pretrain import PretrainConfig, pretrain

        cfg = PretrainConfig(seed=args.seed, **_given(args, max_steps="max_steps", batch_size="batch_size", lr="lr",
                                                      warmup="warmup", input_tokens="input_tokens",
                                                      target_tokens="target_tokens",
                                                      checkpoint_every="checkpoint_every", log_every="log_every",
                                                      scalar_sigma="scalar_sigma", scalar_rows="scalar_rows",
                                                      init_from="init_from",
                                                      readout_draws="readout_draws", copy_draws="copy_draws"),
                           freeze_encoder=args.freeze_encoder)
        summary["model"] = pretrain(args.dataset, args.out, preset, cfg, run_dir=args.run_dir,
                                    resume=args.resume,
                                    # `all` retrains the codecs, so old checkpoints are stale unless resuming
                                    restart=args.restart or (args.what == "all" and not args.resume),
                                    device=args.device,
                                    evaluate=not args.no_eval, save_dtype=args.save_dtype,
                                    exclude_keys=[k for k in args.exclude_modalities.split(",") if k])
    import os

    if int(os.environ.get("RANK", "0")) == 0:
        if args.json:
            print(json.dumps(summary, indent=2, default=str))
        else:
            _print_summary(summary, args.out)
    return 0


def _print_summary(summary: dict, out: str) -> None:
    codecs = summary.get("codecs")
    if codecs:
        for key, r in codecs.get("codecs", {}).items():
            if r.get("kind") == "image":
                print(f"{key}: held-out chi2/pixel {r['chi2_per_pixel_median']:.3g} "
                      f"(untrained {r['untrained_chi2_per_pixel_median']:.3g})")
            elif r.get("kind") == "spectrum":
                print(f"{key}: held-out chi2/pixel {r['chi2_per_pixel_median']:.3g}, R^2 median {r['r2_median']:.3f} "
                      f"(noise ceiling {r['r2_noise_ceiling_median']:.3f})")
        print(f"codecs written to {out}/codecs ({codecs.get('seconds')} s)")
    model = summary.get("model")
    if model:
        ev = model.get("evaluation", {})
        z = ev.get("redshift_image_photometry", {})
        if "r2" in z:
            print(f"redshift from tok_z (image + photometry), held-out R^2 = {z['r2']:.3f} (n={z['n']})")
        print(f"model written to {out} after {model['steps']} steps")
