"""Encoders behind one protocol: the AION model (``engine.model``) or the pixel-PCA baseline.

``--model pixel-pca`` selects the baseline; anything else is a model folder or hub id.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np

from engine.errors import EngineError
from engine.index.baseline import MODEL_ID as BASELINE_ID
from engine.index.baseline import PixelPCAEncoder, is_baseline
from engine.model.pooling import pooling_of, view_dim, view_hash

log = logging.getLogger(__name__)


class ModelEncoder:
    """An AION model folder as an :class:`~engine.index.embeddings.Encoder` for one view."""

    def __init__(self, model: str | os.PathLike, view: str, *, batch_size: int = 64, device: str = "cpu",
                 loaded=None):
        from engine.model.loading import load_model

        self.loaded = loaded if loaded is not None else load_model(model, device=device)
        self.view, self.batch_size, self.device = view, batch_size, device
        self.model_id = self.loaded.model_id
        self.model_hash = view_hash(self.loaded.hash, view)
        self.dim = view_dim(int(self.loaded.dim), view)
        self.pooling = pooling_of(view)

    def __call__(self, dataset, object_ids) -> tuple[np.ndarray, np.ndarray]:
        from engine.model.encode import embed_objects

        return embed_objects(self.loaded, dataset, np.asarray(object_ids, dtype=np.int64), self.view,
                             batch_size=self.batch_size, device=self.device, progress=False)


class ModelViewsEncoder:
    """An AION model for several views at once (:class:`~engine.index.embeddings.MultiViewEncoder`):
    ``engine.model.encode.embed_views`` reads and tokenizes each batch once for all views."""

    def __init__(self, model: str | os.PathLike, views, *, batch_size: int = 64, device: str = "cpu", loaded=None,
                 compile: bool = False):
        from engine.model.fast import compile_encoder
        from engine.model.loading import load_model

        self.loaded = loaded if loaded is not None else load_model(model, device=device)
        if compile:
            compile_encoder(self.loaded.model)
        self.views, self.batch_size, self.device = tuple(views), batch_size, device
        self.model_id = self.loaded.model_id
        self.dims = {v: view_dim(int(self.loaded.dim), v) for v in self.views}
        self.hashes = {v: view_hash(self.loaded.hash, v) for v in self.views}
        self.poolings = {v: pooling_of(v) for v in self.views}
        self._tables: dict[str, object] = {}

    def _token_table(self, dataset):
        """``prepare``'s token table of ``dataset`` for these codecs, if there is one (looked up once)."""
        from engine.model.encode import views_token_keys
        from engine.train.tokens import find_table

        root = str(dataset.root)
        if root not in self._tables:
            self._tables[root] = find_table(dataset, self.loaded.path, views_token_keys(self.loaded, self.views))
        return self._tables[root]

    def __call__(self, dataset, object_ids):
        from engine.model.encode import embed_views

        return embed_views(self.loaded, dataset, np.asarray(object_ids, dtype=np.int64), self.views,
                           batch_size=self.batch_size, device=self.device, progress=False,
                           token_table=self._token_table(dataset))


def open_views_encoder(model: str | os.PathLike, view_dirs: dict[str, Path], *, fit_dataset=None,
                       batch_size: int = 64, device: str = "cpu", compile: bool = False):
    """A :class:`~engine.index.embeddings.MultiViewEncoder` for the views of ``view_dirs``
    (``compile``: the model's encoder through ``torch.compile``; ignored by the baseline)."""
    if is_baseline(model):
        from engine.index.embeddings import PerViewEncoders

        return PerViewEncoders({v: open_encoder(model, v, view_dir=d, fit_dataset=fit_dataset)
                                for v, d in view_dirs.items()})
    return ModelViewsEncoder(model, list(view_dirs), batch_size=batch_size, device=device, compile=compile)


def open_encoder(model: str | os.PathLike, view: str, *, view_dir: Path | None = None, fit_dataset=None,
                 batch_size: int = 64, device: str = "cpu"):
    """The encoder for ``model``: the baseline is loaded from ``view_dir`` (or fitted on
    ``fit_dataset`` when given and no matching fit exists there); a model folder is loaded."""
    if is_baseline(model):
        if fit_dataset is not None:
            try:
                enc = PixelPCAEncoder.load(view_dir, view)
                if enc.meta.get("dataset_hash") == fit_dataset.hash:
                    return enc
            except EngineError:
                pass
            return PixelPCAEncoder.fit(fit_dataset, view)
        return PixelPCAEncoder.load(view_dir, view)
    return ModelEncoder(model, view, batch_size=batch_size, device=device)


def current_model_hash(model: str | os.PathLike, view: str, view_dir: Path) -> str | None:
    """The hash an index of ``view`` must record for the model as it is now (cheap: a file hash, no
    weights loaded; plus the view's pooling, ``engine/model/pooling.py``); None if it cannot be found."""
    if is_baseline(model):
        try:
            return PixelPCAEncoder.load(view_dir, view).model_hash
        except EngineError:
            return None
    try:
        from engine.model.loading import WEIGHTS_FILE, file_hash, resolve_model_dir

        return view_hash(file_hash(resolve_model_dir(model) / WEIGHTS_FILE), view)
    except EngineError as exc:
        log.warning("cannot check the model hash of %r (%s); using the index as built", str(model), exc)
        return None


__all__ = ["BASELINE_ID", "ModelEncoder", "ModelViewsEncoder", "PixelPCAEncoder", "current_model_hash", "open_encoder",
           "open_views_encoder"]
