"""Raw inputs for the from-scratch baselines: photometric features, images, spectra, segmaps.

Baselines see the same objects and splits as the probes, but raw data instead of tokens:
asinh magnitudes and colours for the trees, arcsinh-stretched 96x96 cutouts for the CNN and
U-Net, continuum-normalised, 4x-binned DESI spectra for the 1-D CNN.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from engine.data import schema

PHOTOMETRY_COLUMNS: tuple[str, ...] = (*schema.LS_FLUX_COLUMNS, "phot_g", "phot_bp", "phot_rp")
SPECTRUM_BIN = 4


def photometry_features(rows: pd.DataFrame) -> np.ndarray:
    """asinh magnitudes of the photometry columns plus adjacent colours; NaN where missing (trees cope)."""
    cols = [c for c in PHOTOMETRY_COLUMNS if c in rows.columns]
    flux = rows[cols].to_numpy(dtype=np.float64)
    mags = -2.5 / np.log(10) * np.arcsinh(flux / 2.0)  # asinh magnitudes: finite for flux <= 0
    colours = mags[:, :-1] - mags[:, 1:]
    return np.concatenate([mags, colours], axis=1).astype(np.float32)


def _crop(arr: np.ndarray, size: int = schema.IMAGE_SIZE) -> np.ndarray:
    h, w = arr.shape[-2:]
    y0, x0 = max(0, (h - size) // 2), max(0, (w - size) // 2)
    return arr[..., y0 : y0 + size, x0 : x0 + size]


def images(dataset, ids: np.ndarray, batch: int = 256) -> np.ndarray:
    """(N, 4, 96, 96) float32 arcsinh-stretched LS cutouts in canonical band order (zeros for missing bands)."""
    out = np.zeros((len(ids), len(schema.LS_BANDS), schema.IMAGE_SIZE, schema.IMAGE_SIZE), dtype=np.float32)
    for s in range(0, len(ids), batch):
        chunk = ids[s : s + batch]
        data = dataset.read("image_ls", chunk, fields=("image_array", "image_mask", "image_band"))
        arr = np.asarray(data["image_array"], dtype=np.float32)
        arr = np.where(np.asarray(data["image_mask"]).astype(bool) | ~np.isfinite(arr), 0.0, arr)
        arr = _crop(arr)
        bands = np.asarray(data["image_band"]).astype(str)
        if bands.ndim == 1:
            bands = np.broadcast_to(bands, (len(arr), len(bands)))
        for j, band in enumerate(schema.LS_BANDS):
            hit = bands == band
            has = hit.any(1)
            src = hit.argmax(1)
            m = np.flatnonzero(has)
            out[s + m, j] = arr[m, src[m]]
    return np.arcsinh(out / 0.05).astype(np.float32)


def segmaps(dataset, ids: np.ndarray, classes=schema.SEGMENTATION_CLASSES) -> np.ndarray:
    """(N, n_classes, 96, 96) bool masks decoded from the uint8 segmap bits."""
    seg = _crop(np.asarray(dataset.read("segmap", ids, fields=("segmap",))["segmap"]).astype(np.uint8))
    return np.stack([(seg & schema.SEGMENTATION_BIT[c]) > 0 for c in classes], axis=1)


def spectra(dataset, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """DESI flux, ivar (bad pixels -> 0), wavelength grid and the binned, normalised CNN input.

    Returns ``(flux (N, L), ivar (N, L), wavelength (L,), cnn_input (N, 2, L // 4))``; the CNN
    input channels are the median-normalised binned flux and the binned good-pixel fraction.
    """
    data = dataset.read("spectrum_desi", ids, fields=("spectrum_flux", "spectrum_ivar", "spectrum_lambda", "spectrum_mask"))
    flux = np.asarray(data["spectrum_flux"], dtype=np.float32)
    ivar = np.asarray(data["spectrum_ivar"], dtype=np.float32)
    bad = np.asarray(data["spectrum_mask"]).astype(bool) | ~np.isfinite(flux) | ~np.isfinite(ivar) | (ivar <= 0)
    flux = np.where(bad, 0.0, flux).astype(np.float32)
    ivar = np.where(bad, 0.0, ivar).astype(np.float32)
    lam = np.asarray(data["spectrum_lambda"], dtype=np.float64)
    lam = lam[0] if lam.ndim == 2 else lam
    return flux, ivar, lam, cnn_spectrum_input(flux, ~bad)


def cnn_spectrum_input(flux: np.ndarray, good: np.ndarray) -> np.ndarray:
    n, length = flux.shape
    nb = length // SPECTRUM_BIN
    f = flux[:, : nb * SPECTRUM_BIN].reshape(n, nb, SPECTRUM_BIN)
    g = good[:, : nb * SPECTRUM_BIN].reshape(n, nb, SPECTRUM_BIN).astype(np.float32)
    cnt = g.sum(-1)
    binned = (f * g).sum(-1) / np.maximum(cnt, 1)
    scale = np.array([np.median(np.abs(b[c > 0])) if (c > 0).any() else 1.0 for b, c in zip(binned, cnt, strict=True)])
    scale = np.where(scale > 0, scale, 1.0)
    return np.stack([binned / scale[:, None], cnt / SPECTRUM_BIN], axis=1).astype(np.float32)
