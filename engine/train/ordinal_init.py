"""Smooth ("ordinal") initial embeddings for scalar tokens, so small datasets can learn them.

A scalar codec turns a value into one of ~1024 quantile bins. A freshly built ``aion.AION``
gives every bin an independent random embedding (encoder ``token_emb``) and output row
(decoder ``to_logits``), so bin 511 knows nothing of bin 512. AION-1 learns that order from
hundreds of millions of objects; with 10^4 objects each bin is seen a handful of times and the
model ends near chance on every scalar (cross-entropy ≈ ln 1024).

Here each bin's row starts as low-frequency Fourier features of its position (b / n_bins),
mixed into the model width by a fixed random orthogonal map, at unit scale: neighbouring bins
start close, the transformer can read "how large is this value" from the first step, and the
decoder's logits start smooth over bins. Rows stay trainable; the tensors keep the official shapes, so
a model trained this way saves, loads and runs exactly like any other AION model.
"""

from __future__ import annotations

import math

import torch

from engine.model.modalities import ALL_MODALITIES

INIT_CHOICES = ("ordinal", "random")


def fourier_features(n_rows: int, n_freq: int) -> torch.Tensor:
    """(n_rows, 2 n_freq + 1) float64: i / (n_rows - 1) - 0.5, then cos and sin of k pi i / (n_rows - 1)."""
    pos = torch.linspace(0.0, 1.0, n_rows, dtype=torch.float64)[:, None]
    freqs = torch.arange(1, n_freq + 1, dtype=torch.float64)[None, :] * math.pi
    return torch.cat([pos - 0.5, torch.cos(freqs * pos), torch.sin(freqs * pos)], dim=1)


def fourier_rows(n_rows: int, dim: int, n_freq: int = 16, seed: int = 0) -> torch.Tensor:
    """(n_rows, dim) unit-RMS rows, smooth in the row index; row i ~ features of i / (n_rows - 1)."""
    feats = fourier_features(n_rows, n_freq)  # (n, 2F+1)
    feats = feats - feats.mean(0, keepdim=True)
    feats = feats / feats.std(0, keepdim=True).clamp(min=1e-12)
    gen = torch.Generator().manual_seed(seed)
    k = feats.shape[1]
    mix = torch.linalg.qr(torch.randn(max(dim, k), max(dim, k), generator=gen, dtype=torch.float64))[0][:k, :dim]
    rows = feats @ mix
    return (rows / rows.pow(2).mean().sqrt()).float()


def scalar_keys(model) -> list[str]:
    """The model's scalar token keys (encoder or decoder side)."""
    keys = set(model.encoder_embeddings.keys()) | set(model.decoder_embeddings.keys())
    return sorted(k for k in keys if k in ALL_MODALITIES and ALL_MODALITIES[k].kind == "scalar")


def scalar_row_modules(model) -> list[tuple[int, str, str, str, torch.nn.Module]]:
    """(index in :func:`scalar_keys`, key, "encoder"|"decoder", "token_emb"|"to_logits", module owning the
    ``weight``) for every scalar modality's token and logit rows; a logit layer tied to its token rows
    is listed once."""
    out = []
    for i, key in enumerate(scalar_keys(model)):
        for side, emb in (("encoder", model.encoder_embeddings), ("decoder", model.decoder_embeddings)):
            if key not in emb:
                continue
            module = emb[key]
            out.append((i, key, side, "token_emb", module.token_emb))
            to_logits = getattr(module, "to_logits", None)
            # compare the stored parameters: reading ``.weight`` of a parametrised module would compute it
            tied = to_logits is not None and to_logits._parameters.get("weight") is not None and (
                to_logits._parameters.get("weight") is module.token_emb._parameters.get("weight"))
            if to_logits is not None and not tied:
                out.append((i, key, side, "to_logits", to_logits))
    return out


@torch.no_grad()
def init_scalar_embeddings(model, std: float = 1.0, seed: int = 0, logits_std: float = 0.02) -> list[str]:
    """Give every scalar modality's token and logit rows ordinal structure (see module docstring).

    Token rows get RMS ``std`` = 1, not the official 0.02: a one-token input must stand out
    against the modality + position embedding and the residual branches, or the transformer
    cannot tell one value from another. Measured (1 input -> 1 target, flux_r -> flux_g, nano,
    300 steps, lr 2e-3): cross-entropy stayed at ln 1024 = 6.93 with std 0.02 (ordinal or
    random), fell to ~5.2 with std 1. Logit rows keep the official 0.02 (a flat start).
    Each modality gets its own mixing so different scalars do not start identical. Returns the
    keys changed.
    """
    for i, _, side, role, module in scalar_row_modules(model):
        w = module.weight
        j = role == "to_logits"
        rows = fourier_rows(w.shape[0], w.shape[1], seed=seed * 1000 + i * 10 + (side == "decoder") * 2 + j)
        w.copy_(rows.to(w.dtype) * (logits_std if j else std))
    return scalar_keys(model)
