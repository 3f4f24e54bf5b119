"""Put survey image cutouts into the dataset layout: schema band order, 96x96, float32.

Layout written (per object): ``image_array`` and ``image_ivar`` (bands, 96, 96) float32,
``image_mask`` (bands, 96, 96) bool with True = bad pixel (as the mock survey and the
spectra; MMU's Legacy Survey ``bit_mask`` is the opposite, a clean-pixel map, so it is
inverted on the way in), ``image_band`` the schema band names,
``image_psf_fwhm`` and ``image_scale`` (bands,) float32.

* Bands are matched case-insensitively to the schema names (``des-g`` -> ``DES-G``; a bare
  ``g`` in a Legacy Survey file means ``DES-G``). A band the schema does not know is an error;
  a schema band the file lacks is filled with zeros, ivar 0 and mask True, which is how
  AION's image codec treats a missing channel.
* Larger cutouts are centre-cropped to 96 (the codec's input); smaller ones are padded with
  ivar 0 / mask True pixels (no information), never interpolated.
"""

from __future__ import annotations

import numpy as np

from engine.data import schema

SURVEY_BANDS = {"image_ls": schema.LS_BANDS, "image_hsc": schema.HSC_BANDS}
PIXEL_SCALE = {"image_ls": schema.LS_PIXEL_SCALE, "image_hsc": schema.HSC_PIXEL_SCALE}


def band_aliases(source: str) -> dict[str, str]:
    """Accepted spellings of each band of ``source`` -> schema name."""
    out: dict[str, str] = {}
    for name in SURVEY_BANDS[source]:
        letter = name.split("-")[1].lower()
        for alias in (name, name.lower(), letter, f"{letter}-band"):
            out[alias.lower()] = name
    return out


def map_bands(source: str, bands: list[str]) -> list[str] | None:
    """Schema names of ``bands`` for ``source``, or None if any band is unknown to it."""
    aliases = band_aliases(source)
    mapped = [aliases.get(b.strip().lower()) for b in bands]
    return None if any(m is None for m in mapped) else mapped


def detect_image_source(bands: list[str]) -> str | None:
    """Which image source a list of band names belongs to (HSC first: 'hsc-g' is explicit)."""
    lowered = [b.strip().lower() for b in bands]
    if all(b.startswith("hsc") for b in lowered):
        return "image_hsc" if map_bands("image_hsc", bands) else None
    if map_bands("image_ls", bands):
        return "image_ls"
    return None


def fit_size(arr: np.ndarray, fill, size: int = schema.IMAGE_SIZE) -> np.ndarray:
    """Centre-crop or pad the last two axes of ``arr`` to ``size`` (pad value ``fill``)."""
    h, w = arr.shape[-2:]
    if h >= size:
        top = (h - size) // 2
        arr = arr[..., top : top + size, :]
    if w >= size:
        left = (w - size) // 2
        arr = arr[..., :, left : left + size]
    h, w = arr.shape[-2:]
    if h < size or w < size:
        out = np.full((*arr.shape[:-2], size, size), fill, dtype=arr.dtype)
        top, left = (size - h) // 2, (size - w) // 2
        out[..., top : top + h, left : left + w] = arr
        arr = out
    return arr


def standardize(
    source: str,
    bands: list[str],
    array: np.ndarray,
    ivar: np.ndarray | None,
    clean: np.ndarray | None,
    psf_fwhm: np.ndarray | None = None,
    scale: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """Images (n, len(bands), H, W) with schema-named ``bands`` -> the dataset's image fields.

    ``clean`` is an optional good-pixel map (True = usable), per band or one for all bands.
    """
    target = SURVEY_BANDS[source]
    n = array.shape[0]
    size = schema.IMAGE_SIZE
    out_img = np.zeros((n, len(target), size, size), np.float32)
    out_ivar = np.zeros((n, len(target), size, size), np.float32)
    out_bad = np.ones((n, len(target), size, size), bool)
    out_psf = np.full((n, len(target)), np.nan, np.float32)
    out_scale = np.full((n, len(target)), PIXEL_SCALE[source], np.float32)
    if clean is not None and clean.ndim == 3:  # one map for all bands (MMU Legacy Survey bit_mask)
        clean = np.repeat(clean[:, None], array.shape[1], axis=1)
    for j, band in enumerate(bands):
        k = target.index(band)
        img = np.asarray(array[:, j], dtype=np.float32)
        finite = np.isfinite(img)
        iv = np.ones_like(img) if ivar is None else np.asarray(ivar[:, j], dtype=np.float32)
        iv = np.where(finite & np.isfinite(iv) & (iv > 0), iv, 0).astype(np.float32)
        good = finite & (iv > 0)
        if clean is not None:
            good &= np.asarray(clean[:, j], dtype=bool)
        out_img[:, k] = fit_size(np.where(finite, img, 0).astype(np.float32), 0)
        out_ivar[:, k] = fit_size(np.where(good, iv, 0).astype(np.float32), 0)  # masked pixels: no weight
        out_bad[:, k] = fit_size(~good, True)
        if psf_fwhm is not None:
            out_psf[:, k] = psf_fwhm[:, j]
        if scale is not None:
            out_scale[:, k] = scale[:, j]
    return {
        "image_array": out_img,
        "image_ivar": out_ivar,
        "image_mask": out_bad,
        "image_band": np.array([list(target)] * n, dtype="S8"),
        "image_psf_fwhm": out_psf,
        "image_scale": out_scale,
    }


def robust_ivar(array: np.ndarray) -> np.ndarray:
    """Per object and band: 1 / (1.4826 MAD)^2 of the cutout's pixels (sky-dominated)."""
    flat = array.reshape(*array.shape[:2], -1).astype(np.float64)
    med = np.nanmedian(flat, axis=-1, keepdims=True)
    sigma = 1.4826 * np.nanmedian(np.abs(flat - med), axis=-1)
    with np.errstate(divide="ignore"):
        ivar = np.where(sigma > 0, 1.0 / sigma**2, 0.0)
    return np.broadcast_to(ivar[..., None, None], array.shape).astype(np.float32)
