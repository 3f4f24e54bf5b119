"""Training the official ``aion`` image codec (MagViT autoencoder + FSQ) on a dataset's images.

The package has no training forward, so :func:`forward` composes the codec's own pieces:
preprocessing (crop, clamp, survey rescale, arcsinh range compression) → multi-survey band
projection with the channel mask (bands a survey lacks are simply absent) → encoder → FSQ
(straight-through) → decoder → projection back to the survey's bands.

The loss is the inverse-variance-weighted Gaussian NLL, evaluated in the range-compressed space
with the pixel variance propagated through the arcsinh (σ_c = σ · dc/dx). For small residuals
that is exactly the raw-pixel χ², but it stays bounded while the decoder is still wild (the raw
flux is a sinh of the network output) — the reason AION compresses the range in the first place.
Masked pixels and bands an object lacks carry zero weight. A noise floor ``SIGMA_FLOOR`` (in
compressed units; background noise is ~0.07 there) is added in quadrature: without it the
cores of bright stars, whose compressed-space σ is 10⁻⁴, outweigh everything else by 10⁶ and
one bright object per batch decides the gradient. The report's χ² uses the true ivar.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
from aion.codecs import ImageCodec

from engine.data import schema
from engine.errors import DatasetError

SIGMA_FLOOR = 0.01
IMAGE_SOURCES = {"image_ls": schema.LS_BANDS, "image_hsc": schema.HSC_BANDS}


@dataclass
class ImageBatch:
    flux: torch.Tensor  # (B, bands, 96, 96) raw survey units, bad pixels zeroed
    ivar: torch.Tensor  # (B, bands, 96, 96), zero where masked or the band is missing
    bands: list[str]

    @property
    def survey(self) -> str:
        return self.bands[0].split("-")[0]


def read_images(dataset, source: str, object_ids: np.ndarray) -> ImageBatch:
    """Flux and ivar of ``object_ids`` in the survey's canonical band order, centre-cropped to 96 px."""
    bands = IMAGE_SOURCES[source]
    data = dataset.read(source, object_ids, fields=("image_array", "image_ivar", "image_mask", "image_band"))
    path = dataset.root / schema.source(source).filename
    arr = np.asarray(data["image_array"], dtype=np.float32)
    ivar = np.asarray(data["image_ivar"], dtype=np.float32)
    if arr.ndim != 4 or ivar.shape != arr.shape:
        raise DatasetError(
            f"{path}: fields 'image_array' {arr.shape} and 'image_ivar' {ivar.shape} must both be (n, bands, H, W)"
        )
    size = schema.IMAGE_SIZE
    h, w = arr.shape[-2:]
    if h < size or w < size:
        raise DatasetError(f"{path}: images are {h}x{w} pixels; the image codec needs at least {size}x{size}")
    y0, x0 = (h - size) // 2, (w - size) // 2
    crop = (..., slice(y0, y0 + size), slice(x0, x0 + size))
    arr, ivar = arr[crop], ivar[crop]
    bad = np.asarray(data["image_mask"]).astype(bool)[crop] | ~np.isfinite(arr) | ~np.isfinite(ivar) | (ivar < 0)
    arr = np.where(bad, 0.0, arr)
    ivar = np.where(bad, 0.0, ivar)
    file_bands = np.asarray(data["image_band"]).astype(str)
    if file_bands.ndim == 1:
        file_bands = np.broadcast_to(file_bands, arr.shape[:2])
    flux_out = np.zeros((len(arr), len(bands), size, size), dtype=np.float32)
    ivar_out = np.zeros_like(flux_out)
    for j, band in enumerate(bands):
        hit = file_bands == band
        rows = np.flatnonzero(hit.any(axis=1))
        ch = hit.argmax(axis=1)[rows]
        flux_out[rows, j] = arr[rows, ch]
        ivar_out[rows, j] = ivar[rows, ch]
    return ImageBatch(torch.from_numpy(flux_out), torch.from_numpy(ivar_out), list(bands))


def _zp_scale(codec: ImageCodec, survey: str) -> float:
    return float(codec.rescaler.convert_zeropoint(schema.HSC_ZEROPOINT)) if survey == "HSC" else 1.0


def forward(codec: ImageCodec, batch: ImageBatch) -> dict[str, torch.Tensor]:
    """Compressed-space target and reconstruction, propagated inverse variance, FSQ codebook usage."""
    x = codec.clamp(batch.flux.clone(), batch.bands)  # clamps in place: work on a copy
    scale = _zp_scale(codec, batch.survey)
    x = x / scale
    target = codec._range_compress(x)
    padded, channel_mask = codec.image_padder.forward(target, batch.bands)
    h = codec.encoder(codec.subsample_in(padded, channel_mask))
    h = codec.pre_quant_proj(h)
    z_q, _, usage = codec.quantizer(h)
    out = codec.decoder(codec.post_quant_proj(z_q))
    full = torch.ones((len(out), codec.image_padder.nbands), dtype=torch.bool, device=out.device)
    recon = codec.image_padder.backward(codec.subsample_out(out, full), batch.bands)
    # dc/dx of c(x) = m s asinh(x / s) is m / sqrt(1 + (x/s)^2); ivar in rescaled units is ivar * scale^2
    s, m = codec.range_compression_factor, codec.mult_factor
    deriv = m / torch.sqrt(1.0 + (x / s) ** 2)
    ivar_c = batch.ivar * scale**2 / deriv**2
    ivar_c = torch.where(ivar_c > 0, 1.0 / (1.0 / ivar_c.clamp(min=1e-30) + SIGMA_FLOOR**2), ivar_c)
    return {"target": target, "recon": recon, "ivar_c": ivar_c, "usage": torch.as_tensor(usage)}


def loss(codec: ImageCodec, batch: ImageBatch) -> tuple[torch.Tensor, dict[str, float]]:
    """Mean inverse-variance-weighted NLL per valid pixel (compressed space, see module docstring)."""
    out = forward(codec, batch)
    valid = out["ivar_c"] > 0
    chi2 = out["ivar_c"] * (out["recon"] - out["target"]) ** 2
    value = 0.5 * chi2[valid].sum() / valid.sum().clamp(min=1)
    return value, {"nll": float(value.detach()), "codebook_usage": float(out["usage"])}


@torch.no_grad()
def reconstruct_raw(codec: ImageCodec, batch: ImageBatch) -> torch.Tensor:
    """Token round trip (encode → FSQ codes → decode) in the batch's raw survey units.

    Equivalent to ``codec.decode(codec.encode(image))`` but also works for HSC, whose decode
    path is broken in aion 0.0.2 (``_reverse_zeropoint`` is missing).
    """
    out = forward(codec, batch)
    return codec._reverse_range_compress(out["recon"]) * _zp_scale(codec, batch.survey)


@torch.no_grad()
def chi2_per_pixel(codec: ImageCodec, batch: ImageBatch) -> np.ndarray:
    """Raw-space χ² per valid pixel, one value per object (1 means reconstructed to the noise)."""
    recon = reconstruct_raw(codec, batch)
    clamped = codec.clamp(batch.flux.clone(), batch.bands)
    valid = batch.ivar > 0
    chi2 = torch.where(valid, batch.ivar * (recon - clamped) ** 2, torch.zeros_like(recon))
    per_obj = chi2.flatten(1).sum(1) / valid.flatten(1).sum(1).clamp(min=1)
    return per_obj.cpu().numpy()


def batch_stream(
    dataset, ids_by_source: dict[str, np.ndarray], batch_size: int, rng: np.random.Generator
) -> Iterator[ImageBatch]:
    """Endless shuffled batches, each from one survey, surveys drawn in proportion to their size."""
    sources = [s for s, ids in ids_by_source.items() if len(ids)]
    if not sources:
        raise DatasetError(f"{dataset.root}: no training images (sources {list(IMAGE_SOURCES)})")
    sizes = np.array([len(ids_by_source[s]) for s in sources], dtype=np.float64)
    orders = {s: rng.permutation(ids_by_source[s]) for s in sources}
    cursor = dict.fromkeys(sources, 0)
    while True:
        s = sources[int(rng.choice(len(sources), p=sizes / sizes.sum()))]
        ids = orders[s]
        if cursor[s] + batch_size > len(ids):
            orders[s] = ids = rng.permutation(ids_by_source[s])
            cursor[s] = 0
        chunk = ids[cursor[s] : cursor[s] + batch_size]
        cursor[s] += batch_size
        yield read_images(dataset, s, chunk)
