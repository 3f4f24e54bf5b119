"""``aion-engine predict``: one object's property, morphology, segmentation or super-resolved spectrum."""

from __future__ import annotations

import argparse

HELP = "predict for one object: redshift, stellar mass, morphology, segmentation masks or a super-resolved spectrum"

TASKS = ("z", "mass", "ssfr", "stellar", "properties", "morphology", "segmentation", "superres")
_FIELDS = {"z": ("pred_z", "truth_z"), "mass": ("pred_log_mstar", "truth_log_mstar"), "ssfr": ("pred_ssfr", "truth_ssfr")}


def setup_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dataset", required=True, help="dataset folder")
    parser.add_argument("--model", required=True, help="model folder or hub id")
    parser.add_argument("--task", required=True, choices=TASKS,
                        help="z | mass | ssfr | stellar (Teff, log g, [Fe/H]) | properties (all) | morphology | "
                             "segmentation | superres")
    parser.add_argument("--object-id", required=True, type=int, help="catalog object_id")
    parser.add_argument("--json", action="store_true", help="print machine-readable JSON")
    parser.add_argument("--views", type=int, default=1, choices=range(1, 9), metavar="1-8",
                        help="morphology (property tasks) and segmentation: average over this many "
                             "rotations/reflections of the cutout, each encoded (default 1; see docs/tasks.md for "
                             "what 8 gains on the default mock)")
    gen = parser.add_argument_group("--task superres")
    gen.add_argument("--samples", type=int, default=4, help="number of generated spectra (default 4)")
    gen.add_argument("--steps", type=int, default=3, help="unmasking steps (default 3: interactive; evaluation uses 8)")
    gen.add_argument("--scale", choices=("photometry", "model"), default="photometry",
                     help="flux scale from the object's photometry (default) or from the model's normalisation token")
    gen.add_argument("--temperature", type=float, default=1.0, help="sampling temperature (default 1.0; 0 = greedy)")
    gen.add_argument("--seed", type=int, default=0, help="random seed (default 0)")


def _rle(mask) -> list[int]:
    """Run-length encoding of a bool mask in raster order: [start, length, start, length, ...]."""
    import numpy as np

    flat = np.concatenate([[0], mask.ravel().astype(np.int8), [0]])
    edges = np.flatnonzero(np.diff(flat))
    return [int(v) for pair in zip(edges[::2], edges[1::2] - edges[::2], strict=True) for v in pair]


def run_cli(args: argparse.Namespace) -> int:
    import json
    import time

    import numpy as np

    from engine.tasks.api import Predictor

    t0 = time.time()
    predictor = Predictor.open(args.dataset, args.model)
    t1 = time.time()
    if args.task == "segmentation":
        masks = predictor.segmentation(args.object_id, views=args.views)
        result = {"object_id": args.object_id, "task": "segmentation", "shape": [96, 96], "views": args.views,
                  "classes": {name: {"pixels": int(m.sum()), "mask_rle": _rle(m)} for name, m in masks.items()}}
        lines = [f"{name:10s} {int(m.sum()):5d} px" for name, m in masks.items()]
    elif args.task == "superres":
        out = predictor.superres(args.object_id, n_samples=args.samples, steps=args.steps,
                                 temperature=args.temperature, seed=args.seed, scale=args.scale)
        rnd = lambda a: None if a is None else [None if not np.isfinite(v) else float(f"{v:.5g}") for v in np.asarray(a)]  # noqa: E731
        result = {"object_id": args.object_id, "task": "superres", "input_kind": out["input_kind"],
                  "scale_source": out["scale_source"], "n_samples": int(out["samples"].shape[0]), "wavelength": rnd(out["wavelength"]), "mean": rnd(out["mean"]),
                  "std": rnd(out["std"]), "truth": rnd(out["truth"])}
        lines = [f"generated {result['n_samples']} spectra from {out['input_kind']} on {len(out['wavelength'])} DESI pixels "
                 f"({out['wavelength'][0]:.0f}-{out['wavelength'][-1]:.0f} A); median flux {np.median(out['mean']):.3g}"
                 + ("" if out["truth"] is None else f" (true {np.nanmedian(out['truth']):.3g})")]
    else:
        props = predictor.properties(args.object_id, views=args.views)
        if args.task in _FIELDS:
            pred, truth = _FIELDS[args.task]
            keep = ("object_id", "kind", "source", pred, truth)
        elif args.task == "stellar":
            keep = ("object_id", "kind", "source", "pred_teff", "pred_logg", "pred_feh", "truth_teff", "truth_logg", "truth_feh")
        elif args.task == "morphology":
            keep = ("object_id", "kind", "source", "views", "pred_morphology", "pred_morphology_name", "pred_morphology_prob",
                    "truth_morphology")
        else:
            keep = tuple(props)
        result = {k: props[k] for k in keep if k in props}
        result["task"] = args.task
        lines = [f"{k:22s} {v}" for k, v in result.items()]
    result["seconds"] = {"open": round(t1 - t0, 3), "predict": round(time.time() - t1, 3)}
    if args.json:
        print(json.dumps(result, default=lambda o: o.item() if hasattr(o, "item") else str(o)))
    else:
        print("\n".join(lines))
    return 0
