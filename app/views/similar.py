"""Similar: the top-k look-alikes of the selected object as a clickable gallery with scores;
view choice (image / spectrum / photometry / joint, and cross-modal queries), a kind filter,
"more like these / less like those", CSV and VOTable export, and search by an uploaded file."""

from __future__ import annotations

import io

import panel as pn
import param

from app import search, uploads
from app.gallery import Gallery
from app.messages import AppMessage
from app.state import VIEWS
from app.views import View, notice


class SimilarView(View):
    title = "Similar"
    query_view = param.Selector(default="same", objects=["same", *VIEWS],
                                doc="Embed the query from this modality (cross-modal when it differs from the view).")
    kinds = param.ListSelector(default=[], objects=["galaxy", "star", "qso"], doc="Keep only these kinds (none: all).")
    filter_z = param.Boolean(default=False, label="Filter by redshift")
    z_range = param.Range(default=(0.0, 1.0), bounds=(0.0, 7.0), doc="Keep hits with catalog z in this range.")
    refine = param.Event(label="Search again with + / − marks")

    def __init__(self, store, state, **params):
        super().__init__(store, state, **params)
        self.liked: list[int] = []
        self.disliked: list[int] = []
        self.gallery = Gallery(on_select=self._select, on_mark=self._mark, sizing_mode="stretch_width")
        self.status = pn.pane.Alert("", alert_type="info", visible=False, sizing_mode="stretch_width", css_classes=["aion-similar-status"])
        self.upload = pn.widgets.FileDropper(accepted_filetypes=list(uploads.ACCEPTED), multiple=False,
                                             max_file_size=f"{store.config.upload_max_mb}MB", label="Search with a FITS file")
        self.upload.param.watch(self._on_upload, "value")
        self.csv = pn.widgets.FileDownload(callback=lambda: io.BytesIO(search.to_csv(self.state.hits)), filename="similar.csv",
                                           label="CSV", disabled=True)
        self.votable = pn.widgets.FileDownload(callback=self._votable, filename="similar.vot", label="VOTable", disabled=True)
        self.query_text = ""
        state.param.watch(self._search, ["object_id", "view", "k"])
        state.param.watch(self._show_hits, "hits")
        self.param.watch(self._search, ["query_view", "kinds", "filter_z", "z_range"])
        self._search()

    # --- searching -------------------------------------------------------------------------

    def _report(self, text: str, level: str = "info") -> None:
        self.status.param.update(object=text, alert_type=level, visible=bool(text))

    def _run(self, fn, *args, query: str, **kwargs) -> None:
        try:
            hits = fn(self.store, *args, **kwargs)
        except AppMessage as msg:
            self.state.hits = None
            self._report(str(msg), msg.level)
            return
        self.query_text = query
        self._report("")
        self.state.hits = hits

    def _search(self, *_):
        self.liked, self.disliked = [], []
        if self.state.row is None:
            self.state.hits = None
            self._report("Select an object to see its look-alikes.")
            return
        qv = None if self.query_view == "same" else self.query_view
        self._run(search.by_object, self.state.view, int(self.state.object_id), self.state.k, list(self.kinds) or None,
                  query_view=qv, z_range=self._z(), query=f"object {self.state.object_id}, view {self.state.view}" + (f" from {qv}" if qv else ""))

    def _z(self) -> tuple[float, float] | None:
        return tuple(self.z_range) if self.filter_z else None

    @param.depends("refine", watch=True)
    def _refine(self):
        if self.state.row is None or not (self.liked or self.disliked):
            self._report("Mark hits with “+ more” or “− less” first.")
            return
        self._run(search.refine, self.state.view, int(self.state.object_id), list(self.liked), list(self.disliked),
                  self.state.k, list(self.kinds) or None, z_range=self._z(), query=f"object {self.state.object_id} refined")

    def _on_upload(self, event):
        if not event.new:
            return
        name, data = next(iter(event.new.items()))
        data = data.encode() if isinstance(data, str) else data
        try:
            path, kind = uploads.validate_upload(name, data, self.store.config.upload_max_mb * 1_000_000)
        except AppMessage as msg:
            self._report(str(msg), msg.level)
            return
        view = "image" if kind == "image" else "spectrum"
        self._run(search.by_upload, view, path, kind, self.state.k, query=f"uploaded {name}")

    # --- gallery -----------------------------------------------------------------------------

    def _select(self, object_id: int) -> None:
        self.state.select(object_id)

    def _mark(self, mark: str, object_id: int) -> None:
        for lst in (self.liked, self.disliked):
            if object_id in lst:
                lst.remove(object_id)
        (self.liked if mark == "like" else self.disliked).append(object_id)
        self._show_hits()

    def _show_hits(self, *_):
        hits = self.state.hits
        self.csv.disabled = self.votable.disabled = hits is None or len(hits) == 0
        if hits is None:
            self.gallery.items = []
            return
        marks = {**dict.fromkeys(self.liked, "like"), **dict.fromkeys(self.disliked, "dislike")}
        self.gallery.items = [
            {"id": int(h.object_id), "score": float(h.score), "src": self.store.thumbnail(int(h.object_id)) or "",
             "label": str(h.kind), "mark": marks.get(int(h.object_id), "")}
            for h in hits.itertuples(index=False)
        ]

    def _votable(self):
        return io.BytesIO(search.to_votable(self.state.hits, self.query_text))

    def __panel__(self):
        controls = pn.Column(
            pn.widgets.RadioButtonGroup.from_param(self.state.param.view, label="Embedding view"),
            pn.Param(self, parameters=["query_view", "kinds", "filter_z", "z_range", "refine"], show_name=False,
                     widgets={"kinds": pn.widgets.CheckButtonGroup, "query_view": {"width": 260},
                              "z_range": {"width": 260}}),  # inside the 300 px column
            pn.widgets.IntSlider.from_param(self.state.param.k, label="k", width=260),
            pn.Row(pn.pane.Markdown("Export:"), self.csv, self.votable),
            self.upload, width=300,
        )
        header = notice("Click a thumbnail to open that object; mark hits “+ more” / “− less” and search again.")
        return pn.Row(controls, pn.Column(header, self.status, self.gallery, sizing_mode="stretch_width"), sizing_mode="stretch_width")
