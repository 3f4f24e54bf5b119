"""Survey column names -> the schema's catalog columns, and survey classes -> ``kind``.

Names are matched case-insensitively (MMU keeps Legacy Survey sweep names in upper case and
DESI's in lower case). Values are copied unchanged: the schema's units are the surveys' own.
"""

from __future__ import annotations

import numpy as np

from engine.data import schema

#: schema column -> survey column names tried in order, per source.
SCALARS: dict[str, dict[str, tuple[str, ...]]] = {
    "image_ls": {
        **{c: (c.upper(),) for c in schema.LS_FLUX_COLUMNS},
        "ebv": ("EBV",),
        **{c: (c.upper(),) for c in schema.LS_SHAPE_COLUMNS},
    },
    "image_hsc": {
        **{f"mag_{b}": (f"{b}_cmodel_mag",) for b in "grizy"},
        **{f"a_{b}": (f"a_{b}",) for b in "grizy"},
        "hsc_shape11": ("i_sdssshape_shape11",),
        "hsc_shape22": ("i_sdssshape_shape22",),
        "hsc_shape12": ("i_sdssshape_shape12",),
    },
    "spectrum_desi": {
        "z": ("Z",),
        "ebv": ("EBV",),
        "flux_g": ("FLUX_G",),
        "flux_r": ("FLUX_R",),
        "flux_z": ("FLUX_Z",),
        "flux_w1": ("FLUX_W1",),
        "flux_w2": ("FLUX_W2",),
    },
    "spectrum_sdss": {"z": ("Z",)},
    "xp_gaia": {
        "phot_g": ("phot_g_mean_flux",),
        "phot_bp": ("phot_bp_mean_flux",),
        "phot_rp": ("phot_rp_mean_flux",),
        "parallax": ("parallax",),
    },
}

_CLASS_TO_KIND = {"GALAXY": "galaxy", "STAR": "star", "QSO": "qso"}


def find(names, *wanted: str) -> str | None:
    """The first of ``wanted`` present in ``names`` (case-insensitive), as spelled in ``names``."""
    lookup = {n.lower(): n for n in names}
    for w in wanted:
        if w.lower() in lookup:
            return lookup[w.lower()]
    return None


def kind_from_class(values) -> np.ndarray:
    """DESI SPECTYPE / SDSS CLASS (GALAXY, STAR, QSO) -> kind; unknown -> galaxy."""
    out = []
    for v in np.asarray(values).ravel():
        text = (v.decode() if isinstance(v, bytes) else str(v)).strip().upper()
        out.append(_CLASS_TO_KIND.get(text, "galaxy"))
    return np.array(out, dtype=object)


def kind_from_ls_type(values) -> np.ndarray:
    """Legacy Survey TYPE: PSF -> star, any galaxy model (REX, EXP, DEV, SER, ...) -> galaxy."""
    out = []
    for v in np.asarray(values).ravel():
        text = (v.decode() if isinstance(v, bytes) else str(v)).strip().upper()
        out.append("star" if text == "PSF" else "galaxy")
    return np.array(out, dtype=object)


def kind_from_gaia(columns: dict[str, np.ndarray], n: int) -> np.ndarray:
    """Gaia DSC class probabilities when present (argmax of star/quasar/galaxy), else star."""
    probs = [columns.get(f"classprob_dsc_combmod_{k}") for k in ("star", "quasar", "galaxy")]
    if any(p is None for p in probs):
        return np.array(["star"] * n, dtype=object)
    stack = np.nan_to_num(np.stack([np.asarray(p, np.float64) for p in probs], axis=1), nan=-1.0)
    return np.array(["star", "qso", "galaxy"], dtype=object)[stack.argmax(axis=1)]


def scalar_columns(source: str, get) -> dict[str, np.ndarray]:
    """Schema scalar columns for ``source``; ``get(name)`` returns a survey column or None."""
    out: dict[str, np.ndarray] = {}
    for target, candidates in SCALARS[source].items():
        for cand in candidates:
            values = get(cand)
            if values is not None:
                out[target] = np.asarray(values, dtype=np.float64).ravel()
                break
    return out
