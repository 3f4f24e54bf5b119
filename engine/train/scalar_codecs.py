"""Filling the official scalar codecs' quantile tables from a dataset.

``ScalarCodec`` / ``LogScalarCodec`` / ``MultiScalarCodec`` (Gaia XP, one table per coefficient,
arcsinh-compressed) map a value to the index of its quantile bin; "training" them means filling
their reservoir. The package's streaming reservoir leaves unfilled slots at a default value
(0, or e^-3 for log codecs), which would corrupt the table whenever a modality has fewer values
than the reservoir size (HSC or Gaia objects are a minority of a survey). So the reservoir is
set to the exact empirical quantiles of ALL training values (after the codec's own log /
compression transform) — the limit the streaming reservoir converges to.
``GridScalarCodec`` (redshift) is a fixed linear grid and needs nothing.
"""

from __future__ import annotations

import numpy as np
import torch
from aion.codecs import GridScalarCodec, LogScalarCodec, MultiScalarCodec, ScalarCodec
from aion.codecs.quantizers.scalar import ScalarReservoirQuantizer

from engine.errors import DatasetError
from engine.model.modalities import load_modalities, spec

SCALAR_CODEC_TYPES = (ScalarCodec, LogScalarCodec, MultiScalarCodec, GridScalarCodec)


def _fill(quantizer: ScalarReservoirQuantizer, transformed: np.ndarray) -> None:
    size = quantizer._reservoir_size
    table = np.quantile(transformed.astype(np.float64), np.linspace(0.0, 1.0, size))
    quantizer._reservoir.copy_(torch.as_tensor(table, dtype=quantizer._reservoir.dtype))
    quantizer._n_total_samples = int(len(transformed))
    quantizer._generate_index_to_val()


def fill_scalar_codec(codec: torch.nn.Module, values: np.ndarray, token_key: str) -> None:
    """Set the codec's quantile table from ``values`` ((n,) scalars or (n, k) XP coefficients)."""
    if isinstance(codec, GridScalarCodec):
        return
    values = np.asarray(values, dtype=np.float64)
    finite = np.isfinite(values) if values.ndim == 1 else np.isfinite(values).all(axis=1)
    values = values[finite]
    if len(values) < 2:
        raise DatasetError(f"modality {token_key!r}: {len(values)} finite training value(s); need at least 2")
    q = codec.quantizer
    if isinstance(codec, MultiScalarCodec):
        if values.ndim != 2 or values.shape[1] != q.num_quantizers:
            raise DatasetError(f"modality {token_key!r}: values have shape {values.shape}, expected (n, {q.num_quantizers})")
        for i, sub in enumerate(q.quantizers):
            _fill(sub, sub.compress(torch.as_tensor(values[:, i])).numpy())
    elif isinstance(codec, LogScalarCodec):
        _fill(q, q._log_and_apply_min(torch.as_tensor(values)).numpy())
    elif isinstance(codec, ScalarCodec):
        _fill(q, values)
    else:
        raise TypeError(f"{type(codec).__name__} is not a scalar codec; accepted: {[c.__name__ for c in SCALAR_CODEC_TYPES]}")


def scalar_values(dataset, token_key: str, object_ids: np.ndarray) -> np.ndarray:
    """The raw values of ``token_key`` for the objects that have it."""
    modality, present = load_modalities(dataset, object_ids, [token_key])[token_key]
    return modality.value.numpy()[present]


@torch.no_grad()
def roundtrip(codec: torch.nn.Module, values: np.ndarray) -> np.ndarray:
    """decode(encode(values)) — what the model sees of a value."""
    x = torch.as_tensor(np.asarray(values, dtype=np.float32))
    return codec.quantizer.decode(codec.quantizer.encode(x)).numpy()


def heldout_errors(codec: torch.nn.Module, values: np.ndarray) -> dict[str, float]:
    """Median relative error and median |error| / robust spread of the token round trip."""
    values = np.asarray(values, dtype=np.float64)
    rec = roundtrip(codec, values).astype(np.float64)
    err = np.abs(rec - values)
    scale = np.subtract(*np.percentile(values, [84, 16])) / 2 if values.size > 1 else 1.0
    rel = err / np.maximum(np.abs(values), 1e-12)
    return {
        "median_relative_error": float(np.median(rel)),
        "median_abs_error_over_spread": float(np.median(err) / max(float(scale), 1e-12)),
        "n": int(values.shape[0]),
    }


def is_scalar_key(token_key: str) -> bool:
    return spec(token_key).kind in ("scalar", "xp")
