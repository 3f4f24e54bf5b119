"""The AION-1 masking sampler: which tokens each example shows the encoder and asks the decoder for.

Per example (following the AION-1 paper, §pretraining):

1. pick an *anchor* modality uniformly among the modalities the object has;
2. show a uniformly random number (1 … min(anchor tokens, input budget)) of its tokens;
3. fill the rest of the input budget from the other present modalities, each getting a
   share drawn from a flat Dirichlet (weighted sampling without replacement, so a one-token
   scalar is as likely to be shown as a whole image); each non-anchor modality is withheld
   from the input with probability ``input_withhold`` (used only if the others run out), so
   one-token modalities such as redshift are left over as targets often enough to learn them;
   With probability ``scalar_inputs_only`` the input is drawn from one-token modalities alone
   (anchor included; images and spectra then appear only as targets). A small model on a small
   dataset otherwise never learns to read one-token inputs: among ~100 image tokens the decoder's
   cross-attention dilutes a flux token's signal to nothing (measured: flux CE stays at
   ln 1024 for 5000 steps without it);
4. draw a target weight per present modality from a Beta distribution skewed to zero and
   take exactly the target budget from the tokens not shown, by weighted sampling without
   replacement (a few modalities dominate each example's targets, most get none).
5. with probability ``readout_draws`` the example is instead a *read-out* draw
   (``_readout_example``): each one-token modality shown or hidden whole, some tokens of one
   array modality beside them, the hidden one-token modalities as targets: the query "redshift
   (or a flux) given the image and the rest of the catalogue" that the decoder-refinement stage
   (``docs/training.md``) trains on.
6. with probability ``copy_draws`` the targets of a default draw are replaced by the one-token
   modalities it *shows* (the encoder sees them and the decoder must name them, like BERT's
   unchanged tokens): in the decoder-refinement runs it kept the mean redshift read-out near the
   truth (docs/training.md).

Budgets are EXACT (scalar-only draws show fewer inputs, see 3): ``FourM.forward`` keeps the first ``num_encoder_tokens`` unmasked tokens
in concatenation order and silently drops the rest, so an example over budget would lose its
last modalities' tokens without any error. Every example gets exactly
``min(input_budget, available - 1)`` inputs (one token is always left for a target) and
``min(target_budget, available - inputs)`` targets (read-out draws, 5., show at most the input
budget and ask for the hidden one-token modalities up to the target budget; copy draws, 6., ask for
at most the target budget of shown ones).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import torch


@dataclass(frozen=True)
class MaskingConfig:
    """Token budgets and the two sampling distributions (see module docstring)."""

    input_budget: int
    target_budget: int
    input_dirichlet_alpha: float = 1.0
    input_withhold: float = 0.5
    scalar_inputs_only: float = 0.0  # probability of an input drawn from one-token modalities only
    readout_draws: float = 0.0  # probability of a read-out draw (whole scalars shown or asked for, see 5.)
    copy_draws: float = 0.0  # probability of a copy draw (the shown one-token modalities are the targets, see 6.)
    target_beta: tuple[float, float] = (0.3, 1.5)  # mean 0.17: skewed to zero

    def __post_init__(self) -> None:
        if self.input_budget < 1 or self.target_budget < 1:
            raise ValueError(
                f"token budgets must be >= 1, got input {self.input_budget!r}, target {self.target_budget!r}"
            )
        probabilities = {"scalar_inputs_only": self.scalar_inputs_only, "readout_draws": self.readout_draws,
                         "copy_draws": self.copy_draws, "input_withhold": self.input_withhold}
        bad = {k: v for k, v in probabilities.items() if not 0.0 <= v <= 1.0}
        if bad:
            raise ValueError(f"probabilities must be in [0, 1], got {bad}")
        if self.input_dirichlet_alpha <= 0 or min(self.target_beta) <= 0:
            raise ValueError(
                f"distribution parameters must be > 0, got alpha {self.input_dirichlet_alpha!r}, "
                f"beta {self.target_beta!r}"
            )


def _weighted_order(rng: np.random.Generator, weights: np.ndarray) -> np.ndarray:
    """Indices in the order of a weighted sample without replacement (Efraimidis-Spirakis keys)."""
    u = rng.random(len(weights))
    keys = np.log(np.maximum(u, 1e-300)) / np.maximum(weights, 1e-12)
    return np.argsort(-keys, kind="stable")


def sample_example(
    counts: np.ndarray, present: np.ndarray, config: MaskingConfig, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Input and target selections for ONE example over the flattened token axis.

    ``counts[m]`` is modality m's token count, ``present[m]`` whether the object has it.
    Returns two boolean arrays of length ``counts.sum()``: shown to the encoder, and targets.
    """
    total = int(counts.sum())
    mod_of_token = np.repeat(np.arange(len(counts)), counts)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    shown = np.zeros(total, dtype=bool)
    target = np.zeros(total, dtype=bool)
    mods = np.flatnonzero(present & (counts > 0))
    available = int(counts[mods].sum())
    if available < 2:
        if available == 1:  # a lone token can only be a target
            target[starts[mods[0]]] = True
        return shown, target

    singles = mods[counts[mods] == 1]
    if config.readout_draws > 0 and len(singles) >= 2 and rng.random() < config.readout_draws:
        return _readout_example(counts, mods, singles, starts, config, rng, shown, target)

    input_mods = mods
    n_in = min(config.input_budget, available - 1)
    # (the draw comes first, so the random stream is the same whatever the number of scalars)
    if config.scalar_inputs_only > 0 and rng.random() < config.scalar_inputs_only and len(singles) >= 2:
        input_mods = singles  # show 1 .. n-1 of them, so some scalars stay targets
        n_in = min(n_in, int(rng.integers(1, len(singles))))
    anchor = int(rng.choice(input_mods))
    n_anchor = int(rng.integers(1, min(int(counts[anchor]), n_in) + 1))
    anchor_tokens = starts[anchor] + rng.permutation(int(counts[anchor]))
    shown[anchor_tokens[:n_anchor]] = True

    rest = n_in - n_anchor
    if rest > 0:
        others = input_mods[input_mods != anchor]
        share = np.zeros(len(counts))
        withheld = np.zeros(len(counts), dtype=bool)
        if len(others):
            share[others] = rng.dirichlet(np.full(len(others), config.input_dirichlet_alpha))
            withheld[others] = rng.random(len(others)) < config.input_withhold
        candidates = np.flatnonzero(np.isin(mod_of_token, input_mods) & present[mod_of_token] & ~shown)
        cand_mod = mod_of_token[candidates]
        per_token = share[cand_mod] / counts[cand_mod]
        order = _weighted_order(rng, per_token)
        # fill from the allowed modalities, then withheld ones, then the anchor's leftovers
        tier = np.where(cand_mod == anchor, 2, np.where(withheld[cand_mod], 1, 0))[order]
        order = order[np.argsort(tier, kind="stable")]
        shown[candidates[order[:rest]]] = True

    n_tgt = min(config.target_budget, available - n_in)
    weights = np.zeros(len(counts))
    weights[mods] = rng.beta(*config.target_beta, size=len(mods))
    candidates = np.flatnonzero(present[mod_of_token] & ~shown)
    per_token = weights[mod_of_token[candidates]] / counts[mod_of_token[candidates]]
    order = _weighted_order(rng, per_token)
    target[candidates[order[:n_tgt]]] = True
    if config.copy_draws > 0 and rng.random() < config.copy_draws:
        copies = np.flatnonzero(shown & (counts[mod_of_token] == 1))
        if len(copies):  # a copy draw: the shown one-token modalities are the targets
            target[:] = False
            target[rng.permutation(copies)[: config.target_budget]] = True
    return shown, target


READOUT_HIDE = 0.2  # a read-out draw hides each one-token modality with this probability


def _readout_example(counts, mods, singles, starts, config: MaskingConfig, rng: np.random.Generator,
                     shown: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A *read-out* draw: whole one-token modalities shown or asked for, the way they are used.

    Each present one-token modality is hidden with probability ``READOUT_HIDE`` (at least one is); a
    random number of one array modality's tokens (image, spectrum, XP) fills the input budget that
    is left; the targets are the hidden one-token modalities (up to the target budget). The
    default sampler rarely shows the full photometry *and* asks for redshift, which is exactly
    the query an astronomer makes; the decoder-refinement stage trains on it.
    """
    hidden = rng.random(len(singles)) < READOUT_HIDE
    if hidden.all() or not hidden.any():
        hidden[:] = False
        hidden[rng.integers(len(singles))] = True
    show = rng.permutation(singles[~hidden])[: config.input_budget]
    shown[starts[show]] = True
    rest = config.input_budget - len(show)
    arrays = mods[counts[mods] > 1]
    if rest > 0 and len(arrays):
        a = int(rng.choice(arrays))
        n = int(rng.integers(0, min(int(counts[a]), rest) + 1))
        shown[starts[a] + rng.permutation(int(counts[a]))[:n]] = True
    asked = rng.permutation(singles[hidden])[: config.target_budget]
    target[starts[asked]] = True
    return shown, target


def sample_masks(
    token_counts: Mapping[str, int],
    present: Mapping[str, np.ndarray],
    config: MaskingConfig,
    rng: np.random.Generator,
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Per-modality ``input_mask`` and ``target_mask`` (True = hidden / not a target), shape (B, n).

    ``present[key]`` is a (B,) bool array; keys are taken in ``token_counts`` order.
    """
    keys = list(token_counts)
    counts = np.array([token_counts[k] for k in keys], dtype=np.int64)
    present_matrix = np.stack([np.asarray(present[k], dtype=bool) for k in keys], axis=1)
    batch = present_matrix.shape[0]
    shown = np.zeros((batch, int(counts.sum())), dtype=bool)
    target = np.zeros_like(shown)
    for b in range(batch):
        shown[b], target[b] = sample_example(counts, present_matrix[b], config, rng)
    bounds = np.concatenate([[0], np.cumsum(counts)])
    input_mask = {k: ~shown[:, bounds[i] : bounds[i + 1]] for i, k in enumerate(keys)}
    target_mask = {k: ~target[:, bounds[i] : bounds[i + 1]] for i, k in enumerate(keys)}
    return input_mask, target_mask


def build_mod_dict(
    tokens: Mapping[str, torch.Tensor],
    input_mask: Mapping[str, np.ndarray],
    target_mask: Mapping[str, np.ndarray],
    device: torch.device | str = "cpu",
) -> dict[str, dict[str, torch.Tensor]]:
    """The ``mod_dict`` ``FourM.forward`` trains on (ids, both masks, a zero decoder attention mask)."""
    out: dict[str, dict[str, torch.Tensor]] = {}
    for key, ids in tokens.items():
        tmask = torch.from_numpy(np.ascontiguousarray(target_mask[key])).to(device)
        out[key] = {
            "tensor": ids.to(device=device, dtype=torch.long),
            "input_mask": torch.from_numpy(np.ascontiguousarray(input_mask[key])).to(device),
            "target_mask": tmask,
            "decoder_attention_mask": torch.zeros(tmask.shape, dtype=torch.long, device=device),
        }
    return out
