"""How much of a morphology verdict is training noise? (not part of `make test`).

The results table's paired bootstrap resamples the *held-out galaxies*; it says nothing about how
much a score moves when the same net is trained again. Session 10 saw the image CNN's morphology
accuracy go from 0.873 to 0.908 between two trainings with the same seed and settings, flipping the
verdict from "no winner" to "loses". This benchmark keeps the split (seed 0, the table's 4000-object
subset) and retrains, with training seeds 0, 1, 2, …:

* ``--part probe``: the morphology probe on the frozen ``photometry+image`` tokens (the table's best
  probe; 8 epochs over all eight dihedral views, as shipped), from the cached tokens and view caches
  of the evaluate run (it refuses to start if those are not current, rather than encode for an hour);
  the head is whatever ``train_probes`` trains (since session 17 ``SpatialMorphologyProbe``; the runs
  of the radial head before it are kept under ``probe_radial``);
* ``--part cnn``: the image CNN from scratch (8 epochs over all views, as shipped), which also scores
  galaxy properties.

Each run is scored on the held-out galaxies as observed and with *test-time dihedral averaging*
(class probabilities averaged over the eight turned cutouts; for the probe each turned held-out
cutout is tokenized and encoded once, cached under ``<probes>/bench-heldout-views/``). Runs are
merged into ``bench/results/training_noise.json`` (per-object predicted classes kept, so paired
comparisons can be recomputed); ``--summary`` prints mean ± std per method and setting.

    OMP_NUM_THREADS=1 nice -n 10 .venv/bin/python bench/bench_training_noise.py --part probe --seeds 0,1,2
    OMP_NUM_THREADS=1 nice -n 10 .venv/bin/python bench/bench_training_noise.py --part cnn --seeds 0,1
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import os
import platform
import re
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
OUT = RESULTS / "training_noise.json"
MAX_OBJECTS = 4000  # the results table's settings (docs/results/mock-default/aion-nano/results.md)
MAX_SEG_GALAXIES = 1000
COMBO = "photometry+image"


@contextlib.contextmanager
def _locked_results():
    """The results JSON, read and rewritten under a lock (two parts may run side by side)."""
    OUT.parent.mkdir(parents=True, exist_ok=True)
    with open(Path(tempfile.gettempdir()) / "aion_training_noise.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        data = json.loads(OUT.read_text()) if OUT.is_file() else {"runs": {}}
        yield data
        tmp = OUT.with_name(OUT.name + f".tmp{os.getpid()}")
        tmp.write_text(_compact_json(_normalised(data)))
        os.replace(tmp, OUT)


def _normalised(data: dict) -> dict:
    """The held-out galaxies and their classes once at the top (every run scores the same ones), each
    run's predicted classes as a string of digits (classes 0-9): a readable file of a few kB."""
    for runs in data["runs"].values():
        for run in runs.values():
            ids, true = run.pop("object_id", None), run.pop("true", None)
            if ids is not None:
                if data.setdefault("object_id", ids) != ids:
                    raise ValueError("runs scored different held-out galaxies; the split must stay seed 0")
                data.setdefault("true", "".join(map(str, true)))
            for key in ("pred", "pred_tta"):
                if isinstance(run.get(key), list):
                    run[key] = "".join(map(str, run[key]))
    return data


def _compact_json(data: dict) -> str:
    """Indented JSON with lists of numbers kept on one line."""
    text = json.dumps(data, indent=1)
    return re.sub(r"\[\s*([-0-9.e,\s]+?)\s*\]", lambda m: "[" + ", ".join(x.strip() for x in m.group(1).split(",")) + "]", text)


def _record(part: str, seed: int, entry: dict) -> None:
    with _locked_results() as data:
        data["runs"].setdefault(part, {})[str(seed)] = entry
        data["settings"] = {"max_objects": MAX_OBJECTS, "split_seed": 0, "combo": COMBO,
                            "machine": f"{platform.node()} {platform.processor() or platform.machine()}, torch threads 1"}


def _scores(true: np.ndarray, prob_views: np.ndarray) -> dict:
    """Accuracy as observed (view 0) and with the eight views' probabilities averaged."""
    observed = prob_views[0].argmax(1)
    averaged = prob_views.mean(0).argmax(1)
    return {"accuracy": float((observed == true).mean()), "accuracy_tta": float((averaged == true).mean()),
            "pred": observed.tolist(), "pred_tta": averaged.tolist()}


def run_probe(seeds: list[int]) -> None:
    from engine.data import open_dataset
    from engine.model.fast import enable_fast_attention
    from engine.model.loading import load_model
    from engine.tasks.augment import N_VIEWS
    from engine.tasks.features import (
        build_token_cache,
        cache_is_current,
        combo_keys,
        open_token_cache,
        tokenize_many,
    )
    from engine.tasks.fitting import FitConfig
    from engine.tasks.probes import _fit_morphology, _view_caches, probes_dir, select_objects

    dataset = open_dataset(ROOT / "data" / "mock-default")
    model_dir = ROOT / "assets" / "models" / "aion-nano"
    loaded = load_model(model_dir)
    enable_fast_attention(loaded.model)
    out = probes_dir(dataset, model_dir)
    ids = select_objects(dataset.catalog, MAX_OBJECTS, 0)
    keys = combo_keys(COMBO, loaded.token_keys)
    if not cache_is_current(loaded, dataset, ids, keys, out / "tokens" / COMBO):
        raise SystemExit(f"{out / 'tokens' / COMBO}: not the evaluate run's token cache; run `aion-engine evaluate` first")
    cache = open_token_cache(out / "tokens" / COMBO)
    views = _view_caches(loaded, dataset, out, COMBO, keys, ids, None, 0, MAX_SEG_GALAXIES, (), progress=True)
    heldout_views = None
    for seed in seeds:
        t0, c0 = time.perf_counter(), time.process_time()
        config = FitConfig(epochs=30, batch_size=64, lr=2e-3, seed=seed, progress=True)
        module, meta, frame = _fit_morphology(cache, dataset.catalog, ids, 0, config, f"probe seed {seed}", views)
        test_ids = frame["object_id"].to_numpy()
        if heldout_views is None:  # the held-out cutouts turned, tokenized and encoded once
            token_ids = tokenize_many(loaded, dataset, test_ids, keys)
            heldout_views = [build_token_cache(loaded, dataset, test_ids, keys, out / "bench-heldout-views" / f"view{v}",
                                               token_ids=token_ids, view=v) for v in range(1, N_VIEWS)]
        prob_views = _probe_view_probs(module, cache, heldout_views, test_ids)
        true = frame["true"].to_numpy().astype(int)
        entry = {**_scores(true, prob_views), "object_id": test_ids.tolist(), "true": true.tolist(),
                 "table_accuracy": meta["metrics"]["accuracy"], "best_epoch": meta["best_epoch"],
                 "model_hash": loaded.hash, "pooling": meta["pooling"],
                 "wall_s": round(time.perf_counter() - t0, 1), "cpu_s": round(time.process_time() - c0, 1)}
        _record("probe", seed, entry)
        print(f"probe seed {seed}: accuracy {entry['accuracy']:.3f}, with 8 views averaged {entry['accuracy_tta']:.3f}")


@torch.inference_mode()
def _probe_view_probs(module, cache, heldout_views, test_ids: np.ndarray) -> np.ndarray:
    """(8, N, classes) probabilities of the probe on the held-out galaxies as observed and turned
    (the masks of absent tokens do not turn)."""
    from engine.tasks.probes import _tensor

    module.eval()
    tok, msk = _tensor(cache, cache.rows(test_ids))
    probs = [module(tok.float(), msk).softmax(-1)]
    for view_cache in heldout_views:
        tok_v, _ = _tensor(view_cache, view_cache.rows(test_ids))
        probs.append(module(tok_v.float(), msk).softmax(-1))
    return torch.stack(probs).numpy()


def run_cnn(seeds: list[int]) -> None:
    from engine.data import open_dataset
    from engine.tasks import arrays
    from engine.tasks.augment import N_VIEWS, dihedral
    from engine.tasks.baselines import GALAXY_TARGETS, MORPHOLOGY_TARGET, cnn_on_images
    from engine.tasks.fitting import FitConfig, predict
    from engine.tasks.probes import select_objects

    dataset = open_dataset(ROOT / "data" / "mock-default")
    cat = dataset.catalog.set_index("object_id", drop=False)
    ids = select_objects(dataset.catalog, MAX_OBJECTS, 0)
    for seed in seeds:
        t0, c0 = time.perf_counter(), time.process_time()
        frames, methods = [], {}
        config = FitConfig(epochs=30, batch_size=64, lr=2e-3, seed=seed, progress=True)
        net = cnn_on_images(dataset, cat, ids, 0, config, frames, methods, augment=True)
        morph = next(f for f in frames if (f["target"] == MORPHOLOGY_TARGET).all())
        test_ids = morph["object_id"].to_numpy()
        x = torch.from_numpy(arrays.images(dataset, test_ids))
        n_prop = len(GALAXY_TARGETS)
        prob_views = np.stack([predict(net, (dihedral(x, v).contiguous(),))[:, n_prop:].softmax(-1).numpy()
                               for v in range(N_VIEWS)])
        true = morph["true"].to_numpy().astype(int)
        res = methods["CNN (image)"]
        entry = {**_scores(true, prob_views), "object_id": test_ids.tolist(), "true": true.tolist(),
                 "table_accuracy": res[MORPHOLOGY_TARGET]["accuracy"],
                 "r2": {t: res[t]["r2"] for t in GALAXY_TARGETS if t in res},
                 "wall_s": round(time.perf_counter() - t0, 1), "cpu_s": round(time.process_time() - c0, 1)}
        _record("cnn", seed, entry)
        print(f"cnn seed {seed}: accuracy {entry['accuracy']:.3f}, with 8 views averaged {entry['accuracy_tta']:.3f}, "
              f"R² {entry['r2']}")


def summary() -> dict:
    """Mean ± std (and range) of each part's accuracy, as observed and view-averaged; and for every
    (probe seed, CNN seed) pair the paired-bootstrap difference probe − CNN on the same galaxies."""
    from engine.tasks import metrics

    data = json.loads(OUT.read_text())
    rows: dict = {}
    for part, runs in data["runs"].items():
        for key in ("accuracy", "accuracy_tta"):
            vals = np.array([r[key] for r in runs.values()])
            rows[f"{part} {key}"] = {"n": len(vals), "mean": float(vals.mean()), "std": float(vals.std(ddof=1)) if len(vals) > 1 else None,
                                     "min": float(vals.min()), "max": float(vals.max()),
                                     "seeds": sorted(map(int, runs))}
    true = np.array([int(c) for c in data.get("true", "")])
    digits = lambda s: np.array([int(c) for c in s])  # noqa: E731
    probe_parts = [p for p in data["runs"] if p.startswith("probe")]  # probe_radial: the head before session 17
    for part in probe_parts:
        for ps, probe in data["runs"][part].items():
            for cs, cnn in data["runs"].get("cnn", {}).items():
                for key in ("pred", "pred_tta"):
                    r = metrics.paired_bootstrap(metrics.accuracy, true, digits(probe[key]), digits(cnn[key]), seed=0)
                    rows.setdefault(f"{part} - cnn", {})[f"{part} seed {ps} - cnn seed {cs}, {key}"] = {
                        "diff": round(r["diff"], 4), "diff_ci": [round(x, 4) for x in r["diff_ci"]],
                        "probe_ci": [round(x, 4) for x in r["a_ci"]], "cnn_ci": [round(x, 4) for x in r["b_ci"]]}
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=("probe", "cnn"))
    parser.add_argument("--seeds", default="0,1,2", help="training seeds, comma-separated (the split stays seed 0)")
    parser.add_argument("--summary", action="store_true", help="print mean ± std of the recorded runs")
    args = parser.parse_args()
    if args.summary:
        print(json.dumps(summary(), indent=1))
        return 0
    if args.part is None:
        parser.error("--part probe|cnn is required unless --summary")
    try:
        seeds = [int(s) for s in args.seeds.split(",")]
    except ValueError:
        parser.error(f"--seeds {args.seeds!r}: expected comma-separated integers, e.g. 0,1,2")
    torch.set_num_threads(1)
    (run_probe if args.part == "probe" else run_cnn)(seeds)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
