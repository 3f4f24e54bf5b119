"""``Predictor``: one object's properties, segmentation and super-resolved spectrum, fast.

The app and ``aion-engine predict`` call this. Opening loads the model and the trained heads
once; each call encodes only the object asked for (a few tens of milliseconds for the nano
model on a CPU), or reads ``predictions.parquet`` when it is up to date.
"""

from __future__ import annotations

import json
import os

import numpy as np
import pandas as pd
import torch

from engine.data import schema
from engine.data.store import Dataset, open_dataset
from engine.errors import MissingModalityError, ModelError, ValidationError
from engine.tasks.augment import N_VIEWS, mean_class_probabilities, mean_mask_probabilities
from engine.tasks.features import Layout, combo_keys, embed_objects_canonical
from engine.tasks.predictions import PREDICTION_COLUMNS, heads_digest, predictions_path
from engine.tasks.probes import BEST_COMBO, SEGMENTATION_COMBO, apply_heads, load_heads, probes_dir
from engine.tasks.segmentation import CLASSES, THRESHOLD
from engine.tasks.superres import INTERACTIVE, GenerationConfig, super_resolve

#: approximate effective wavelengths (A) of the photometric bands, for plotting low-res inputs
EFFECTIVE_WAVELENGTH: dict[str, float] = {
    "flux_g": 4800.0, "flux_r": 6400.0, "flux_i": 7800.0, "flux_z": 9200.0, "flux_w1": 34000.0,
    "flux_w2": 46000.0, "flux_w3": 120000.0, "flux_w4": 220000.0, "phot_bp": 5110.0, "phot_g": 6230.0, "phot_rp": 7770.0,
}
TRUTH_OF = {"pred_z": "truth_z", "pred_log_mstar": "truth_log_mstar", "pred_ssfr": "truth_ssfr", "pred_teff": "truth_teff",
            "pred_logg": "truth_logg", "pred_feh": "truth_feh", "pred_morphology": "truth_morphology"}


class Predictor:
    """Predictions for single objects of one dataset under one model."""

    def __init__(self, dataset: Dataset, loaded, model_ref: str | os.PathLike):
        self.dataset = dataset
        self.loaded = loaded
        self.model_ref = model_ref
        self.probes = probes_dir(dataset, model_ref)
        self._heads: dict[str, dict] = {}
        self._cached: pd.DataFrame | None = None

    @classmethod
    def open(cls, dataset_dir, model, device: str = "cpu") -> Predictor:
        from engine.model.fast import enable_fast_attention
        from engine.model.loading import load_model

        loaded = load_model(model, device=device)
        enable_fast_attention(loaded.model)
        return cls(open_dataset(dataset_dir), loaded, model)

    # --- helpers ------------------------------------------------------------------------

    def _heads_of(self, combo: str) -> dict:
        if combo not in self._heads:
            heads = load_heads(self.probes, combo, model_hash=self.loaded.hash)
            if not heads:
                raise ModelError(f"{self.probes / 'heads' / combo}: no heads trained for model {self.loaded.hash}; "
                                 "run `aion-engine train probes` first")
            self._heads[combo] = heads
        return self._heads[combo]

    def _row(self, object_id: int) -> pd.Series:
        return self.dataset.objects([int(object_id)]).iloc[0]  # UnknownObjectError for unknown ids

    def _cached_predictions(self) -> pd.DataFrame | None:
        if self._cached is None:
            path = predictions_path(self.dataset, self.model_ref)
            meta_path = path.with_suffix(".json")
            if not (path.is_file() and meta_path.is_file()):
                return None
            meta = json.loads(meta_path.read_text())
            if meta.get("model_hash") != self.loaded.hash or meta.get("heads") != heads_digest(self.probes, BEST_COMBO):
                return None
            self._cached = pd.read_parquet(path).set_index("object_id")
        return self._cached

    # --- the three answers -------------------------------------------------------------

    @torch.inference_mode()
    def properties(self, object_id: int, views: int = 1) -> dict:
        """Predicted properties (+ truth where the catalog has it): ``pred_*``, ``truth_*``, ``source``.

        ``views`` > 1 averages a galaxy's morphology probabilities over that many dihedral views of its
        cutout (:mod:`engine.tasks.augment`), each encoded live: on the default mock's held-out galaxies
        eight views lifted the photometry + image probe from 85.8-86.1 % to 86.8-88.4 % over three
        trainings (``docs/tasks.md``; this head reads photometry + image + spectrum), for eight
        encodings instead of a cache read. The other properties come from the cutout as observed.
        """
        _check_views(views)
        row = self._row(object_id)
        kind = str(row["kind"])
        cached = self._cached_predictions()
        if views == 1 and cached is not None and int(object_id) in cached.index:
            values = cached.loc[int(object_id)].to_dict()
            source = "cache"
        elif kind in ("galaxy", "star"):
            layout = Layout(combo_keys(BEST_COMBO, self.loaded.token_keys))
            tok, msk = embed_objects_canonical(self.loaded, self.dataset, np.array([int(object_id)]), layout)
            heads = self._heads_of(BEST_COMBO)
            values = apply_heads(heads, tok.float(), msk, np.array([kind])).iloc[0].to_dict()
            if views > 1 and kind == "galaxy" and "morphology" in heads:
                prob = self._view_averaged_morphology(heads["morphology"][0], int(object_id), layout, tok, msk, views)
                values |= {"pred_morphology": int(prob.argmax()), "pred_morphology_prob": float(prob.max())}
            source = "live"
        else:
            values, source = {}, "none"
        out: dict = {"object_id": int(object_id), "kind": kind, "source": source, "views": int(views)}
        for col in PREDICTION_COLUMNS:
            v = values.get(col, np.nan if col != "pred_morphology" else -1)
            out[col] = int(v) if col == "pred_morphology" and np.isfinite(v) else (float(v) if v is not None else float("nan"))
        m = out["pred_morphology"]
        out["pred_morphology_name"] = schema.MORPHOLOGY_CLASSES[m] if isinstance(m, int) and 0 <= m < len(schema.MORPHOLOGY_CLASSES) else None
        for truth in TRUTH_OF.values():
            if truth in row.index and pd.notna(row[truth]):
                out[truth] = int(row[truth]) if truth == "truth_morphology" else float(row[truth])
        return out

    def _view_averaged_morphology(self, module, object_id: int, layout: Layout, tok: torch.Tensor, msk: torch.Tensor,
                                  views: int) -> np.ndarray:
        """Class probabilities averaged over the cutout as observed (``tok``) and its turned views 1..views-1."""

        def logits(view: int) -> torch.Tensor:
            if view == 0:
                return module(tok.float(), msk)
            tok_v, msk_v = embed_objects_canonical(self.loaded, self.dataset, np.array([object_id]), layout, view)
            return module(tok_v.float(), msk_v)

        return mean_class_probabilities(logits, views)[0].numpy()

    @torch.inference_mode()
    def segmentation(self, object_id: int, views: int = 1) -> dict[str, np.ndarray]:
        """Predicted masks: class name -> bool (96, 96) array, from the frozen image tokens.

        ``views`` > 1 averages the head's per-pixel probabilities over that many dihedral views of the
        cutout, each encoded live and its map turned back onto the observed grid, before the threshold:
        on the default mock's held-out galaxies the eight views lift the arm IoU (``docs/tasks.md``),
        for eight encodings instead of one.
        """
        _check_views(views)
        row = self._row(object_id)
        flag = schema.source("image_ls").flag
        if flag in row.index and not bool(row[flag]):
            raise MissingModalityError(f"object_id {int(object_id)} has no Legacy Survey image to segment")
        heads = self._heads_of(SEGMENTATION_COMBO)
        if "segmentation" not in heads:
            raise ModelError(f"{self.probes}: no segmentation head; run `aion-engine train probes` on a dataset with segmaps")
        module, meta = heads["segmentation"]
        layout = Layout(combo_keys(SEGMENTATION_COMBO, self.loaded.token_keys))
        image = layout.slice_of("tok_image")

        def logits(view: int) -> torch.Tensor:
            tok, _ = embed_objects_canonical(self.loaded, self.dataset, np.array([int(object_id)]), layout, view)
            return module(tok[:, image].float())

        masks = (mean_mask_probabilities(logits, int(views)) > THRESHOLD)[0].numpy()
        return {name: masks[j] for j, name in enumerate(meta.get("classes", CLASSES))}

    @torch.inference_mode()
    def superres(self, object_id: int, n_samples: int = INTERACTIVE.n_samples, steps: int = INTERACTIVE.steps,
                 temperature: float = 1.0, seed: int = 0, scale: str = INTERACTIVE.scale) -> dict:
        """Generated DESI-resolution spectra from the low-resolution inputs, with input and truth."""
        row = self._row(object_id)
        config = GenerationConfig(n_samples=n_samples, steps=steps, temperature=temperature, seed=seed, scale=scale)
        out = super_resolve(self.loaded, self.dataset, [int(object_id)], config)
        result = {
            "object_id": int(object_id),
            "wavelength": out["wavelength"],
            "samples": out["samples"][0],
            "mean": out["mean"][0],
            "std": out["std"][0],
            "input_kind": out["input_kind"],
            "scale_source": str(out["scale_source"][0]),
            "norm_flux": float(out["norm_flux"][0]),
            "input": self._lowres_input(row, out["input_kind"]),
            "truth": None,
        }
        flag = schema.source("spectrum_desi").flag
        if flag in row.index and bool(row[flag]) and self.dataset.has_source("spectrum_desi"):
            data = self.dataset.read("spectrum_desi", [int(object_id)], fields=("spectrum_flux", "spectrum_ivar", "spectrum_mask"))
            bad = np.asarray(data["spectrum_mask"][0]).astype(bool)
            result["truth"] = np.where(bad, np.nan, np.asarray(data["spectrum_flux"][0], dtype=float))
            result["truth_ivar"] = np.where(bad, 0.0, np.asarray(data["spectrum_ivar"][0], dtype=float))
        return result

    def _lowres_input(self, row: pd.Series, input_kind: str) -> dict:
        if input_kind == "xp":
            coeff = self.dataset.read("xp_gaia", [int(row["object_id"])], fields=("coeff",))["coeff"][0]
            return {"coeff_bp": np.asarray(coeff[: schema.XP_N_COEFF], float), "coeff_rp": np.asarray(coeff[schema.XP_N_COEFF :], float)}
        bands = [c for c in EFFECTIVE_WAVELENGTH if c in row.index and pd.notna(row[c])]
        return {"bands": bands, "wavelength": np.array([EFFECTIVE_WAVELENGTH[b] for b in bands]),
                "flux": np.array([float(row[b]) for b in bands])}


def _check_views(views: int) -> None:
    if not 1 <= int(views) <= N_VIEWS:
        raise ValidationError(f"views={views!r}: accepted 1 to {N_VIEWS} dihedral views of the cutout")


def open_predictor(dataset_dir, model) -> Predictor:
    return Predictor.open(dataset_dir, model)


__all__ = ["Predictor", "open_predictor"]
