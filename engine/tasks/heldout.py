"""Which heads made the cached predictions, and how good those heads were on held-out objects.

Light on purpose (json and hashlib only): the app reads it at start-up, before torch is imported.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

PREDICTIONS_META = "predictions.json"


def heads_digest(out_dir: Path, combo: str) -> str:
    """Hash of the trained head files of ``combo``: a retrained probe invalidates cached predictions."""
    h = hashlib.sha256()
    folder = Path(out_dir) / "heads" / combo
    for path in sorted(folder.glob("*.safetensors")) if folder.is_dir() else []:
        h.update(path.name.encode())
        h.update(path.read_bytes())
    return h.hexdigest()[:16]


def heldout_quality(results_folder: Path) -> dict[str, dict]:
    """How good each cached prediction column is: the held-out metrics of the head that made it
    (``pred_z`` -> ``{"r2", "rmse", "nmad", "n_test"}``, ``pred_morphology`` -> ``{"accuracy", "n_test"}``).

    Read from the heads' JSON beside their weights, and only when ``predictions.json`` says the cached
    predictions came from exactly these heads (else {}: other heads' errors would mislead).
    """
    folder = Path(results_folder)
    pdir = folder / "probes"
    try:
        meta = json.loads((folder / PREDICTIONS_META).read_text())
    except (OSError, ValueError):
        return {}
    combo = meta.get("combo")
    if not isinstance(combo, str) or meta.get("heads") != heads_digest(pdir, combo):
        return {}
    quality: dict[str, dict] = {}
    for name in ("galaxy", "star", "morphology"):
        try:
            metrics = json.loads((pdir / "heads" / combo / f"{name}.json").read_text()).get("metrics", {})
        except (OSError, ValueError):
            continue
        if name == "morphology":
            if "accuracy" in metrics:
                quality["pred_morphology"] = {k: metrics[k] for k in ("accuracy", "n_test") if k in metrics}
            continue
        for target, scores in metrics.items():
            if isinstance(scores, dict) and target.startswith("truth_"):
                quality["pred_" + target.removeprefix("truth_")] = {
                    k: scores[k] for k in ("r2", "rmse", "nmad", "n_test") if k in scores}
    return quality
