"""Similarity search for the app on top of the engine's Searcher: by object, by uploaded data,
with relevance feedback and filters; results as a frame with object_id, score, ra, dec, kind;
export to CSV and VOTable."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pandas as pd

from app import engine_links
from app.messages import AppMessage

RESULT_COLUMNS = ["rank", "object_id", "score", "ra", "dec", "kind"]


def results_frame(store, object_ids, scores) -> pd.DataFrame:
    """Search results joined with catalog positions, in rank order."""
    ids = np.asarray(object_ids, dtype=np.int64)
    rows = store.catalog.set_index("object_id").loc[ids]
    return pd.DataFrame({
        "rank": np.arange(1, len(ids) + 1),
        "object_id": ids,
        "score": np.asarray(scores, dtype=np.float32),
        "ra": rows["ra"].to_numpy(np.float64),
        "dec": rows["dec"].to_numpy(np.float64),
        "kind": rows["kind"].astype(str).to_numpy(),
    })


def _unpack(store, hits) -> pd.DataFrame:
    """The engine's list of ``Hit`` (object_id, score, ...) as a results frame."""
    hits = list(hits)
    return results_frame(store, [h.object_id for h in hits], [h.score for h in hits])


def _filters(kinds: list[str] | None, z_range: tuple[float, float] | None) -> dict:
    out: dict = {}
    if kinds:
        out["kinds"] = list(kinds)
    if z_range is not None:
        out["z_range"] = (float(z_range[0]), float(z_range[1]))
    return out


def by_object(store, view: str, object_id: int, k: int, kinds: list[str] | None = None,
              query_view: str | None = None, z_range: tuple[float, float] | None = None) -> pd.DataFrame:
    """The k nearest objects to ``object_id`` (itself excluded) in ``view``; cross-modal when
    ``query_view`` differs (the query embedded from that modality, searched in ``view``)."""
    searcher = engine_links.searcher(store, view)
    filters = _filters(kinds, z_range)
    if query_view and query_view != view:
        source = engine_links.searcher(store, query_view)
        return _unpack(store, engine_links.call(searcher.cross_modal, source, int(object_id), k=k, **filters))
    return _unpack(store, engine_links.call(searcher.similar, int(object_id), k=k, **filters))


def refine(store, view: str, object_id: int, liked: list[int], disliked: list[int], k: int,
           kinds: list[str] | None = None, z_range: tuple[float, float] | None = None) -> pd.DataFrame:
    """Relevance feedback (Rocchio): the query moves towards ``liked`` and away from ``disliked`` hits."""
    searcher = engine_links.searcher(store, view)
    return _unpack(store, engine_links.call(searcher.feedback, list(liked), list(disliked), k,
                                            query_id=int(object_id), **_filters(kinds, z_range)))


def by_upload(store, view: str, path: Path, kind: str, k: int) -> pd.DataFrame:
    """Search with a FITS cutout or spectrum that is not in the dataset."""
    searcher = engine_links.searcher(store, view)
    try:
        return _unpack(store, searcher.similar_to_file(path, k=k))
    except AppMessage:
        raise
    except Exception as exc:  # engine errors name what they could not read in the file
        raise AppMessage(f"Cannot search with {path.name!r}: {exc}", "danger") from exc


def to_csv(frame: pd.DataFrame) -> bytes:
    return frame[RESULT_COLUMNS].to_csv(index=False).encode()


def to_votable(frame: pd.DataFrame, query: str) -> bytes:
    """A VOTable (astropy) that TOPCAT and Aladin open directly."""
    from astropy.io.votable import from_table
    from astropy.table import Table

    table = Table.from_pandas(frame[RESULT_COLUMNS].reset_index(drop=True))
    table["ra"].unit, table["dec"].unit = "deg", "deg"
    table.meta["description"] = f"AION Explorer similarity search: {query}"
    buf = io.BytesIO()
    from_table(table).to_xml(buf)
    return buf.getvalue()
