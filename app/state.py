"""One session's state: which object, tab, view and colouring; synced to the URL by main.py.

Kept small (ids and choices, plus the current search hits) because the heavy data lives in the
shared :class:`~app.data_store.DataStore`. Views watch these params; tests drive them directly.
"""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import param

from app.data_store import DataStore

TABS = ("sky", "object", "similar", "segmentation", "spectrum", "map", "labels", "outreach")
VIEWS = ("image", "spectrum", "photometry", "joint")
#: Search radius for "ra dec" look-ups: the nearest object within this is selected.
COORD_MATCH_DEG = 0.05
#: Half-height of the sky view (deg) after "go to": close enough that the objects there show their cutouts.
DEFAULT_FOV_DEG = 0.04

_SEXAGESIMAL = re.compile(r"[hdms:]")


class AppState(param.Parameterized):
    dataset = param.String(default="", doc="Name of the dataset served (part of the URL so links are unambiguous).")
    object_id = param.Integer(default=None, allow_None=True, doc="The selected object; every view follows it.")
    tab = param.Selector(default="sky", objects=list(TABS))
    view = param.Selector(default="image", objects=list(VIEWS), doc="Embedding view used for similarity search.")
    colour = param.Selector(default="count", objects=["count"], doc="Catalog column the sky is coloured by.")
    k = param.Integer(default=12, bounds=(1, 50), doc="Number of look-alikes shown.")
    focus = param.Tuple(default=None, allow_None=True, length=3, doc="(ra, dec, field of view in deg) to centre the sky on.")
    hits = param.DataFrame(default=None, allow_None=True, doc="Current similarity results (object_id, score, ra, dec).")
    message = param.String(default="", doc="One clear sentence shown above the views (empty: none).")
    message_level = param.Selector(default="warning", objects=["info", "warning", "danger"])

    def __init__(self, store: DataStore, **params):
        self.store = store
        super().__init__(**params)
        self.param.colour.objects = ["count", *store.colour_columns]
        if not self.dataset:
            self.dataset = store.name
        self._check_object()

    # --- selection ---------------------------------------------------------------------

    @property
    def row(self) -> pd.Series | None:
        """The selected object's catalog row, or None (nothing selected or unknown id)."""
        if self.object_id is None or not self.store.has(self.object_id):
            return None
        return self.store.row(self.object_id)

    def select(self, object_id: int | None) -> None:
        self.object_id = None if object_id is None else int(object_id)

    @param.depends("object_id", watch=True)
    def _check_object(self) -> None:
        """Unknown ids (typed, or from an old URL) become a message, never an exception."""
        if self.object_id is not None and not self.store.has(self.object_id):
            self.say(f"Unknown object id {self.object_id} in dataset {self.store.name!r}.", "danger")
        elif self.message.startswith("Unknown object id"):
            self.say("")

    @param.depends("dataset", watch=True)
    def _check_dataset(self) -> None:
        if self.dataset and self.dataset != self.store.name:
            self.say(
                f"This server shows dataset {self.store.name!r}, not {self.dataset!r}; "
                f"restart it with AION_DATASET pointing at that dataset.",
                "danger",
            )

    def say(self, text: str, level: str = "warning") -> None:
        self.param.update(message=text, message_level=level)

    # --- look-up -----------------------------------------------------------------------

    def goto(self, text: str) -> bool:
        """Select by object id ("12345") or position ("150.1 2.2", "10h00m28s +02d12m21s").

        Returns True when an object was selected; otherwise sets a message saying why not.
        """
        text = text.strip()
        if not text:
            return False
        if re.fullmatch(r"\d+", text):
            oid = int(text)
            if not self.store.has(oid):
                self.say(f"Unknown object id {oid} in dataset {self.store.name!r}.", "danger")
                return False
            self.select(oid)
            row = self.store.row(oid)
            self.focus = (float(row["ra"]), float(row["dec"]), self.focus[2] if self.focus else DEFAULT_FOV_DEG)
            return True
        try:
            ra, dec = parse_coordinates(text)
        except ValueError as exc:
            self.say(str(exc), "danger")
            return False
        self.focus = (ra, dec, self.focus[2] if self.focus else DEFAULT_FOV_DEG)
        oid = self.store.nearest(ra, dec, COORD_MATCH_DEG)
        if oid is None:
            self.say(f"No object within {COORD_MATCH_DEG * 60:.0f} arcmin of RA {ra:.4f}, Dec {dec:.4f}.", "info")
            return False
        self.say("")
        self.select(oid)
        return True


def parse_coordinates(text: str) -> tuple[float, float]:
    """(ra, dec) in degrees from "ra dec" in degrees or sexagesimal; the error shows what is accepted."""
    parts = text.replace(",", " ").split()
    accepted = "an object id, 'RA Dec' in degrees (150.1 2.2) or sexagesimal (10h00m28s +02d12m21s)"
    if len(parts) != 2:
        raise ValueError(f"cannot read {text!r} as a position; accepted: {accepted}")
    try:
        if _SEXAGESIMAL.search(text):
            from astropy import units as u
            from astropy.coordinates import SkyCoord

            c = SkyCoord(parts[0], parts[1], unit=(u.hourangle, u.deg))
            ra, dec = float(c.ra.deg), float(c.dec.deg)
        else:
            ra, dec = float(parts[0]), float(parts[1])
    except ValueError:
        raise ValueError(f"cannot read {text!r} as a position; accepted: {accepted}") from None
    if not (np.isfinite(ra) and np.isfinite(dec)) or not -90 <= dec <= 90:
        raise ValueError(f"position {text!r} is outside the sky (Dec must be within -90..90)")
    return ra % 360.0, dec
