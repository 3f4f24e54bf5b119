"""One module per view; each is a ``pn.viewable.Viewer`` holding the shared store and the session state."""

from __future__ import annotations

import holoviews as hv
import panel as pn
import param

from app.data_store import DataStore
from app.messages import AppMessage
from app.state import AppState

hv.extension("bokeh", logo=False)  # once per process: the views build Bokeh-backed HoloViews options


class View(pn.viewable.Viewer):
    """Base of every view: the shared store, this session's state, and a helper for messages."""

    title = "view"

    def __init__(self, store: DataStore, state: AppState, **params):
        self.store = store
        self.state = state
        super().__init__(**params)


def notice(text: str, level: str = "info") -> pn.pane.Alert:
    return pn.pane.Alert(text, alert_type=level, sizing_mode="stretch_width")


def guarded(fn):
    """Wrap a view-building method so an AppMessage (missing index, no data) shows as an alert."""

    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except AppMessage as msg:
            return notice(str(msg), msg.level)

    wrapper.__name__ = fn.__name__
    wrapper.__doc__ = fn.__doc__
    return wrapper


def nothing_selected(state: AppState) -> pn.pane.Alert | None:
    if state.object_id is None:
        return notice("Select an object: tap it on the sky or the map, or type its id or position in the search box.")
    if state.row is None:
        return notice(f"Unknown object id {state.object_id} in dataset {state.store.name!r}.", "danger")
    return None


__all__ = ["View", "guarded", "notice", "nothing_selected", "param"]
