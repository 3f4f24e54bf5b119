"""Embeddings from the AION encoder: tokens -> encoder outputs -> pooled vectors.

The official ``AION.encode`` keeps only ``num_encoder_tokens`` (default 256) tokens and drops
the rest silently; every call here passes the true token count. Absent modalities are handled
two ways: :func:`encode_tokens` takes a ``present`` mask and hides those tokens from attention
(the official masking), while :func:`embed_objects` groups a batch by which modalities each
object has and encodes each group with only its present modalities, which gives the same
vectors without spending compute on hidden tokens and lets GPU kernels skip masking.

Pooling: ``mean`` over the object's valid tokens of the official encoder output (the
``decoder_proj_context(x) + emb`` context that ``AION.encode`` returns), as in the AION-1
retrieval experiments; the image *view* is a radial profile of its tokens instead
(``engine/model/pooling.py``, :func:`radial_embedding`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping, Sequence

import numpy as np
import torch

from engine.errors import ModelError
from engine.model.fast import enable_fast_attention
from engine.model.modalities import load_modalities, select_rows, spec, view_token_keys
from engine.model.pooling import pooling_of, radial_profile, view_dim

POOLINGS = ("mean", "none")


def _device_of(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


def _autocast(device: torch.device, dtype: torch.dtype | None):
    """bf16 autocast on GPU by default; plain fp32 on CPU (bf16 matmuls are slow on most CPUs)."""
    if dtype is None and device.type == "cuda":
        dtype = torch.bfloat16
    if dtype is None or dtype == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def encoder_outputs(
    model,
    tokens: Mapping[str, torch.Tensor],
    present: Mapping[str, torch.Tensor] | None = None,
    *,
    dtype: torch.dtype | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token encoder context (B, N, dim) float32 and a valid mask (B, N) over all input tokens.

    ``tokens``: ``{token_key: LongTensor (B, n) or (B,)}``. ``present``: optional
    ``{token_key: BoolTensor (B,)}``, False where an object lacks that modality (its tokens are
    hidden). Token order is the official one: each object's valid tokens first, in ``tokens``
    order; hidden ones after them.
    """
    if not tokens:
        raise ModelError("no tokens to encode: give at least one modality")
    device = _device_of(model)
    accepted = set(model.encoder_embeddings.keys())
    unknown = [k for k in tokens if k not in accepted]
    if unknown:
        raise ModelError(f"the model does not accept {unknown}; its inputs are {sorted(accepted)}")
    ids: dict[str, torch.Tensor] = {}
    masks: dict[str, torch.Tensor] = {}
    total = 0
    for key, t in tokens.items():
        t = torch.as_tensor(t).to(device=device, dtype=torch.long)
        if t.dim() == 1:
            t = t[:, None]
        expected = spec(key).num_tokens
        if t.shape[1] != expected:
            raise ModelError(f"tokens for {key!r} have {t.shape[1]} per object; the model expects {expected}")
        ids[key] = t
        total += t.shape[1]
        if present is not None and key in present:
            hidden = ~torch.as_tensor(present[key]).to(device=device, dtype=torch.bool)
            masks[key] = hidden[:, None].expand(-1, t.shape[1]).contiguous()
    with torch.inference_mode(), _autocast(device, dtype):
        enc_tokens, enc_emb, enc_mask, _ = model.embed_inputs(
            ids, mask=masks or None, num_encoder_tokens=total
        )
        out = model._encode(enc_tokens, enc_emb, _mask_or_none(enc_mask))
    return out.float(), ~enc_mask[:, 0, :]


def _mask_or_none(mask: torch.Tensor) -> torch.Tensor | None:
    """None when no token is hidden: decided once per call, not once per attention layer (a
    host sync each on GPU, and a graph break under ``torch.compile``), and lets SDPA run
    FlashAttention."""
    return mask if bool(mask.any()) else None


def encode_tokens(
    model,
    tokens: Mapping[str, torch.Tensor],
    pooling: str = "mean",
    present: Mapping[str, torch.Tensor] | None = None,
    *,
    dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """Encode token ids: ``mean`` -> (B, dim) pooled over valid tokens; ``none`` -> (B, N, dim).

    Uses whatever attention the model has (call :func:`enable_fast_attention` for the SDPA path).
    """
    if pooling not in POOLINGS:
        raise ModelError(f"unknown pooling {pooling!r}; accepted: {', '.join(POOLINGS)}")
    out, valid = encoder_outputs(model, tokens, present, dtype=dtype)
    if pooling == "none":
        return out
    weights = valid.to(out.dtype)[..., None]
    return (out * weights).sum(1) / weights.sum(1).clamp(min=1.0)


def two_layer_tokens(model, tokens: Mapping[str, torch.Tensor], mask: Mapping[str, torch.Tensor] | None,
                     num_tokens: int) -> torch.Tensor:
    """Per-token frozen features (B, N, 2 * dim): [the encoder's input embedding | its last layer],
    visible tokens first in concatenation order (the official packing), register tokens dropped.
    The probes (``engine/tasks/features.py``) and the radial image view both read these two layers."""
    enc_tokens, enc_emb, enc_mask, _ = model.embed_inputs(dict(tokens), mask=mask, num_encoder_tokens=num_tokens)
    out = model._encode(enc_tokens, enc_emb, _mask_or_none(enc_mask))
    out = out[:, int(getattr(model, "num_register_tokens", 0) or 0) :]
    return torch.cat([enc_tokens[:, : out.shape[1]].to(out.dtype), out], dim=-1)


def radial_embedding(model, key: str, ids: torch.Tensor, *, dtype: torch.dtype | None = None) -> torch.Tensor:
    """Radial-profile vectors (B, RINGS * 2 * dim) of one image modality's token grids (B, n),
    every token visible: the annulus means of the input embedding and the last encoder layer."""
    device = _device_of(model)
    ids = torch.as_tensor(ids).to(device=device, dtype=torch.long)
    with torch.inference_mode(), _autocast(device, dtype):
        both = two_layer_tokens(model, {key: ids}, None, ids.shape[1])
    return radial_profile(both.float())


# --- objects of a dataset ------------------------------------------------------------------


def _prepare(loaded, device: str | torch.device) -> torch.device:
    from engine.model.loading import check_device

    device = check_device(device)
    if _device_of(loaded.model) != device:
        loaded.model.to(device)
    if loaded.codecs.device != device:
        loaded.codecs.to(device)
    loaded.model.eval()
    enable_fast_attention(loaded.model)
    return device


def _view_keys(loaded, view: str) -> tuple[str, ...]:
    keys = view_token_keys(view, loaded.token_keys)
    lacking = [k for k in keys if k not in loaded.codecs]
    if lacking:
        raise ModelError(f"model {loaded.model_id!r} has no codec for {lacking} (view {view!r})")
    return keys


def views_token_keys(loaded, views: Sequence[str]) -> tuple[str, ...]:
    """Every token key the ``views`` read, in first-seen order (what one pass over them tokenizes)."""
    return tuple(dict.fromkeys(k for view in views for k in _view_keys(loaded, view)))


class TokenSource:
    """Precomputed token ids for a dataset (e.g. the pretraining token cache), looked up by object id.

    ``table`` is duck-typed: ``object_ids`` (N,), ``tokens`` {key: (N, n) ints} and ``present``
    {key: (N,) bool}, like ``engine.train.tokens.TokenTable``. Keys it lacks are tokenized live.
    """

    def __init__(self, table):
        import pandas as pd

        self.table = table
        self.index = pd.Index(np.asarray(table.object_ids, dtype=np.int64))

    def __contains__(self, key: str) -> bool:
        return key in self.table.tokens

    def rows(self, object_ids: np.ndarray) -> np.ndarray:
        pos = self.index.get_indexer(object_ids)
        if (pos < 0).any():
            raise ModelError(f"token table lacks object_id {object_ids[pos < 0][:5].tolist()} (stale cache?)")
        return pos


def tokenize_batch(
    loaded, dataset, object_ids: np.ndarray, keys: Sequence[str], source: TokenSource | None = None
) -> tuple[dict, np.ndarray]:
    """Token ids for ``keys`` (rows of absent objects left 0) and the presence matrix (B, K).

    Keys found in ``source`` are looked up; the rest run through the model's codecs.
    """
    n = len(object_ids)
    device = loaded.codecs.device
    cached = [k for k in keys if source is not None and k in source]
    live = [k for k in keys if k not in cached]
    mods = load_modalities(dataset, object_ids, live) if live else {}
    rows_in_table = source.rows(object_ids) if cached else None
    tokens: dict[str, torch.Tensor] = {}
    present = np.zeros((n, len(keys)), dtype=bool)
    for j, key in enumerate(keys):
        if key in cached:
            has = np.asarray(source.table.present[key])[rows_in_table].astype(bool)
            ids = np.asarray(source.table.tokens[key])[rows_in_table].astype(np.int64)
            ids[~has] = 0
            present[:, j] = has
            tokens[key] = torch.from_numpy(ids).reshape(n, spec(key).num_tokens).to(device)
            continue
        modality, has = mods[key]
        present[:, j] = has
        full = torch.zeros((n, spec(key).num_tokens), dtype=torch.long, device=device)
        if has.any():
            rows = np.flatnonzero(has)
            full[torch.as_tensor(rows, device=device)] = loaded.codecs.encode(
                {key: select_rows(modality, rows)}
            )[key]
        tokens[key] = full
    return tokens, present


def _groups(present: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    """(rows, key-columns) for each distinct presence pattern with at least one modality."""
    out = []
    patterns, inverse = np.unique(present, axis=0, return_inverse=True)
    for p, pattern in enumerate(patterns):
        if pattern.any():
            out.append((np.flatnonzero(inverse.ravel() == p), np.flatnonzero(pattern)))
    return out


def _progress(total: int, enabled: bool, desc: str):
    from tqdm.auto import tqdm

    return tqdm(total=total, disable=not enabled, desc=desc, unit="obj", dynamic_ncols=True)


def embed_objects(
    loaded,
    dataset,
    object_ids: Sequence[int] | np.ndarray,
    view: str,
    batch_size: int = 64,
    device: str | torch.device = "cpu",
    progress: bool = True,
    dtype: torch.dtype | None = None,
    token_table=None,
) -> tuple[np.ndarray, np.ndarray]:
    """Embeddings of ``object_ids`` under ``view``: ``(emb (n, view_dim) float32, valid (n,) bool)``,
    pooled as the view prescribes (``engine/model/pooling.py``: mean, or radial for the image view).

    ``valid`` is False where an object has none of the view's modalities; those rows are zero.
    Runs the SDPA fast path (patched in place on ``loaded.model``), bf16 autocast on GPU.
    ``token_table``: optional precomputed tokens (see :class:`TokenSource`) to skip the codecs;
    they must come from this model's codecs.
    """
    return embed_views(
        loaded, dataset, object_ids, (view,), batch_size, device, progress, dtype, token_table
    )[view]


def embed_views(
    loaded,
    dataset,
    object_ids: Sequence[int] | np.ndarray,
    views: Sequence[str],
    batch_size: int = 64,
    device: str | torch.device = "cpu",
    progress: bool = True,
    dtype: torch.dtype | None = None,
    token_table=None,
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """:func:`embed_objects` for several views in one pass: each batch is read and tokenized once
    (the codecs cost more than the transformer on CPU), then encoded once per view."""
    if batch_size < 1:
        raise ModelError(f"batch_size must be >= 1, got {batch_size!r}")
    if not views:
        raise ModelError("no views given; accepted: image, spectrum, photometry, joint")
    ids = np.atleast_1d(np.asarray(object_ids, dtype=np.int64))
    view_keys = {view: _view_keys(loaded, view) for view in views}
    keys = views_token_keys(loaded, views)
    device = _prepare(loaded, device)
    source = TokenSource(token_table) if token_table is not None else None
    out = {
        view: (np.zeros((len(ids), view_dim(loaded.dim, view)), dtype=np.float32), np.zeros(len(ids), dtype=bool))
        for view in views
    }
    # Visit objects sorted by which modalities they have, so a batch splits into few, large
    # presence groups (fewer, fuller encoder calls); results go back to the caller's order.
    order = _presence_order(dataset, ids, keys)
    desc = f"embed {'+'.join(views)}"
    with _progress(len(ids), progress, desc) as bar:
        for start in range(0, len(ids), batch_size):
            where = order[start : start + batch_size]
            tokens, present_all = tokenize_batch(loaded, dataset, ids[where], keys, source)
            for view, vkeys in view_keys.items():
                emb, valid = out[view]
                present = present_all[:, [keys.index(k) for k in vkeys]]
                if pooling_of(view) == "radial":  # the first image survey the object has, alone
                    first = np.where(present.any(axis=1), present.argmax(axis=1), -1)
                    for c in np.unique(first[first >= 0]):
                        rows = np.flatnonzero(first == c)
                        key = vkeys[c]
                        idx = torch.as_tensor(rows, device=tokens[key].device)
                        emb[where[rows]] = radial_embedding(loaded.model, key, tokens[key][idx], dtype=dtype).cpu().numpy()
                        valid[where[rows]] = True
                    continue
                for rows, cols in _groups(present):
                    idx = torch.as_tensor(rows, device=tokens[vkeys[0]].device)
                    sub = {vkeys[c]: tokens[vkeys[c]][idx] for c in cols}
                    vec = encode_tokens(loaded.model, sub, "mean", dtype=dtype)
                    emb[where[rows]] = vec.cpu().numpy()
                    valid[where[rows]] = True
            bar.update(len(where))
    return out


def _presence_order(dataset, ids: np.ndarray, keys: Sequence[str]) -> np.ndarray:
    """Positions of ``ids`` sorted (stably) by their catalog presence pattern over ``keys``."""
    rows = dataset.objects(ids)
    present = np.stack([spec(k).present_in(rows) for k in keys], axis=1)
    return np.lexsort(present.T[::-1]) if len(keys) else np.arange(len(ids))


def embed_modalities(
    loaded,
    modalities: Mapping,
    device: str | torch.device = "cpu",
    dtype: torch.dtype | None = None,
) -> np.ndarray:
    """Embed new data that is not in any dataset (an uploaded cutout or spectrum): official
    modality objects ``{token_key: modality}`` (same batch size each) -> ``(B, dim)`` float32.

    Every object is taken to have every given modality; the vectors are comparable with
    :func:`embed_objects` of the view made of the same modalities.
    """
    if not modalities:
        raise ModelError("no modalities given; pass {token_key: aion modality object}")
    accepted = set(loaded.token_keys)
    unknown = [k for k in modalities if k not in accepted]
    if unknown:
        raise ModelError(
            f"model {loaded.model_id!r} does not take {unknown}; its inputs are {sorted(accepted)}"
        )
    for key, modality in modalities.items():
        expected = spec(key).modality
        if not isinstance(modality, expected):
            raise ModelError(f"{key!r} needs an aion {expected.__name__}, got {type(modality).__name__}")
    _prepare(loaded, device)
    tokens = loaded.codecs.encode(dict(modalities))
    sizes = {k: t.shape[0] for k, t in tokens.items()}
    if len(set(sizes.values())) != 1:
        raise ModelError(f"modalities have different batch sizes {sizes}; give one row per object in each")
    return encode_tokens(loaded.model, tokens, "mean", dtype=dtype).cpu().numpy()


def view_layout(loaded, view: str) -> dict[str, tuple[int, int]]:
    """Token positions of each modality in :func:`token_embeddings` output: key -> (start, stop)."""
    layout, pos = {}, 0
    for key in _view_keys(loaded, view):
        n = spec(key).num_tokens
        layout[key] = (pos, pos + n)
        pos += n
    return layout


def token_embeddings(
    loaded,
    dataset,
    object_ids: Sequence[int] | np.ndarray,
    view: str,
    batch_size: int = 64,
    device: str | torch.device = "cpu",
    progress: bool = False,
    dtype: torch.dtype | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Per-token encoder outputs for attentive-pooling probes: ``(values (n, T, dim) float32, mask (n, T) bool)``.

    ``T`` is the view's full token count in :func:`view_layout` order (fixed positions per
    modality); ``mask`` is True where the token is real (the object has that modality).
    Memory is n x T x dim floats: call it per batch of objects for large views.
    """
    ids = np.atleast_1d(np.asarray(object_ids, dtype=np.int64))
    keys = _view_keys(loaded, view)
    layout = view_layout(loaded, view)
    total = sum(b - a for a, b in layout.values())
    device = _prepare(loaded, device)
    values = np.zeros((len(ids), total, loaded.dim), dtype=np.float32)
    mask = np.zeros((len(ids), total), dtype=bool)
    with _progress(len(ids), progress, f"tokens {view}") as bar:
        for start in range(0, len(ids), batch_size):
            batch = ids[start : start + batch_size]
            tokens, present = tokenize_batch(loaded, dataset, batch, keys)
            for rows, cols in _groups(present):
                sub_keys = [keys[c] for c in cols]
                sub = {k: tokens[k][torch.as_tensor(rows, device=tokens[k].device)] for k in sub_keys}
                out = encode_tokens(loaded.model, sub, "none", dtype=dtype).cpu().numpy()
                # no hidden tokens in a group: outputs follow the concatenation order, after any
                # register tokens the model prepends
                pos = int(getattr(loaded.model, "num_register_tokens", 0) or 0)
                for k in sub_keys:
                    a, b = layout[k]
                    values[start + rows, a:b] = out[:, pos : pos + (b - a)]
                    mask[start + rows, a:b] = True
                    pos += b - a
            bar.update(len(batch))
    return values, mask
