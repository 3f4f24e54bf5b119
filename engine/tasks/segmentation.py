"""Galaxy segmentation: a head on the frozen encoder's image tokens vs a U-Net from scratch.

Both predict the mock's overlapping segmentation classes (disk, bulge, bar, arms, knots,
neighbour: one sigmoid per class, since arms lie on the disk) at 96x96 and are scored by
dataset-level IoU per class on held-out galaxies (intersection and union summed over all
pixels: a galaxy without a bar still counts false-positive bar pixels against the model).

Loss: per-class BCE + soft Dice; Dice keeps thin, rare structures (arms, bars) from being
drowned by background pixels. Threshold 0.5.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from engine.data import schema
from engine.tasks import metrics
from engine.tasks.fitting import predict

CLASSES: tuple[str, ...] = schema.SEGMENTATION_CLASSES
THRESHOLD = 0.5


def seg_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    target = target.float()
    bce = nn.functional.binary_cross_entropy_with_logits(logits, target)
    prob = logits.sigmoid()
    inter = (prob * target).sum((0, 2, 3))
    denom = prob.sum((0, 2, 3)) + target.sum((0, 2, 3))
    dice = 1 - (2 * inter + 1) / (denom + 1)
    return bce + dice.mean()


class UNet(nn.Module):
    """A small 3-level U-Net (96 -> 48 -> 24 and back) trained from scratch on the cutouts."""

    def __init__(self, n_classes: int, in_ch: int = 4, width: int = 8):
        super().__init__()

        def block(a: int, b: int) -> nn.Sequential:
            return nn.Sequential(nn.Conv2d(a, b, 3, padding=1), nn.BatchNorm2d(b), nn.GELU(),
                                 nn.Conv2d(b, b, 3, padding=1), nn.BatchNorm2d(b), nn.GELU())

        w = width
        self.enc1, self.enc2, self.enc3 = block(in_ch, w), block(w, 2 * w), block(2 * w, 4 * w)
        self.pool = nn.MaxPool2d(2)
        self.up2 = nn.ConvTranspose2d(4 * w, 2 * w, 2, stride=2)
        self.dec2 = block(4 * w, 2 * w)
        self.up1 = nn.ConvTranspose2d(2 * w, w, 2, stride=2)
        self.dec1 = block(2 * w, w)
        self.out = nn.Conv2d(w, n_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        e1 = self.enc1(x)
        e2 = self.enc2(self.pool(e1))
        e3 = self.enc3(self.pool(e2))
        d2 = self.dec2(torch.cat([self.up2(e3), e2], 1))
        d1 = self.dec1(torch.cat([self.up1(d2), e1], 1))
        return self.out(d1)


def predict_masks(net: nn.Module, inputs: tuple[torch.Tensor, ...], batch_size: int = 64) -> np.ndarray:
    """(N, n_classes, 96, 96) bool masks (sigmoid > 0.5)."""
    return (predict(net, inputs, batch_size).sigmoid() > THRESHOLD).numpy()


def iou_per_class(true: np.ndarray, pred: np.ndarray, classes=CLASSES) -> dict[str, float]:
    return {c: metrics.iou(true[:, j], pred[:, j]) for j, c in enumerate(classes)}


def scores(object_ids: np.ndarray, true: np.ndarray, pred: np.ndarray, classes=CLASSES) -> dict:
    """IoU per class plus each galaxy's intersection and union pixel counts per class, so two methods
    scored on the same galaxies can be compared by a paired bootstrap (:func:`pixel_iou`)."""
    t, p = np.asarray(true, bool), np.asarray(pred, bool)
    inter, union = (t & p).sum((2, 3)), (t | p).sum((2, 3))  # (N, n_classes)
    return {"iou": iou_per_class(t, p, classes), "n_test": len(t),
            "per_galaxy": {"object_id": [int(i) for i in object_ids],
                           "intersection": {c: inter[:, j].tolist() for j, c in enumerate(classes)},
                           "union": {c: union[:, j].tolist() for j, c in enumerate(classes)}}}


def pixel_iou(_, counts: np.ndarray) -> float:
    """Dataset-level IoU from per-galaxy (intersection, union) rows: the score :func:`metrics.paired_bootstrap`
    resamples (its first argument, the truth, is already inside the counts)."""
    union = counts[:, 1].sum()
    return float(counts[:, 0].sum() / union) if union else float("nan")
