"""Labels: a quality / class / comment form for the selected object, saved on the server, and the
labels of this dataset as a table and a CSV download."""

from __future__ import annotations

import io

import panel as pn
import param

from app.labels import CLASSES, QUALITIES, LabelStore
from app.views import View, nothing_selected


class LabelsView(View):
    title = "Labels"
    quality = param.Selector(default="unset", objects=list(QUALITIES))
    label_class = param.Selector(default="unset", objects=list(CLASSES), label="Class")
    comment = param.String(default="")
    save = param.Event(label="Save label")

    def __init__(self, store, state, **params):
        super().__init__(store, state, **params)
        self.labels = LabelStore(store.config.labels_path)
        self.status = pn.pane.Markdown("", css_classes=["aion-label-status"])
        self.table = pn.widgets.Tabulator(self.labels.frame(store.name), show_index=False, disabled=True, height=300,
                                          sizing_mode="stretch_width")
        self.download = pn.widgets.FileDownload(callback=lambda: io.BytesIO(self.labels.to_csv(self.store.name)),
                                                filename=f"labels_{store.name}.csv", label="Export labels (CSV)")
        state.param.watch(self._load, "object_id")
        self._load()

    def _load(self, *_):
        if self.state.row is None:
            return
        found = self.labels.get(self.store.name, self.state.object_id) or {"quality": "unset", "class": "unset", "comment": ""}
        self.param.update(quality=found["quality"], label_class=found["class"], comment=found["comment"])
        self.status.object = ""

    @param.depends("save", watch=True)
    def _save(self):
        if (msg := nothing_selected(self.state)) is not None:
            self.status.object = msg.object
            return
        try:
            self.labels.save(self.store.name, self.state.object_id, self.quality, self.label_class, self.comment)
        except ValueError as exc:
            self.status.object = f"**Not saved:** {exc}"
            return
        self.status.object = f"Saved label for object {self.state.object_id}."
        self.table.value = self.labels.frame(self.store.name)

    def __panel__(self):
        form = pn.Param(self, parameters=["quality", "label_class", "comment", "save"], show_name=False,
                        widgets={"comment": pn.widgets.TextAreaInput, "quality": pn.widgets.RadioButtonGroup}, width=420)
        return pn.Row(pn.Column(form, self.status, self.download), self.table, sizing_mode="stretch_width")
