"""``aion-engine evaluate``: one results table (Markdown + JSON) and plots for (dataset, model).

Runs (or reuses) the probes, the from-scratch baselines and the super-resolution scoring on
the held-out split, then writes under ``docs/results/<dataset>/<model>/``:
``results.json``, ``results.md`` (probes beside baselines, with plain verdicts where the
foundation model loses), ``scatter.png`` (predicted vs true), ``confusion.png``,
``segmentation.png`` (IoU examples) and ``superres.png`` (generated vs true vs baseline).
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path

import numpy as np
import pandas as pd

from engine.data import schema
from engine.data.store import open_dataset
from engine.paths import PROJECT_ROOT
from engine.tasks import metrics, segmentation
from engine.tasks.augment import N_VIEWS, view_epochs
from engine.tasks.baselines import baselines_dir, run_baselines
from engine.tasks.features import FEATURE_VERSION, INPUT_COMBOS
from engine.tasks.probes import (
    DEFAULT_EPOCHS,
    DEFAULT_MAX_OBJECTS,
    GALAXY_TARGETS,
    HEADS_VERSION,
    IMAGE_MORPHOLOGY_HEAD,
    MORPHOLOGY_TARGET,
    POSITION_CHANNELS,
    PROPERTY_EPOCH_FACTOR,
    SEGMENTATION_HEAD,
    STAR_TARGETS,
    default_seg_epochs,
    probes_dir,
    train_probes,
)
from engine.tasks.superres import EVALUATION, GenerationConfig, evaluate_superres
from engine.tasks.view_average import cached_view_scores, heldout_view_scores, paired_morphology

RESULTS_ROOT = PROJECT_ROOT / "docs" / "results"
KIND_PLURAL = {"galaxy": "galaxies", "star": "stars"}
LABELS = {"truth_z": "redshift z", "truth_log_mstar": "log M* [Msun]", "truth_ssfr": "log sSFR [1/yr]",
          "truth_teff": "Teff [K]", "truth_logg": "log g", "truth_feh": "[Fe/H]"}


def default_out_dir(dataset_name: str, model_id: str) -> Path:
    return RESULTS_ROOT / dataset_name / model_id


def _probe_results(dataset_dir, model_dir, loaded, dataset, *, seed, epochs, max_objects, max_seg_galaxies, progress,
                   retrain, augment, seg_epochs: int | None = None) -> dict:
    path = probes_dir(dataset, model_dir) / "probes.json"
    if not retrain and path.is_file():
        cached = json.loads(path.read_text())
        same = (cached.get("model_hash") == loaded.hash and cached.get("seed") == seed and cached.get("epochs") == epochs
                and cached.get("dataset_hash") == dataset.info.get("hash") and cached.get("max_objects") == max_objects
                and cached.get("max_seg_galaxies") == max_seg_galaxies
                and cached.get("seg_epochs", default_seg_epochs(epochs)) == (seg_epochs or default_seg_epochs(epochs))
                and cached.get("property_epochs") == PROPERTY_EPOCH_FACTOR * epochs
                and cached.get("position_channels") == POSITION_CHANNELS
                and set(cached.get("combos", {})) == set(INPUT_COMBOS)  # not `prepare`'s reduced set
                and cached.get("features") == FEATURE_VERSION and cached.get("heads") == HEADS_VERSION
                and cached.get("image_morphology_head") == IMAGE_MORPHOLOGY_HEAD
                and cached.get("segmentation_head", 1) == SEGMENTATION_HEAD
                and not cached.get("segmentation_only") and cached.get("augment", False) == augment)
        if same:
            return cached
    return train_probes(dataset_dir, model_dir, seed=seed, epochs=epochs, progress=progress, max_objects=max_objects,
                        max_seg_galaxies=max_seg_galaxies, seg_epochs=seg_epochs, loaded=loaded, augment=augment,
                        reuse=not retrain)


def _superres_results(loaded, dataset, model_dir, *, seed, config, max_per_kind, progress, retrain) -> tuple[dict, dict]:
    """Super-resolution scores, cached beside the probes (keyed by model, dataset and settings)."""
    from dataclasses import asdict

    folder = probes_dir(dataset, model_dir)
    path, ex_path = folder / "superres.json", folder / "superres_examples.npz"
    key = {"model_hash": loaded.hash, "dataset_hash": dataset.info.get("hash"), "seed": seed, "config": asdict(config),
           "max_per_kind": max_per_kind}
    if not retrain and path.is_file() and ex_path.is_file():
        cached = json.loads(path.read_text())
        if cached.get("key") == key:
            with np.load(ex_path) as ex:
                return cached["results"], {k: ex[k] for k in ex.files}
    results, examples = evaluate_superres(loaded, dataset, seed=seed, config=config, max_per_kind=max_per_kind,
                                          progress=progress)
    folder.mkdir(parents=True, exist_ok=True)
    tmp = ex_path.with_name(f"superres_examples.tmp{os.getpid()}.npz")
    np.savez_compressed(tmp, **examples)
    os.replace(tmp, ex_path)
    _write(path, json.dumps({"key": key, "results": results}, indent=2, default=_jsonable))
    return results, examples


def collect(probes: dict, baselines: dict, superres: dict | None) -> dict:
    """One flat structure: per target, method -> score (R^2 or accuracy); segmentation; super-resolution."""
    props: dict = {}
    for combo, res in probes.get("combos", {}).items():
        for target in (*GALAXY_TARGETS, *STAR_TARGETS):
            if target in res:
                props.setdefault(target, {})[f"probe: {combo}"] = res[target]
        if MORPHOLOGY_TARGET in res:
            props.setdefault(MORPHOLOGY_TARGET, {})[f"probe: {combo}"] = res[MORPHOLOGY_TARGET]
    for method, res in baselines.get("methods", {}).items():
        for target, score in res.items():
            props.setdefault(target, {})[method] = score
    seg = {}
    if "segmentation" in probes:
        seg[f"head on frozen tokens ({probes['segmentation']['combo']})"] = probes["segmentation"]
    seg.update(baselines.get("segmentation", {}))
    return {"properties": props, "segmentation": seg, "superres": superres or {}}


def _heldout_predictions(probes_folder: Path, base_folder: Path) -> pd.DataFrame:
    """Every method's held-out predictions in one frame (object_id, target, true, pred, method); empty if none."""
    frames = []
    for path, column, prefix in ((probes_folder / "heldout.parquet", "combo", "probe: "),
                                 (base_folder / "heldout.parquet", "method", "")):
        if path.is_file():
            frame = pd.read_parquet(path)
            frames.append(frame.assign(method=prefix + frame.pop(column).astype(str)))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=["object_id", "target", "true", "pred", "method"])


def paired_differences(table: dict, heldout: pd.DataFrame, seed: int = 0) -> dict:
    """Per target: the best probe against the best baseline on the objects both predicted, with a paired
    bootstrap interval on the difference of their scores (:func:`metrics.paired_bootstrap`). Targets
    whose predictions are not all cached are left out."""
    out = {}
    for target, methods in table["properties"].items():
        best = _best_pair(target, methods)
        if best is None:
            continue
        probe, base = best
        rows = heldout[heldout["target"] == target]
        a = rows[rows["method"] == probe].drop_duplicates("object_id").set_index("object_id")
        b = rows[rows["method"] == base].drop_duplicates("object_id").set_index("object_id")
        common = a.index.intersection(b.index)
        if len(common) < 2:
            continue
        a, b = a.loc[common], b.loc[common]
        score = metrics.accuracy if target == MORPHOLOGY_TARGET else metrics.r2_score
        r = metrics.paired_bootstrap(score, a["true"].to_numpy(), a["pred"].to_numpy(), b["pred"].to_numpy(), seed=seed)
        if np.isfinite(r["diff_ci"]).all():
            out[target] = {"probe": probe, "baseline": base, **r}
    return out


#: the inputs a galaxy needs for the "every input" comparison (the issue's "photometry + image + spectrum")
EVERY_INPUT_SOURCES = ("image_ls", "spectrum_desi")


def every_input_scores(heldout: pd.DataFrame, catalog: pd.DataFrame, seed: int = 0) -> dict:
    """Galaxy properties scored on the held-out galaxies that have *every* input (LS image and DESI
    spectrum), by every method that predicted all of them.

    The main table scores each method on all held-out galaxies, and in the default mock only about half
    of them have a DESI spectrum, so the ``photometry+image+spectrum`` column there mixes galaxies the
    spectrum can help with galaxies it cannot. Here every method is scored on the same galaxies,
    including the spectrum-only 1-D CNN, with a paired bootstrap of the best probe against the best
    baseline. Empty when the catalog lacks the flags or no galaxy has every input.
    """
    flags = [schema.source(s).flag for s in EVERY_INPUT_SOURCES]
    if heldout.empty or not all(f in catalog.columns for f in flags):
        return {}
    cat = catalog.set_index("object_id")
    has_all = cat[flags].astype(bool).all(axis=1)
    galaxies = cat.index[(cat["kind"].astype(str) == "galaxy") & has_all]
    scores: dict = {}
    subset = []
    for target in GALAXY_TARGETS:
        rows = heldout[(heldout["target"] == target) & heldout["object_id"].isin(galaxies)]
        rows = rows[np.isfinite(rows["true"].to_numpy(float))]
        wanted = pd.Index(rows["object_id"].unique())
        if len(wanted) < 2:
            continue
        for method, frame in rows.groupby("method"):
            frame = frame.drop_duplicates("object_id").set_index("object_id")
            if len(frame) == len(wanted):  # a method that missed some of them is not compared on fewer
                frame = frame.loc[wanted]
                scores.setdefault(target, {})[method] = {
                    "r2": metrics.r2_score(frame["true"].to_numpy(float), frame["pred"].to_numpy(float)),
                    "n_test": len(wanted)}
                subset.append(frame.reset_index())
    if not scores:
        return {}
    paired = paired_differences({"properties": scores}, pd.concat(subset, ignore_index=True), seed)
    return {"inputs": list(EVERY_INPUT_SOURCES), "properties": scores, "paired": paired}


#: the segmentation classes the verdicts speak about (the issue's: spiral arms and bar)
VERDICT_CLASSES = ("arms", "bar")


def _head_and_unet(seg: dict) -> tuple[dict | None, dict | None]:
    """The frozen-token segmentation head's and the U-Net's scores among ``seg``'s methods (None if absent)."""
    return next((v for k, v in seg.items() if k.startswith("head")), None), seg.get("U-Net (image)")


def paired_segmentation(table: dict, seed: int = 0) -> dict:
    """Per class in :data:`VERDICT_CLASSES`: the frozen-token head against the U-Net on the same held-out
    galaxies, a paired bootstrap over galaxies of the dataset-level IoU; empty when either side's
    per-galaxy pixel counts are not cached (runs before they were recorded)."""
    seg = table["segmentation"]
    head, unet = _head_and_unet(seg)
    if not head or not unet or "per_galaxy" not in head or "per_galaxy" not in unet:
        return {}
    a, b = head["per_galaxy"], unet["per_galaxy"]
    if a["object_id"] != b["object_id"]:
        return {}

    def counts(galaxies: dict, cls: str) -> np.ndarray:
        return np.stack([galaxies["intersection"][cls], galaxies["union"][cls]], 1)

    out = {}
    for cls in VERDICT_CLASSES:
        if cls in a["union"] and cls in b["union"]:
            r = metrics.paired_bootstrap(segmentation.pixel_iou, np.arange(len(a["object_id"])), counts(a, cls),
                                         counts(b, cls), seed=seed)
            if np.isfinite(r["diff_ci"]).all():  # a class absent from every held-out galaxy has no IoU
                out[cls] = r
    return out


def views_averaged_table(probe_scores: dict, baselines: dict, seed: int = 0) -> dict:
    """The image heads and image baselines scored with the eight views of each held-out galaxy averaged
    (:mod:`engine.tasks.view_average`): morphology accuracy and segmentation IoU per method, and the best
    morphology probe against the CNN and the segmentation head against the U-Net, paired; {} if neither
    side has such scores."""
    base = baselines.get("views_averaged", {})
    morph = {**probe_scores.get("morphology", {}), **base.get("morphology", {})}
    seg = {**probe_scores.get("segmentation", {}), **base.get("segmentation", {})}
    if not morph and not seg:
        return {}
    paired: dict = {}
    probes = {m: r for m, r in morph.items() if m.startswith("probe")}
    if probes and "CNN (image)" in morph:
        best = max(probes, key=lambda m: probes[m]["accuracy"])
        r = paired_morphology(probes[best], morph["CNN (image)"], seed)
        if r is not None:
            paired["morphology"] = {**r, "probe": best, "baseline": "CNN (image)"}
    paired["segmentation"] = paired_segmentation({"segmentation": seg}, seed)
    return {"morphology": morph, "segmentation": seg, "paired": paired}


def _best_pair(target: str, methods: dict) -> tuple[str, str] | None:
    """(best probe, best baseline) by score, or None when either side has no finite score."""
    probes = {m: _score(target, r) for m, r in methods.items() if m.startswith("probe") and math.isfinite(_score(target, r))}
    bases = {m: _score(target, r) for m, r in methods.items() if not m.startswith("probe") and math.isfinite(_score(target, r))}
    if not probes or not bases:
        return None
    return max(probes, key=probes.get), max(bases, key=bases.get)


def _without_counts(table: dict) -> dict:
    """``table`` for results.json: the per-galaxy pixel counts and classes stay in the caches (they only
    feed the bootstrap)."""
    per_object = {"per_galaxy", "object_id", "true", "pred"}
    seg = {m: {k: v for k, v in r.items() if k != "per_galaxy"} for m, r in table["segmentation"].items()}
    out = {**table, "segmentation": seg}
    if table.get("views_averaged"):
        va = table["views_averaged"]
        out["views_averaged"] = {**va, **{part: {m: {k: v for k, v in r.items() if k not in per_object}
                                                 for m, r in va.get(part, {}).items()}
                                          for part in ("morphology", "segmentation")}}
    return out


def _score(target: str, res: dict) -> float:
    return res.get("accuracy", math.nan) if target == MORPHOLOGY_TARGET else res.get("r2", math.nan)


def _interval(paired: dict) -> tuple[str, bool]:
    """("difference -0.080, 95% interval -0.118 to -0.046", whether the interval holds zero)."""
    lo, hi = paired["diff_ci"]
    return f"difference {paired['diff']:+.3f}, {paired['level']:.0%} interval {lo:+.3f} to {hi:+.3f}", lo <= 0 <= hi


def verdicts(table: dict) -> list[str]:
    """Plain sentences: for each task, does the best foundation-model probe beat the best baseline?"""
    lines = []
    for target, methods in table["properties"].items():
        best = _best_pair(target, methods)
        if best is None:
            continue
        bp, bb = best
        p, b = _score(target, methods[bp]), _score(target, methods[bb])
        what = "accuracy" if target == MORPHOLOGY_TARGET else "R²"
        name = "morphology" if target == MORPHOLOGY_TARGET else LABELS.get(target, target)
        paired = table.get("paired", {}).get(target)
        text, tie = _interval(paired) if paired and (paired["probe"], paired["baseline"]) == (bp, bb) else ("", False)
        noise = f" ({text})" if text else ""
        if tie:
            lines.append(f"{name}: **no winner beyond the noise of {paired['n']} held-out objects** — the best probe "
                         f"({bp}) {p:.3f}, {bb} {b:.3f}{noise}.")
        elif p >= b:
            lines.append(f"{name}: the foundation model wins ({bp}, {what} {p:.3f} vs {bb} {b:.3f}){noise}.")
        else:
            lines.append(f"{name}: **the foundation model loses** — {bb} reaches {what} {b:.3f}, "
                         f"the best probe ({bp}) {p:.3f}{noise}.")
    seg = table["segmentation"]
    head, unet = _head_and_unet(seg)
    if head and unet:
        for cls in VERDICT_CLASSES:
            h, u = head["iou"].get(cls, math.nan), unet["iou"].get(cls, math.nan)
            if math.isfinite(h) and math.isfinite(u):
                paired = table.get("paired_segmentation", {}).get(cls)
                text, tie = _interval(paired) if paired else ("", False)
                noise = f"; {text}" if text else ""
                if tie:
                    lines.append(f"segmentation {cls}: **no winner beyond the noise of {paired['n']} held-out galaxies** "
                                 f"(frozen-token head IoU {h:.3f} vs U-Net {u:.3f}{noise}).")
                else:
                    word = "wins" if h >= u else "**loses**"
                    lines.append(f"segmentation {cls}: the frozen-token head {word} (IoU {h:.3f} vs U-Net {u:.3f}{noise}).")
    lines += _views_averaged_verdicts(table.get("views_averaged") or {})
    for kind in ("galaxy", "star"):
        sr = table["superres"].get(kind)
        if sr:
            g, b = sr["chi2_generated_median"], sr["chi2_baseline_median"]
            word = "better" if g < b else "**worse**"
            paired = ""
            if "generated_better_p" in sr:
                paired = (f"; generated closer to the truth for {sr['generated_better_fraction']:.0%} of the {sr['n']} objects, "
                          f"sign test p = {sr['generated_better_p']:.1g}")
            lines.append(f"super-resolution ({KIND_PLURAL[kind]}, from {sr['input_kind']}): generated spectra are {word} than the "
                         f"nearest-neighbour baseline (median reduced χ² {g:.2f} vs {b:.2f}{paired}).")
    return lines


def _views_averaged_verdicts(va: dict) -> list[str]:
    """The morphology and segmentation verdicts again with both sides averaging the eight views."""
    lines = []
    pm = va.get("paired", {}).get("morphology")
    if pm:
        p, b = va["morphology"][pm["probe"]]["accuracy"], va["morphology"][pm["baseline"]]["accuracy"]
        text, tie = _interval(pm)
        if tie:
            lines.append(f"morphology, {N_VIEWS} views averaged: **no winner beyond the noise of {pm['n']} held-out "
                         f"galaxies** — {pm['probe']} {p:.3f}, {pm['baseline']} {b:.3f} ({text}).")
        else:
            word = "wins" if p >= b else "**loses**"
            lines.append(f"morphology, {N_VIEWS} views averaged: the foundation model {word} — {pm['probe']} {p:.3f}, "
                         f"{pm['baseline']} {b:.3f} ({text}).")
    seg = va.get("segmentation", {})
    head, unet = _head_and_unet(seg)
    for cls, pc in va.get("paired", {}).get("segmentation", {}).items():
        h, u = head["iou"][cls], unet["iou"][cls]
        text, tie = _interval(pc)
        word = "ties with" if tie else ("wins against" if h >= u else "**loses** to")
        lines.append(f"segmentation {cls}, {N_VIEWS} views averaged: the frozen-token head {word} the U-Net "
                     f"(IoU {h:.3f} vs {u:.3f}; {text}).")
    return lines


def _fmt(x) -> str:
    return "—" if x is None or (isinstance(x, float) and not math.isfinite(x)) else f"{x:.3f}"


def _p(r: dict) -> str:
    return f" (p = {r['generated_better_p']:.1g})" if "generated_better_p" in r else ""


def _budgets(meta: dict) -> str:
    """One sentence on what each side trained for, so the table's comparisons can be judged."""
    epochs, seg = meta.get("epochs"), meta.get("seg_epochs")
    base = meta.get("baseline_epochs", epochs)
    prop = meta.get("property_epochs", epochs)
    spec = meta.get("spectrum_epochs") or base
    if not meta.get("augment"):
        return (f"Epochs: property probes {prop}, 1-D CNN {spec}, morphology probes {epochs}, image CNN {base}, "
                f"segmentation head and U-Net {seg}; all on the cutouts as observed.")
    return (f"Epochs: property probes {prop}, 1-D CNN {spec}. The heads that read the image (morphology, "
            f"segmentation) and the image baselines (CNN, U-Net) train on all {N_VIEWS} rotations/reflections of "
            f"their training galaxies' cutouts, one epoch = every view: morphology probes {view_epochs(epochs)}, "
            f"image CNN {view_epochs(base)}, segmentation head and U-Net {view_epochs(seg)} epochs.")


def convergence(probe_dir: Path, model_hash: str, baselines: dict) -> dict[str, dict]:
    """Each trained net's epochs and best (kept) epoch, 1-based, from the saved heads of ``model_hash`` and
    the baselines' record: a best epoch at the end says the net was still improving when its budget ran out."""
    found = {}
    for info in sorted(Path(probe_dir).glob("heads/*/*.json")):
        try:
            meta = json.loads(info.read_text())
        except ValueError:
            continue
        if meta.get("model_hash") == model_hash and isinstance(meta.get("best_epoch"), int) and isinstance(
                meta.get("epochs"), int):
            found[f"{info.stem} ({info.parent.name})"] = {"best": meta["best_epoch"] + 1, "of": meta["epochs"]}
    for method, t in baselines.get("training", {}).items():
        found[method] = {"best": t["best_epoch"] + 1, "of": t["epochs"]}
    return found


def _convergence_sentence(meta: dict) -> str:
    nets = meta.get("convergence") or {}
    if not nets:
        return ""
    parts = ", ".join(f"{name} {v['best']}/{v['of']}" for name, v in nets.items())
    return f" Best (kept) epoch of each net, of the epochs it ran (the last one: still improving): {parts}."


def _provenance(meta: dict) -> str:
    if "missing" in meta:  # report_from_caches: nothing was computed for this table
        return (f"Written from the cached runs of `aion-engine evaluate` (probes and baselines took "
                f"{meta['seconds']:.0f} s on {meta['device']}).")
    runs = meta.get("runs_seconds") or {}
    used = [f"{name} {float(sec):.0f} s" for name, sec in runs.items() if sec]
    spent = f" (the probe and baseline runs it used, computed in this call or reused from the cache: {', '.join(used)})" \
        if used else ""
    return f"Produced by `aion-engine evaluate` in {meta['seconds']:.0f} s on {meta['device']}{spent}."


def _views_averaged_markdown(va: dict) -> list[str]:
    if not va:
        return []
    out = ["", f"## With the {N_VIEWS} views of each held-out galaxy averaged (test-time augmentation)", "",
           f"The same trained nets, each held-out cutout also turned into its {N_VIEWS - 1} other rotations/reflections "
           "(re-encoded for the frozen-token heads); class probabilities averaged, segmentation maps turned back and "
           "averaged before the 0.5 threshold. It costs eight encodings per prediction, so the tables above, the "
           "cached predictions and the app use the cutout as observed by default (`predict --views 8` and the app's "
           "segmentation switch average one galaxy's morphology or masks)."]
    if va.get("morphology"):
        out += ["", "| morphology | accuracy as observed | accuracy, views averaged | n test |", "|---|---|---|---|"]
        for m, r in va["morphology"].items():
            out.append(f"| {m} | {_fmt(r.get('accuracy_observed'))} | {_fmt(r['accuracy'])} | {r['n_test']} |")
    if va.get("segmentation"):
        classes = list(schema.SEGMENTATION_CLASSES)
        out += ["", "| segmentation IoU, views averaged | " + " | ".join(classes) + " | n test |",
                "|---|" + "---|" * (len(classes) + 1)]
        for m, r in va["segmentation"].items():
            out.append(f"| {m} | " + " | ".join(_fmt(r["iou"].get(c)) for c in classes) + f" | {r.get('n_test', '—')} |")
    paired = va.get("paired", {})
    rows = []
    if paired.get("morphology"):
        r = paired["morphology"]
        rows.append(f"| morphology (accuracy) | {r['probe']} | {r['baseline']} | {r['n']} | {r['diff']:+.3f} | "
                    f"{r['diff_ci'][0]:+.3f} to {r['diff_ci'][1]:+.3f} |")
    for cls, r in paired.get("segmentation", {}).items():
        rows.append(f"| segmentation {cls} (IoU) | head on frozen tokens | U-Net (image) | {r['n']} | {r['diff']:+.3f} | "
                    f"{r['diff_ci'][0]:+.3f} to {r['diff_ci'][1]:+.3f} |")
    if rows:
        out += ["", "| views averaged | best probe | baseline | n | difference (probe − baseline) | 95 % interval |",
                "|---|---|---|---|---|---|", *rows]
    return out


def markdown(table: dict, meta: dict) -> str:
    """The results table as Markdown."""
    out = [f"# Results: {meta['dataset']} × {meta['model_id']}", "",
           f"Held-out split: hash of object id, seed {meta['seed']} (20 %). Objects used: {meta['n_objects']} labelled "
           f"(cap {meta['max_objects']}). Model hash {meta['model_hash']}. {_provenance(meta)} {_budgets(meta)}"
           f"{_convergence_sentence(meta)}", ""]
    methods = [f"probe: {c}" for c in INPUT_COMBOS] + ["trees (photometry)", "CNN (image)", "1-D CNN (spectrum)"]
    out += ["## Properties (held-out R²; redshift NMAD in brackets)", "",
            "| target | " + " | ".join(methods) + " |", "|---|" + "---|" * len(methods)]
    for target in (*GALAXY_TARGETS, *STAR_TARGETS):
        row = table["properties"].get(target)
        if not row:
            continue
        cells = []
        for m in methods:
            r = row.get(m)
            cell = _fmt(r.get("r2")) if r else "—"
            if r and "nmad" in r:
                cell += f" ({r['nmad']:.3f})"
            cells.append(cell)
        n = max((r.get("n_test", 0) for r in row.values()), default=0)
        out.append(f"| {LABELS.get(target, target)} (n={n}) | " + " | ".join(cells) + " |")
    out += _every_input_markdown(table.get("every_input", {}), methods)
    morph = table["properties"].get(MORPHOLOGY_TARGET)
    if morph:
        out += ["", "## Morphology (10 Galaxy10 classes, held-out accuracy)", "", "| method | accuracy | n test |", "|---|---|---|"]
        for m, r in morph.items():
            out.append(f"| {m} | {_fmt(r.get('accuracy'))} | {r.get('n_test', '—')} |")
    if table["segmentation"]:
        classes = list(schema.SEGMENTATION_CLASSES)
        out += ["", "## Segmentation (held-out IoU per class, pixels summed over galaxies)", "",
                "| method | " + " | ".join(classes) + " | n test |", "|---|" + "---|" * (len(classes) + 1)]
        for m, r in table["segmentation"].items():
            out.append(f"| {m} | " + " | ".join(_fmt(r["iou"].get(c)) for c in classes) + f" | {r.get('n_test', '—')} |")
    out += _views_averaged_markdown(table.get("views_averaged") or {})
    sr = table["superres"]
    if any(k in sr for k in ("galaxy", "star")):
        cfg = sr.get("config", {})
        out += ["", f"## Spectral super-resolution (held-out; {cfg.get('n_samples')} samples, {cfg.get('steps')} "
                f"{cfg.get('scheme')} steps, temperature {cfg.get('temperature')})", "",
                "| objects | input | n | median χ²ᵣ generated | median χ²ᵣ NN baseline | median χ²ᵣ codec round trip | generated better (sign test) | read-out: generated / baseline / codec round trip / true spectrum |",
                "|---|---|---|---|---|---|---|---|"]
        for kind in ("galaxy", "star"):
            r = sr.get(kind)
            if not r:
                continue
            if kind == "galaxy":
                read = "z within 0.01(1+z): " + _readouts(r, "z_{}_within_0.01")
            else:
                read = f"Teff MAE [K]: {_readouts(r, 'teff_{}_mae')}; [Fe/H] MAE: {_readouts(r, 'feh_{}_mae')}"
            out.append(f"| {KIND_PLURAL[kind]} | {r['input_kind']} | {r['n']} | {_fmt(r['chi2_generated_median'])} | "
                       f"{_fmt(r['chi2_baseline_median'])} | {_fmt(r.get('chi2_codec_roundtrip_median'))} | "
                       f"{_fmt(r['generated_better_fraction'])}{_p(r)} | {read} |")
    paired = table.get("paired", {})
    if paired or table.get("paired_segmentation"):
        out += ["", "## Best probe against best baseline (paired bootstrap over the held-out objects)", "",
                "| target | best probe | best baseline | n | difference (probe − baseline) | 95 % interval |",
                "|---|---|---|---|---|---|"]
        for target, r in paired.items():
            name = "morphology (accuracy)" if target == MORPHOLOGY_TARGET else f"{LABELS.get(target, target)} (R²)"
            lo, hi = r["diff_ci"]
            out.append(f"| {name} | {r['probe']} | {r['baseline']} | {r['n']} | {r['diff']:+.3f} | {lo:+.3f} to {hi:+.3f} |")
        for cls, r in table.get("paired_segmentation", {}).items():
            lo, hi = r["diff_ci"]
            out.append(f"| segmentation {cls} (IoU) | head on frozen tokens | U-Net (image) | {r['n']} | {r['diff']:+.3f} | "
                       f"{lo:+.3f} to {hi:+.3f} |")
    out += ["", "## Verdicts", ""] + [f"- {v}" for v in verdicts(table)] + [""]
    return "\n".join(out)


def _readouts(r: dict, pattern: str) -> str:
    """'generated / baseline / codec round trip / true spectrum' values of one super-resolution read-out
    ('—' for one a cached run did not record)."""
    return " / ".join(_fmt(r.get(pattern.format(name))) for name in ("generated", "baseline", "codec_roundtrip", "true_spectrum"))


def _every_input_markdown(every: dict, methods: list[str]) -> list[str]:
    """The properties section restricted to galaxies with every input (:func:`every_input_scores`)."""
    if not every:
        return []
    n = max((r["n_test"] for scores in every["properties"].values() for r in scores.values()), default=0)
    out = ["", f"## Galaxies with every input (photometry, LS image and DESI spectrum; held-out R², n={n})", "",
           "The same held-out predictions, scored only on the galaxies that have an image and a spectrum, so every "
           "method (the spectrum-only 1-D CNN too) is measured on the same galaxies.", "",
           "| target | " + " | ".join(methods) + " | best probe − best baseline (95 % interval) |",
           "|---|" + "---|" * (len(methods) + 1)]
    for target, scores in every["properties"].items():
        cells = [_fmt(scores[m]["r2"]) if m in scores else "—" for m in methods]
        paired = every["paired"].get(target)
        diff = (f"{paired['diff']:+.3f} ({paired['diff_ci'][0]:+.3f} to {paired['diff_ci'][1]:+.3f}): {paired['probe']} − "
                f"{paired['baseline']}") if paired else "—"
        out.append(f"| {LABELS.get(target, target)} | " + " | ".join(cells) + f" | {diff} |")
    return out


# --- plots ------------------------------------------------------------------------------


def _plots(out: Path, dataset, probes_folder: Path, base_folder: Path, sr_examples: dict | None) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from engine.tasks import arrays

    made = []
    frames = []
    if (probes_folder / "heldout.parquet").is_file():
        p = pd.read_parquet(probes_folder / "heldout.parquet")
        frames.append(p.assign(method="probe: " + p["combo"]))
    if (base_folder / "heldout.parquet").is_file():
        frames.append(pd.read_parquet(base_folder / "heldout.parquet"))
    held = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    targets = [t for t in (*GALAXY_TARGETS, *STAR_TARGETS) if len(held) and (held["target"] == t).any()]
    if targets:
        fig, axes = plt.subplots(1, len(targets), figsize=(3.3 * len(targets), 3.4), squeeze=False)
        for ax, t in zip(axes[0], targets, strict=True):
            sub = held[held["target"] == t]
            for method, color in ((f"probe: {list(INPUT_COMBOS)[-1]}", "C0"), ("trees (photometry)", "C1")):
                s = sub[sub["method"] == method]
                if len(s):
                    ax.scatter(s["true"], s["pred"], s=5, alpha=0.6, color=color, label=method)
            lo, hi = np.nanpercentile(sub["true"], [1, 99])
            ax.plot([lo, hi], [lo, hi], "k--", lw=0.8)
            ax.set_xlabel(f"true {LABELS.get(t, t)}")
            ax.set_ylabel("predicted")
        axes[0][0].legend(fontsize=6)
        fig.tight_layout()
        fig.savefig(out / "scatter.png", dpi=110)
        plt.close(fig)
        made.append("scatter.png")
    combo = list(INPUT_COMBOS)[-1]
    probes_json = probes_folder / "probes.json"
    if probes_json.is_file():
        res = json.loads(probes_json.read_text()).get("combos", {})
        cm = None
        for c in (combo, *reversed(list(INPUT_COMBOS))):
            if MORPHOLOGY_TARGET in res.get(c, {}):
                cm, combo = np.array(res[c][MORPHOLOGY_TARGET]["confusion"]), c
                break
        if cm is not None:
            fig, ax = plt.subplots(figsize=(6, 5.2))
            norm = cm / np.maximum(cm.sum(1, keepdims=True), 1)
            ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
            names = [n[:14] for n in schema.MORPHOLOGY_CLASSES]
            ax.set_xticks(range(len(names)), names, rotation=60, ha="right", fontsize=7)
            ax.set_yticks(range(len(names)), names, fontsize=7)
            for i in range(len(names)):
                for j in range(len(names)):
                    if cm[i, j]:
                        ax.text(j, i, int(cm[i, j]), ha="center", va="center", fontsize=6)
            ax.set_xlabel("predicted")
            ax.set_ylabel("true")
            ax.set_title(f"morphology probe ({combo})", fontsize=9)
            fig.tight_layout()
            fig.savefig(out / "confusion.png", dpi=110)
            plt.close(fig)
            made.append("confusion.png")
    seg_head, seg_unet = probes_folder / "segmentation_examples.npz", base_folder / "segmentation_examples.npz"
    if seg_head.is_file():
        h = np.load(seg_head)
        u = np.load(seg_unet) if seg_unet.is_file() else None
        ids = h["object_id"][:4]
        img = arrays.images(dataset, ids)
        cls = [list(schema.SEGMENTATION_CLASSES).index(c) for c in ("disk", "bar", "arms")]
        cols = 3 if u is None else 4
        fig, axes = plt.subplots(len(ids), cols, figsize=(2.2 * cols, 2.2 * len(ids)), squeeze=False)
        for r, oid in enumerate(ids):
            axes[r][0].imshow(img[r, 1], cmap="gray")
            axes[r][0].set_title(f"{oid}", fontsize=7)
            for k, (name, masks) in enumerate((("truth", h["true"][r]), ("frozen-token head", h["pred"][r]))):
                axes[r][k + 1].imshow(_rgb_masks(masks, cls))
                axes[r][k + 1].set_title(name, fontsize=7)
            if u is not None:
                match = np.flatnonzero(u["object_id"] == oid)
                if len(match):
                    axes[r][3].imshow(_rgb_masks(u["pred"][match[0]], cls))
                axes[r][3].set_title("U-Net", fontsize=7)
        for ax in axes.flat:
            ax.axis("off")
        fig.suptitle("red: disk, green: bar, blue: arms", fontsize=8)
        fig.tight_layout()
        fig.savefig(out / "segmentation.png", dpi=110)
        plt.close(fig)
        made.append("segmentation.png")
    if sr_examples:
        lam = sr_examples["wavelength"]
        rows = [(k, i) for k in ("galaxy", "star") if f"{k}_true" in sr_examples for i in range(len(sr_examples[f"{k}_true"]))]
        if rows:
            fig, axes = plt.subplots(len(rows), 1, figsize=(9, 2.2 * len(rows)), squeeze=False)
            for ax, (k, i) in zip(axes[:, 0], rows, strict=True):
                true = np.where(sr_examples[f"{k}_ivar"][i] > 0, sr_examples[f"{k}_true"][i], np.nan)
                ax.plot(lam, true, color="0.6", lw=0.5, label="true")
                ax.plot(lam, sr_examples[f"{k}_baseline"][i], color="C1", lw=0.6, alpha=0.8, label="NN baseline")
                m, s = sr_examples[f"{k}_mean"][i], sr_examples[f"{k}_std"][i]
                ax.plot(lam, m, color="C0", lw=0.7, label="generated mean")
                ax.fill_between(lam, m - s, m + s, color="C0", alpha=0.25, lw=0)
                ax.set_title(f"{k} {sr_examples[f'{k}_object_id'][i]}", fontsize=8)
                lo, hi = np.nanpercentile(true, [1, 99.5])
                ax.set_ylim(lo - 0.2 * abs(hi - lo), hi + 0.2 * abs(hi - lo))
            axes[0, 0].legend(fontsize=7, ncol=3)
            axes[-1, 0].set_xlabel("wavelength [Å]")
            fig.tight_layout()
            fig.savefig(out / "superres.png", dpi=110)
            plt.close(fig)
            made.append("superres.png")
    return made


def _rgb_masks(masks: np.ndarray, channels: list[int]) -> np.ndarray:
    return np.stack([masks[c].astype(float) for c in channels], axis=-1)


# --- entry point ------------------------------------------------------------------------


def evaluate(
    dataset_dir, model_dir, out_dir=None, *, seed: int = 0, epochs: int = DEFAULT_EPOCHS, baseline_epochs: int | None = None,
    max_objects: int | None = DEFAULT_MAX_OBJECTS, superres_per_kind: int = 40, superres: GenerationConfig = EVALUATION,
    max_seg_galaxies: int | None = 1500, progress: bool = True, retrain: bool = False, augment: bool = True,
    seg_epochs: int | None = None,
) -> dict:
    """Produce the results table and plots; returns the results dict (also written as JSON).

    ``augment``: the image heads and the image baselines train on the eight dihedral views of their
    training galaxies (:mod:`engine.tasks.augment`).

    ``baseline_epochs`` (default: ``epochs``) trains the baseline CNNs; the same budget as the probes, so
    the table does not flatter the foundation model with under-trained baselines. ``seg_epochs`` (default
    :func:`default_seg_epochs` of ``epochs``) trains the segmentation head and the U-Net alike.
    """
    baseline_epochs = epochs if baseline_epochs is None else baseline_epochs
    from engine.model.fast import enable_fast_attention
    from engine.model.loading import load_model

    t0 = time.time()
    dataset = open_dataset(dataset_dir)
    loaded = load_model(model_dir)
    enable_fast_attention(loaded.model)
    out = Path(out_dir) if out_dir is not None else default_out_dir(dataset.name, loaded.model_id)
    out.mkdir(parents=True, exist_ok=True)
    probes = _probe_results(dataset_dir, model_dir, loaded, dataset, seed=seed, epochs=epochs, max_objects=max_objects,
                            max_seg_galaxies=max_seg_galaxies, progress=progress, retrain=retrain, augment=augment,
                            seg_epochs=seg_epochs)
    baselines = run_baselines(dataset_dir, seed=seed, epochs=baseline_epochs, max_objects=max_objects,
                              max_seg_galaxies=max_seg_galaxies, progress=progress,
                              seg_epochs=probes.get("seg_epochs", default_seg_epochs(epochs)), augment=augment)
    sr, sr_examples = _superres_results(loaded, dataset, model_dir, seed=seed, config=superres,
                                        max_per_kind=superres_per_kind, progress=progress, retrain=retrain)
    table = collect(probes, baselines, sr)
    if augment:
        averaged = heldout_view_scores(loaded, dataset, probes_dir(dataset, model_dir), probes, progress=progress)
        table["views_averaged"] = views_averaged_table(averaged, baselines, seed)
    heldout = _heldout_predictions(probes_dir(dataset, model_dir), baselines_dir(dataset))
    table["paired"] = paired_differences(table, heldout, seed)
    table["every_input"] = every_input_scores(heldout, dataset.catalog, seed)
    table["paired_segmentation"] = paired_segmentation(table, seed)
    meta = {"dataset": dataset.name, "dataset_hash": dataset.info.get("hash"), "model_id": loaded.model_id,
            "model_hash": loaded.hash, "seed": seed, **_run_budgets(probes, baselines), "max_objects": max_objects, "max_seg_galaxies": max_seg_galaxies, "n_objects": probes.get("n_objects"),
            "device": "CPU", "convergence": convergence(probes_dir(dataset, model_dir), loaded.hash, baselines),
            "runs_seconds": {"probes": probes.get("seconds"), "baselines": baselines.get("seconds")},
            "seconds": time.time() - t0}
    results = {"meta": meta, **_without_counts(table), "verdicts": verdicts(table)}
    results["plots"] = _plots(out, dataset, probes_dir(dataset, model_dir), baselines_dir(dataset), sr_examples)
    meta["seconds"] = time.time() - t0
    _write(out / "results.json", json.dumps(results, indent=2, default=_jsonable))
    _write(out / "results.md", markdown(table, meta))
    results["out_dir"] = str(out)
    return results


def report_from_caches(dataset_dir, model_dir, out_dir=None) -> dict:
    """Write the table from whatever finished results are cached (probes, baselines, super-resolution),
    without computing anything; sections whose run has not finished are left out and listed."""
    from engine.model.loading import load_model

    dataset = open_dataset(dataset_dir)
    loaded = load_model(model_dir)
    out = Path(out_dir) if out_dir is not None else default_out_dir(dataset.name, loaded.model_id)
    out.mkdir(parents=True, exist_ok=True)
    pdir, bdir = probes_dir(dataset, model_dir), baselines_dir(dataset)
    read = lambda p: json.loads(p.read_text()) if p.is_file() else {}  # noqa: E731
    probes = read(pdir / "probes.json")
    if probes.get("model_hash") != loaded.hash:
        probes = {}
    baselines = read(bdir / "baselines.json")
    sr = read(pdir / "superres.json")
    sr = sr.get("results", {}) if sr.get("key", {}).get("model_hash") == loaded.hash else {}
    missing = [name for name, part in (("probes", probes), ("baselines", baselines), ("super-resolution", sr)) if not part]
    table = collect(probes, baselines, sr)
    table["views_averaged"] = views_averaged_table(cached_view_scores(loaded, pdir), baselines, probes.get("seed", 0))
    heldout = _heldout_predictions(pdir, bdir)
    table["paired"] = paired_differences(table, heldout, probes.get("seed", 0))
    table["every_input"] = every_input_scores(heldout, dataset.catalog, probes.get("seed", 0))
    table["paired_segmentation"] = paired_segmentation(table, probes.get("seed", 0))
    meta = {"dataset": dataset.name, "dataset_hash": dataset.info.get("hash"), "model_id": loaded.model_id,
            "model_hash": loaded.hash, "seed": probes.get("seed", 0), "max_objects": probes.get("max_objects"),
            "max_seg_galaxies": probes.get("max_seg_galaxies"), "n_objects": probes.get("n_objects"), "device": "CPU",
            "seconds": float(probes.get("seconds", 0)) + float(baselines.get("seconds", 0)), "missing": missing,
            "convergence": convergence(pdir, loaded.hash, baselines), **_run_budgets(probes, baselines)}
    results = {"meta": meta, **_without_counts(table), "verdicts": verdicts(table)}
    examples = None
    if sr and (pdir / "superres_examples.npz").is_file():
        with np.load(pdir / "superres_examples.npz") as ex:
            examples = {k: ex[k] for k in ex.files}
    results["plots"] = _plots(out, dataset, pdir, bdir, examples)
    text = markdown(table, meta)
    if missing:
        text += "\n**Not finished when this table was written:** " + ", ".join(missing) + ".\n"
    _write(out / "results.json", json.dumps(results, indent=2, default=_jsonable))
    _write(out / "results.md", text)
    results["out_dir"] = str(out)
    return results


def _run_budgets(probes: dict, baselines: dict) -> dict:
    """The epochs and view settings the probe and baseline runs recorded (what :func:`_budgets` reports)."""
    settings = baselines.get("settings", {})
    return {"epochs": probes.get("epochs", settings.get("epochs")), "baseline_epochs": settings.get("epochs"),
            "property_epochs": probes.get("property_epochs", probes.get("epochs")),
            "spectrum_epochs": settings.get("spectrum_epochs"),
            "seg_epochs": probes.get("seg_epochs", settings.get("seg_epochs")),
            "augment": bool(probes.get("augment", settings.get("augment", False)))}


def _jsonable(obj):
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    return str(obj)


def _write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)
