"""The train / held-out split of pretraining and codec training: the SAME split the probes use.

Pretraining sees ``tok_z`` (a label) for its training objects, so it must not see the objects
the property probes and the evaluation hold out. The split is therefore delegated to
:func:`engine.tasks.splits.is_held_out` (a hash of object id and seed: stable under
re-ordering, subsetting and re-ingesting), with its default seed and fraction.
"""

from __future__ import annotations

import numpy as np

from engine.tasks.splits import DEFAULT_HELD_OUT_FRACTION, is_held_out

SPLIT_SEED = 0


def heldout_mask(object_ids: np.ndarray, fraction: float = DEFAULT_HELD_OUT_FRACTION) -> np.ndarray:
    """True for the objects held out of training (about ``fraction`` of them)."""
    return is_held_out(np.asarray(object_ids, dtype=np.int64), seed=SPLIT_SEED, fraction=fraction)
