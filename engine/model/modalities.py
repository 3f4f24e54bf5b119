"""Map dataset columns and arrays to AION modality objects and token keys.

One registry entry per token key says which ``aion.modalities`` class it is, where its values
live in a dataset (an array source or a catalog column) and how many tokens it makes.
:func:`load_modalities` turns a batch of object ids into official modality objects plus a
``present`` mask: objects that lack a modality get a harmless placeholder row and
``present=False``, so callers mask those tokens out instead of feeding garbage.

Conventions (MMU / AION): ``spectrum_mask`` True marks a *bad* pixel (its ivar is zeroed);
``image_mask`` True marks a bad pixel (its flux is zeroed); images are given to the codec in the
survey's canonical band order (``schema.LS_BANDS`` / ``schema.HSC_BANDS``) and a band an object
lacks is filled with zeros.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from aion import modalities as am

from engine.data import schema
from engine.errors import DatasetError, ModelError

#: ``unmapped``: official modalities the published models carry (Legacy Survey source catalog,
#: AION's segmentation-map tokens) that no dataset field feeds; registered so such models and
#: their codecs load, never read from a dataset.
KINDS = ("image", "spectrum", "scalar", "xp", "unmapped")


@dataclass(frozen=True)
class ModalitySpec:
    """Where one AION token key comes from in a dataset."""

    token_key: str
    modality: type  # an aion.modalities class
    kind: str  # one of KINDS
    source: str | None = None  # array source name (schema.SOURCES) for image/spectrum/xp
    column: str | None = None  # catalog column for scalars
    xp_slice: tuple[int, int] | None = None  # coefficient range of xp_gaia 'coeff'
    bands: tuple[str, ...] = ()  # canonical image bands
    tokens: int | None = None  # for modalities whose class has no num_tokens

    @property
    def num_tokens(self) -> int:
        return int(self.tokens if self.tokens is not None else self.modality.num_tokens)

    @property
    def codec_name(self) -> str:
        """Folder under ``codecs/`` (the official modality ``name``; shared by LS/HSC images and DESI/SDSS spectra)."""
        return self.modality.name

    def present_in(self, catalog_rows) -> np.ndarray:
        """Which of these catalog rows have this modality (flag column for arrays, finite value for scalars)."""
        n = len(catalog_rows)
        if self.kind == "unmapped":
            return np.zeros(n, dtype=bool)
        if self.kind == "scalar":
            if self.column not in catalog_rows.columns:
                return np.zeros(n, dtype=bool)
            return np.isfinite(catalog_rows[self.column].to_numpy(dtype=np.float64, copy=True))
        flag = schema.source(self.source).flag
        if flag not in catalog_rows.columns:
            return np.zeros(n, dtype=bool)
        return catalog_rows[flag].to_numpy(dtype=bool, copy=True)


def _scalar(modality: type, column: str) -> ModalitySpec:
    return ModalitySpec(modality.token_key, modality, "scalar", column=column)


_SPECS: tuple[ModalitySpec, ...] = (
    ModalitySpec("tok_image", am.LegacySurveyImage, "image", source="image_ls", bands=schema.LS_BANDS),
    ModalitySpec("tok_image_hsc", am.HSCImage, "image", source="image_hsc", bands=schema.HSC_BANDS),
    ModalitySpec("tok_spectrum_desi", am.DESISpectrum, "spectrum", source="spectrum_desi"),
    ModalitySpec("tok_spectrum_sdss", am.SDSSSpectrum, "spectrum", source="spectrum_sdss"),
    _scalar(am.LegacySurveyFluxG, "flux_g"),
    _scalar(am.LegacySurveyFluxR, "flux_r"),
    _scalar(am.LegacySurveyFluxI, "flux_i"),
    _scalar(am.LegacySurveyFluxZ, "flux_z"),
    _scalar(am.LegacySurveyFluxW1, "flux_w1"),
    _scalar(am.LegacySurveyFluxW2, "flux_w2"),
    _scalar(am.LegacySurveyFluxW3, "flux_w3"),
    _scalar(am.LegacySurveyFluxW4, "flux_w4"),
    _scalar(am.LegacySurveyShapeR, "shape_r"),
    _scalar(am.LegacySurveyShapeE1, "shape_e1"),
    _scalar(am.LegacySurveyShapeE2, "shape_e2"),
    _scalar(am.LegacySurveyEBV, "ebv"),
    _scalar(am.HSCMagG, "mag_g"),
    _scalar(am.HSCMagR, "mag_r"),
    _scalar(am.HSCMagI, "mag_i"),
    _scalar(am.HSCMagZ, "mag_z"),
    _scalar(am.HSCMagY, "mag_y"),
    _scalar(am.HSCAG, "a_g"),
    _scalar(am.HSCAR, "a_r"),
    _scalar(am.HSCAI, "a_i"),
    _scalar(am.HSCAZ, "a_z"),
    _scalar(am.HSCAY, "a_y"),
    _scalar(am.HSCShape11, "hsc_shape11"),
    _scalar(am.HSCShape22, "hsc_shape22"),
    _scalar(am.HSCShape12, "hsc_shape12"),
    _scalar(am.GaiaFluxG, "phot_g"),
    _scalar(am.GaiaFluxBp, "phot_bp"),
    _scalar(am.GaiaFluxRp, "phot_rp"),
    _scalar(am.GaiaParallax, "parallax"),
    ModalitySpec("tok_xp_bp", am.GaiaXpBp, "xp", source="xp_gaia", xp_slice=(0, schema.XP_N_COEFF)),
    ModalitySpec(
        "tok_xp_rp", am.GaiaXpRp, "xp", source="xp_gaia", xp_slice=(schema.XP_N_COEFF, 2 * schema.XP_N_COEFF)
    ),
    _scalar(am.Z, "z"),
)

#: token key -> spec, in a fixed order (images, spectra, scalars, XP, z).
MODALITIES: dict[str, ModalitySpec] = {s.token_key: s for s in _SPECS}

#: Official modalities outside the default set: the published aion-base/large configs also
#: take sky position and two inputs no dataset field feeds. Models with them load and embed;
#: ``tok_ra``/``tok_dec`` can be read from the catalog when asked for explicitly.
EXTRA_MODALITIES: dict[str, ModalitySpec] = {
    s.token_key: s
    for s in (
        _scalar(am.Ra, "ra"),
        _scalar(am.Dec, "dec"),
        ModalitySpec("catalog", am.LegacySurveyCatalog, "unmapped", tokens=50),
        ModalitySpec("tok_segmap", am.LegacySurveySegmentationMap, "unmapped", tokens=144),
    )
}

#: Every token key the engine knows (default set first).
ALL_MODALITIES: dict[str, ModalitySpec] = {**MODALITIES, **EXTRA_MODALITIES}

LS_FLUX_KEYS = tuple(f"tok_flux_{b}" for b in ("g", "r", "i", "z", "w1", "w2", "w3", "w4"))
GAIA_FLUX_KEYS = ("tok_flux_g_gaia", "tok_flux_bp_gaia", "tok_flux_rp_gaia")

#: Keys never fed to an embedding view: redshift is a probe/evaluation target (it would leak
#: the answer), sky position would make "similar" mean "nearby on the sky".
NOT_EMBEDDED: tuple[str, ...] = ("tok_z", "tok_ra", "tok_dec")

#: What each embedding view feeds the encoder (restricted to the keys a model accepts).
#: ``joint`` is every dataset-fed modality except :data:`NOT_EMBEDDED`.
VIEWS: dict[str, tuple[str, ...]] = {
    "image": ("tok_image", "tok_image_hsc"),
    "spectrum": ("tok_spectrum_desi", "tok_spectrum_sdss"),
    "photometry": LS_FLUX_KEYS + GAIA_FLUX_KEYS,
    "joint": tuple(k for k in MODALITIES if k not in NOT_EMBEDDED),
}


def spec(token_key: str) -> ModalitySpec:
    """The registry entry for ``token_key``; the error lists the accepted keys."""
    try:
        return ALL_MODALITIES[token_key]
    except KeyError:
        raise ModelError(f"unknown token key {token_key!r}; accepted: {', '.join(ALL_MODALITIES)}") from None


def view_token_keys(view: str, model_keys: Iterable[str] | None = None) -> tuple[str, ...]:
    """The token keys of ``view`` that the model accepts (all of the view's keys when ``model_keys`` is None)."""
    if view not in VIEWS:
        raise ModelError(f"unknown view {view!r}; accepted: {', '.join(VIEWS)}")
    keys = VIEWS[view]
    if model_keys is not None:
        allowed = set(model_keys)
        keys = tuple(k for k in keys if k in allowed)
        if not keys:
            raise ModelError(
                f"the model accepts none of view {view!r}'s modalities {list(VIEWS[view])}; "
                f"its inputs are {sorted(allowed)}"
            )
    return keys


# --- loading ---------------------------------------------------------------------------


def load_modalities(
    dataset, object_ids: Sequence[int] | np.ndarray, token_keys: Iterable[str]
) -> dict[str, tuple[am.Modality, np.ndarray]]:
    """Official modality objects for ``object_ids`` (in that order), one per token key.

    Returns ``{token_key: (modality, present)}`` where ``present`` is a bool array over the
    objects. Rows of absent objects hold finite placeholders (zeros; fully masked spectra) and
    must be masked out by the caller. Array sources are read only for the present objects.
    """
    ids = np.atleast_1d(np.asarray(object_ids, dtype=np.int64))
    rows = dataset.objects(ids)
    out: dict[str, tuple[am.Modality, np.ndarray]] = {}
    cache: dict[str, dict[str, np.ndarray]] = {}
    for key in token_keys:
        sp = spec(key)
        if sp.kind == "unmapped":
            raise ModelError(f"token key {key!r} has no dataset mapping (no dataset field feeds it)")
        present = sp.present_in(rows)
        if sp.kind != "scalar" and present.any() and not dataset.has_source(sp.source):
            raise DatasetError(
                f"{dataset.root}: catalog flag {schema.source(sp.source).flag!r} is set but "
                f"{schema.source(sp.source).filename} is missing"
            )
        if sp.kind == "scalar":
            out[key] = (_scalar_modality(sp, rows, present), present)
        elif sp.kind == "image":
            out[key] = (_image_modality(sp, dataset, ids, present), present)
        elif sp.kind == "spectrum":
            out[key] = (_spectrum_modality(sp, dataset, ids, present), present)
        else:
            out[key] = (_xp_modality(sp, dataset, ids, present, cache), present)
    return out


def _scalar_modality(sp: ModalitySpec, rows, present: np.ndarray) -> am.Modality:
    n = len(rows)
    values = np.zeros(n, dtype=np.float32)
    if present.any():
        values[present] = rows[sp.column].to_numpy(dtype=np.float64)[present].astype(np.float32)
    return sp.modality(value=torch.from_numpy(values))


def _image_modality(sp: ModalitySpec, dataset, ids: np.ndarray, present: np.ndarray) -> am.Modality:
    n = len(ids)
    size = schema.IMAGE_SIZE
    flux = np.zeros((n, len(sp.bands), size, size), dtype=np.float32)
    if present.any():
        data = dataset.read(sp.source, ids[present], fields=("image_array", "image_mask", "image_band"))
        arr = np.asarray(data["image_array"], dtype=np.float32)
        path = dataset.root / schema.source(sp.source).filename
        if arr.ndim != 4:
            raise DatasetError(
                f"{path}: field 'image_array' has shape {arr.shape}, expected (n, bands, H, W)"
            )
        mask = np.asarray(data["image_mask"]).astype(bool)
        arr = np.where(mask | ~np.isfinite(arr), 0.0, arr).astype(np.float32)
        arr = _center_crop(arr, size, path)
        bands = np.asarray(data["image_band"]).astype(str)
        if bands.ndim == 1:
            bands = np.broadcast_to(bands, (len(arr), len(bands)))
        dest = np.flatnonzero(present)
        for j, band in enumerate(sp.bands):
            hit = bands == band  # (m, nb)
            has = hit.any(axis=1)
            if not has.any():
                continue
            src_ch = hit.argmax(axis=1)
            m = np.flatnonzero(has)
            flux[dest[m], j] = arr[m, src_ch[m]]
        unknown = {str(b) for b in np.unique(bands)} - set(sp.bands) - {""}
        if unknown:
            raise DatasetError(
                f"{path}: field 'image_band' has {sorted(unknown)}; accepted: {list(sp.bands)}"
            )
    return sp.modality(flux=torch.from_numpy(flux), bands=list(sp.bands))


def _center_crop(arr: np.ndarray, size: int, path) -> np.ndarray:
    h, w = arr.shape[-2:]
    if h < size or w < size:
        raise DatasetError(
            f"{path}: field 'image_array' is {h}x{w} pixels; the image codec needs at least {size}x{size}"
        )
    y0, x0 = (h - size) // 2, (w - size) // 2
    return arr[..., y0 : y0 + size, x0 : x0 + size]


def _spectrum_modality(sp: ModalitySpec, dataset, ids: np.ndarray, present: np.ndarray) -> am.Modality:
    n = len(ids)
    if not present.any():
        grid = schema.desi_wavelength() if sp.source == "spectrum_desi" else schema.sdss_wavelength()
        length = len(grid)
        lam = np.tile(grid.astype(np.float32), (n, 1))
        return sp.modality(
            flux=torch.zeros(n, length),
            ivar=torch.zeros(n, length),
            mask=torch.ones(n, length, dtype=torch.bool),
            wavelength=torch.from_numpy(lam),
        )
    data = dataset.read(
        sp.source, ids[present], fields=("spectrum_flux", "spectrum_ivar", "spectrum_lambda", "spectrum_mask")
    )
    path = dataset.root / schema.source(sp.source).filename
    flux_p = np.asarray(data["spectrum_flux"], dtype=np.float32)
    if flux_p.ndim != 2:
        raise DatasetError(f"{path}: field 'spectrum_flux' has shape {flux_p.shape}, expected (n, pixels)")
    ivar_p = np.asarray(data["spectrum_ivar"], dtype=np.float32)
    lam_p = np.asarray(data["spectrum_lambda"], dtype=np.float32)
    if lam_p.ndim == 1:
        lam_p = np.broadcast_to(lam_p, flux_p.shape)
    mask_p = np.asarray(data["spectrum_mask"]).astype(bool)
    bad = mask_p | ~np.isfinite(flux_p) | ~np.isfinite(ivar_p) | (ivar_p <= 0)
    length = flux_p.shape[1]
    flux = np.zeros((n, length), dtype=np.float32)
    ivar = np.zeros((n, length), dtype=np.float32)
    mask = np.ones((n, length), dtype=bool)
    lam = np.tile(lam_p[0], (n, 1)).astype(np.float32)
    flux[present] = np.where(bad, 0.0, flux_p)
    ivar[present] = np.where(bad, 0.0, ivar_p)
    mask[present] = bad
    lam[present] = lam_p
    return sp.modality(
        flux=torch.from_numpy(flux),
        ivar=torch.from_numpy(ivar),
        mask=torch.from_numpy(mask),
        wavelength=torch.from_numpy(lam),
    )


def _xp_modality(sp: ModalitySpec, dataset, ids, present, cache: dict) -> am.Modality:
    n = len(ids)
    lo, hi = sp.xp_slice
    values = np.zeros((n, hi - lo), dtype=np.float32)
    if present.any():
        if sp.source not in cache:
            cache[sp.source] = dataset.read(sp.source, ids[present], fields=("coeff",))
        coeff = np.asarray(cache[sp.source]["coeff"], dtype=np.float32)
        if coeff.ndim != 2 or coeff.shape[1] < hi:
            path = dataset.root / schema.source(sp.source).filename
            raise DatasetError(
                f"{path}: field 'coeff' has shape {coeff.shape}, expected (n, {2 * schema.XP_N_COEFF})"
            )
        values[present] = np.nan_to_num(coeff[:, lo:hi])
    return sp.modality(value=torch.from_numpy(values))


# --- helpers on modality objects ------------------------------------------------------


def select_rows(modality: am.Modality, rows: np.ndarray | torch.Tensor) -> am.Modality:
    """The same modality restricted to batch ``rows`` (band lists and other non-tensor fields kept)."""
    idx = torch.as_tensor(np.asarray(rows), dtype=torch.long)
    changes = {}
    for f in dataclasses.fields(modality):
        value = getattr(modality, f.name)
        if isinstance(value, torch.Tensor):
            changes[f.name] = value[idx.to(value.device)]
    return dataclasses.replace(modality, **changes)


def modality_to(modality: am.Modality, device: torch.device | str) -> am.Modality:
    """The same modality with every tensor moved to ``device``."""
    changes = {
        f.name: getattr(modality, f.name).to(device)
        for f in dataclasses.fields(modality)
        if isinstance(getattr(modality, f.name), torch.Tensor)
    }
    return dataclasses.replace(modality, **changes)
