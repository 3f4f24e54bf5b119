"""``aion-engine evaluate``: results table (Markdown + JSON) and plots: probes vs from-scratch baselines."""

from __future__ import annotations

import argparse

HELP = "evaluate the frozen encoder: property/morphology probes, segmentation, super-resolution vs baselines"


def setup_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dataset", required=True, help="dataset folder (with truth columns)")
    parser.add_argument("--model", required=True, help="model folder or hub id")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.add_argument("--out", default=None, help="output folder (default docs/results/<dataset>/<model>/)")
    parser.add_argument("--seed", type=int, default=0, help="split and training seed (default 0)")
    parser.add_argument("--epochs", type=int, default=30,
                        help="probe epochs (default 30; the property probes train 3x as many)")
    parser.add_argument("--baseline-epochs", type=int, default=None,
                        help="epochs of the baseline CNNs (default: --epochs, the probes' budget; the 1-D CNN trains "
                             "3x as many, as the property probes; the U-Net always trains as long as the segmentation head)")
    parser.add_argument("--seg-epochs", type=int, default=None,
                        help="epochs of the segmentation head and of the U-Net, one budget for both (default 2x --epochs; "
                             "with the dihedral views a quarter of them pass over every view)")
    parser.add_argument("--max-objects", type=int, default=3000,
                        help="labelled objects used (deterministic subset; bounds encoding time; default 3000, 0 = all)")
    parser.add_argument("--max-seg-galaxies", type=int, default=1500,
                        help="galaxies (train + held-out) for the segmentation head and U-Net (default 1500, 0 = all)")
    parser.add_argument("--superres-objects", type=int, default=40, help="held-out galaxies and stars to super-resolve (each)")
    parser.add_argument("--samples", type=int, default=4, help="generated spectra per object (default 4)")
    parser.add_argument("--steps", type=int, default=8, help="unmasking steps (default 8)")
    parser.add_argument("--temperature", type=float, default=1.0, help="sampling temperature (default 1.0)")
    parser.add_argument("--no-augment", action="store_true",
                        help="train the image heads and image baselines on the cutouts as observed only (default: "
                             "also on their 7 rotations/reflections, which encodes their training galaxies 7 more times)")
    parser.add_argument("--retrain", action="store_true", help="retrain probes even if up-to-date heads exist")
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")


def run_cli(args: argparse.Namespace) -> int:
    import json

    from engine.errors import ValidationError
    from engine.tasks.evaluate import evaluate
    from engine.tasks.superres import GenerationConfig

    for name in ("epochs", "baseline_epochs", "seg_epochs", "superres_objects", "samples", "steps"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            raise ValidationError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)!r}")
    for name in ("max_objects", "max_seg_galaxies"):
        if getattr(args, name) < 0:
            raise ValidationError(f"--{name.replace('_', '-')} must be >= 0 (0 = all), got {getattr(args, name)!r}")
    config = GenerationConfig(n_samples=args.samples, steps=args.steps, temperature=args.temperature, seed=args.seed)
    results = evaluate(args.dataset, args.model, args.out, seed=args.seed, epochs=args.epochs,
                       baseline_epochs=args.baseline_epochs, seg_epochs=args.seg_epochs,
                       max_objects=args.max_objects or None,
                       max_seg_galaxies=args.max_seg_galaxies or None,
                       superres_per_kind=args.superres_objects, superres=config, progress=not args.no_progress,
                       retrain=args.retrain, augment=not args.no_augment)
    if args.json:
        print(json.dumps(results, default=str))
    else:
        print(f"results written to {results['out_dir']}/results.md")
        for line in results["verdicts"]:
            print(" - " + line.replace("**", ""))
    return 0
