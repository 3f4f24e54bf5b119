"""Benchmark spectral super-resolution on held-out objects (not part of `make test`).

For each setting, ``evaluate_superres`` scores the generated spectra of up to N held-out galaxies
(from photometry + image) and N held-out stars (from Gaia XP) against their true DESI spectra
(reduced chi^2 with the true ivar, line redshift, template Teff/[Fe/H]) and against the
nearest-neighbour baseline, and times the generation per object (wall and CPU, one thread).
Settings: the interactive default (3 steps), the evaluation setting (8 steps), and the evaluation
setting with the flux scale from the model's own normalisation token instead of the photometry.
Writes ``bench/results/superres.json``.

    OMP_NUM_THREADS=1 nice -n 10 .venv/bin/python bench/bench_superres.py [--model DIR] [--objects 50]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"


def main() -> int:
    from engine.data import open_dataset
    from engine.model.fast import enable_fast_attention
    from engine.model.loading import load_model
    from engine.tasks.superres import EVALUATION, INTERACTIVE, evaluate_superres

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default=str(ROOT / "data" / "mock-default"))
    parser.add_argument("--model", default=str(ROOT / "assets" / "models" / "aion-nano"))
    parser.add_argument("--objects", type=int, default=50, help="held-out galaxies and stars (each)")
    parser.add_argument("--settings", default="interactive,evaluation,evaluation-model-scale")
    parser.add_argument("--out", default=str(RESULTS / "superres.json"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    settings = {"interactive": INTERACTIVE, "evaluation": EVALUATION,
                "evaluation-model-scale": dataclasses.replace(EVALUATION, scale="model")}
    unknown = [s for s in args.settings.split(",") if s not in settings]
    if unknown:
        parser.error(f"--settings: unknown {unknown}; accepted: {', '.join(settings)}")
    ds = open_dataset(args.dataset)
    loaded = load_model(args.model)
    enable_fast_attention(loaded.model)
    out = {"dataset": str(args.dataset), "model": str(args.model), "model_hash": loaded.hash, "objects_per_kind": args.objects,
           "machine": f"{platform.node()} {platform.processor() or platform.machine()}, torch threads 1",
           "load_average_start": list(np.round(os.getloadavg(), 2)), "settings": {}}
    for name in args.settings.split(","):
        t0 = time.perf_counter()
        res, _ = evaluate_superres(loaded, ds, config=settings[name], max_per_kind=args.objects, progress=True)
        res["wall_seconds_total"] = time.perf_counter() - t0
        out["settings"][name] = res
        print(name, json.dumps({k: {m: round(v, 4) if isinstance(v, float) else v for m, v in r.items()}
                                for k, r in res.items() if k in ("galaxy", "star")}, indent=1))
    out["load_average_end"] = list(np.round(os.getloadavg(), 2))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2, default=lambda o: o.item() if hasattr(o, "item") else str(o)))
    print("wrote", args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
