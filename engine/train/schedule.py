"""Learning-rate schedule: linear warmup then cosine decay to a floor (nanoGPT's ``get_lr``).

A pure function of the step, so a resumed run follows the same curve without saved state.
"""

from __future__ import annotations

import math


def lr_at(step: int, *, peak: float, warmup: int, total: int, floor_ratio: float = 0.1) -> float:
    """Learning rate for optimizer step ``step`` (0-based)."""
    if step < warmup:
        return peak * (step + 1) / warmup
    if step >= total:
        return peak * floor_ratio
    progress = (step - warmup) / max(1, total - warmup)
    return peak * (floor_ratio + (1 - floor_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress)))
