"""The AION Explorer app: `panel serve app` serves this file, one template per session.

Heavy data comes from :func:`app.data_store.get_store` (once per process); each session builds
only its small :class:`~app.state.AppState` and the views, and syncs state to the URL.
"""

from __future__ import annotations

import importlib

import holoviews as hv
import panel as pn
from panel.theme import fast as fast_theme

from app.config import AppConfig, load_config
from app.data_store import get_store
from app.messages import AppMessage
from app.raster import warm_up_datashader, warm_up_later
from app.state import TABS, AppState
from app.views.sky import SkyView  # noqa: F401 - the first page's view: imported with the app, not on first show

#: URL query names for the state that makes a link reopen the same view.
URL_KEYS = {"dataset": "dataset", "object_id": "object", "view": "view", "tab": "tab"}

TAB_TITLES = {
    "sky": "Sky", "object": "Object", "similar": "Similar", "segmentation": "Segmentation",
    "spectrum": "Spectrum", "map": "Embedding map", "labels": "Labels", "outreach": "Outreach",
}


#: Where each tab's view class lives: imported when the tab is first shown (the sky's and the
#: object's modules are imported anyway; the others cost ~0.3 s of imports a sky-only visitor skips).
VIEW_CLASSES = {
    "sky": "app.views.sky:SkyView", "object": "app.views.object:ObjectView",
    "similar": "app.views.similar:SimilarView", "segmentation": "app.views.segmentation:SegmentationView",
    "spectrum": "app.views.spectrum:SpectrumView", "map": "app.views.embedding_map:MapView",
    "labels": "app.views.labels:LabelsView", "outreach": "app.views.outreach:OutreachView",
}


def view_class(name: str) -> type:
    module, cls = VIEW_CLASSES[name].split(":")
    return getattr(importlib.import_module(module), cls)


class LazyViews:
    """Builds a session's views on first display only: a session that looks at the sky never pays
    for the gallery search, the map's PCA or the tour (Tabs(dynamic=True) renders only the active tab)."""

    def __init__(self, store, state):
        self.store, self.state = store, state
        self.built: dict = {}

    def get(self, name: str):
        if name not in self.built:
            self.built[name] = view_class(name)(self.store, self.state)
        return self.built[name]

    def pane(self, name: str):
        return pn.param.ParamFunction(lambda: self.get(name), lazy=True, sizing_mode="stretch_width")


class Fast(fast_theme.Fast):
    """Panel's Fast design without its Google-hosted web font: the app is meant for machines without
    internet access, where that request fails (console errors on every page) and the text falls back
    to the system sans-serif anyway. Named ``Fast`` on purpose: Panel serves a design's bundled files
    from a folder named after the lower-cased class name."""

    _resources = {**fast_theme.Fast._resources, "font": {}}


def schedule_colour_warm_up(store) -> None:
    """Compile the colour-by-column kernels now under `panel serve --warm` (no visitor waits yet; its
    session has no server context), else in a thread once the first page is drawn (onload)."""
    doc = pn.state.curdoc
    if doc is None:
        return
    context = doc.session_context
    if context is not None and getattr(context, "server_context", True) is None:
        warm_up_datashader(store, "mean")
    else:
        pn.state.onload(lambda: warm_up_later(store))


def build_app(config: AppConfig | None = None, sync_url: bool = True):
    """The session's template; a store that cannot load becomes one clear message page."""
    pn.extension("tabulator", "filedropper", notifications=True)
    hv.extension("bokeh")
    config = config or load_config()
    try:
        store = get_store(config)
    except AppMessage as msg:
        return pn.template.FastListTemplate(title="AION Explorer", main=[pn.pane.Alert(str(msg), alert_type="danger")],
                                            design=Fast)
    state = AppState(store)
    views = LazyViews(store, state)
    tabs = pn.Tabs(*((TAB_TITLES[k], views.pane(k)) for k in TABS), dynamic=True, sizing_mode="stretch_width")

    def tab_to_index(event):
        tabs.active = list(TABS).index(event.new)

    state.param.watch(tab_to_index, "tab")
    tabs.param.watch(lambda e: setattr(state, "tab", TABS[e.new]), "active")
    tabs.active = list(TABS).index(state.tab)
    if sync_url and pn.state.location is not None:
        pn.state.location.sync(state, URL_KEYS)
    message = pn.pane.Alert(
        state.param.message, alert_type=state.param.message_level, visible=state.param.message.rx.bool(),
        sizing_mode="stretch_width", css_classes=["aion-message"],
    )
    header = pn.pane.Markdown(
        state.param.object_id.rx.pipe(lambda oid: f"**Selected:** {oid if oid is not None else 'none'} · dataset **{store.name}**"),
        css_classes=["aion-selected"],
    )
    template = pn.template.FastListTemplate(
        title="AION Explorer", main=[pn.Column(header, message, tabs, sizing_mode="stretch_width")],
        accent_base_color="#1f4e79", header_background="#1f4e79", theme_toggle=False, design=Fast,
    )
    schedule_colour_warm_up(store)
    template.aion_state = state  # tests and benchmarks reach the session state and views through the template
    template.aion_views = views
    return template


if pn.state.served:
    build_app().servable(title="AION Explorer")
