"""The 4M masked-modeling loss with Gaussian-smoothed targets for scalar tokens.

A scalar token is one of 1024 *sorted* quantile bins, but the official loss (``FourM.forward``:
cross-entropy per modality, averaged over modalities) treats bin 511 as exactly as wrong as bin
0 when the truth is 512. With a few thousand targets per modality the nano model never found
the neighbourhood (one-token scalars stayed at ln 1024 ≈ 6.9 nats, ``docs/training.md``).
Here the target of a scalar token is a Gaussian over bins centred on the true bin (the
"HL-Gauss" histogram loss of Farebrother et al. 2024, *Stop Regressing*): every step tells the
model where the value lies, not only which bin it is. Image and spectrum tokens keep plain
cross-entropy (their code ids have no order). The model, its heads and its outputs are the
official ones; only the training signal changes, and reading a value as the mean of the
predicted distribution over bin centres (``engine/train/metrics.py``) is unbiased by the
smoothing away from the range's edges.
"""

from __future__ import annotations

import math
from collections.abc import Collection

import torch
import torch.nn.functional as F

from engine.model.modalities import spec
from engine.model.presets import SCALAR_CODEBOOK_SIZE
from engine.train.metrics import decoder_outputs

ORDINAL_KINDS = ("scalar", "xp")


def ordinal_keys(keys: Collection[str]) -> frozenset[str]:
    """The token keys whose ids are sorted bins (scalars, Gaia XP coefficients)."""
    return frozenset(k for k in keys if spec(k).kind in ORDINAL_KINDS)


def gaussian_bin_targets(target: torch.Tensor, n_bins: int, sigma: float, width: int | None = None) -> torch.Tensor:
    """(n,) true bins -> (n, width) probabilities: the mass of N(bin centre, sigma) in each of the
    codec's ``n_bins`` bins, renormalised over them (so edges keep all their mass); logits past
    the codec's bins (``width`` > ``n_bins``: the official ``tok_z`` head has 1025 outputs for the
    1024-bin redshift grid) get none."""
    width = n_bins if width is None else width
    if width < n_bins:
        raise ValueError(f"width must be >= n_bins={n_bins}, got {width!r}")
    edges = torch.arange(n_bins + 1, device=target.device, dtype=torch.float32)
    centre = target.to(torch.float32)[:, None] + 0.5
    cdf = 0.5 * (1.0 + torch.erf((edges[None, :] - centre) / (sigma * math.sqrt(2.0))))
    mass = (cdf[:, 1:] - cdf[:, :-1]).clamp_min(0.0)
    mass = mass / mass.sum(-1, keepdim=True).clamp_min(1e-12)
    return F.pad(mass, (0, width - n_bins))


def modality_losses(model, y: torch.Tensor, target_ids: torch.Tensor, decoder_mod_mask: torch.Tensor,
                    keys: Collection[str], smoothed: Collection[str], sigma: float) -> dict[str, torch.Tensor]:
    """Per-modality mean loss, like ``FourM.forward_mod_loss``: a modality without targets in
    the batch gets 0 (and still counts in the average, as in the official loss)."""
    out: dict[str, torch.Tensor] = {}
    for key in keys:
        sel = decoder_mod_mask == model.modality_info[key]["id"]
        logits = model.decoder_embeddings[key].forward_logits(y[sel])
        if logits.numel() == 0:
            out[key] = torch.zeros(1, device=y.device)
            continue
        target = target_ids[sel].long()
        if key in smoothed and sigma > 0:
            soft = gaussian_bin_targets(target, min(SCALAR_CODEBOOK_SIZE, logits.shape[-1]), sigma, logits.shape[-1])
            out[key] = -(soft * F.log_softmax(logits.float(), dim=-1)).sum(-1).mean()
        else:
            out[key] = F.cross_entropy(logits, target, reduction="mean")
    return out


def masked_modeling_loss(model, mod_dict: dict, num_encoder_tokens: int, num_decoder_tokens: int,
                         sigma: float) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """``FourM.forward``'s loss with scalar targets smoothed by ``sigma`` bins (0: the official loss)."""
    y, target_ids, dmod = decoder_outputs(model, mod_dict, num_encoder_tokens, num_decoder_tokens)
    keys = [k for k in mod_dict if k in model.decoder_embeddings]
    mod_loss = modality_losses(model, y, target_ids, dmod, keys, ordinal_keys(keys), sigma)
    return sum(mod_loss.values()) / len(mod_loss), mod_loss
