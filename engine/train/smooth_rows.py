"""Scalar-token rows trained through a smooth basis over the bins, saved as ordinary AION rows.

:mod:`engine.train.ordinal_init` *starts* each scalar bin's embedding and logit rows smooth over
the bins. Training then moves every row on its own: a bin's row gets a gradient only when an
object with that value is in the batch (about ten objects per bin in a 10^4-object survey, and
a scalar is a target in a few per cent of examples), while Adam scales each rare update up to
the learning rate. The rows drift apart and the order the initialisation gave them is lost.

With ``scalar_rows="smooth"`` the rows of each scalar modality are parametrised as
``B @ W``: ``B`` (bins x K) fixed low-frequency Fourier features of the bin's place
(:func:`fourier_basis`), ``W`` (K x width) learned. Every object that shows or asks for a
scalar then trains the rows of *all* its bins, and neighbouring bins stay close by
construction (logits over bins stay smooth at ~bins / (2 n_freq) resolution). This is a
training-time parametrisation only (``torch.nn.utils.parametrize``): :func:`materialize`
writes ``B @ W`` back into the official ``weight`` tensors, so the saved model has the
official layout and loads with ``aion.AION.from_pretrained`` like any other.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils import parametrize

from engine.errors import ModelError
from engine.train.ordinal_init import fourier_features, scalar_row_modules

ROW_CHOICES = ("free", "smooth")
DEFAULT_FREQUENCIES = 48


def fourier_basis(n_rows: int, n_freq: int) -> torch.Tensor:
    """(n_rows, 2 n_freq + 2) orthonormal columns: constant, linear, cos/sin of k pi i / (n_rows - 1)."""
    if n_rows < 2 or n_freq < 1:
        raise ModelError(f"a smooth basis needs >= 2 rows and >= 1 frequency, got {n_rows} rows, {n_freq}")
    pos_and_waves = fourier_features(n_rows, n_freq)
    feats = torch.cat([torch.ones(n_rows, 1, dtype=torch.float64), pos_and_waves], dim=1)
    q, _ = torch.linalg.qr(feats)
    return q.float()


class SmoothRows(nn.Module):
    """Parametrisation ``weight = basis @ coeff`` (basis fixed, coeff learned)."""

    def __init__(self, basis: torch.Tensor):
        super().__init__()
        self.register_buffer("basis", basis, persistent=False)

    def forward(self, coeff: torch.Tensor) -> torch.Tensor:
        return self.basis.to(coeff.dtype) @ coeff

    def right_inverse(self, weight: torch.Tensor) -> torch.Tensor:
        # orthonormal columns: the least-squares coefficients of the current rows
        return self.basis.to(weight.dtype).T @ weight


def _row_weights(model) -> list[tuple[str, nn.Module]]:
    """(name, module owning ``weight``) for every scalar modality's token and logit rows."""
    return [(f"{side}.{key}.{role}", module) for _, key, side, role, module in scalar_row_modules(model)]


def smooth_scalar_rows(model, n_freq: int = DEFAULT_FREQUENCIES) -> list[str]:
    """Parametrise every scalar modality's rows as ``B @ W`` (see module docstring); the current rows
    are projected onto the basis (exact for :func:`~engine.train.ordinal_init.init_scalar_embeddings`'s
    rows when ``n_freq`` >= its 16). Returns the parametrised weights' names."""
    names = []
    for name, module in _row_weights(model):
        if parametrize.is_parametrized(module, "weight"):
            raise ModelError(f"{name}: rows are already parametrised")
        basis = fourier_basis(module.weight.shape[0], n_freq).to(module.weight.device)
        parametrize.register_parametrization(module, "weight", SmoothRows(basis))
        names.append(name)
    return names


@torch.no_grad()
def materialize(model) -> list[str]:
    """Write ``B @ W`` into plain ``weight`` tensors and drop the parametrisations (before saving)."""
    names = []
    for name, module in _row_weights(model):
        if parametrize.is_parametrized(module, "weight"):
            parametrize.remove_parametrizations(module, "weight", leave_parametrized=True)
            names.append(name)
    return names
