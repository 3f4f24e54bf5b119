"""A clickable thumbnail gallery: one JSComponent draws k cards; clicks and the "more like this" /
"less like this" marks come back to Python as messages (a param would not fire when the same
card is clicked twice)."""

from __future__ import annotations

import param
from panel.custom import JSComponent


class Gallery(JSComponent):
    items = param.List(default=[], doc="Cards: dicts with id, score, src (image URI or ''), label, mark.")

    _esm = """
    export function render({ model, el }) {
      const draw = () => {
        el.innerHTML = ''
        const grid = document.createElement('div')
        grid.className = 'aion-gallery'
        for (const it of model.items) {
          const card = document.createElement('div')
          card.className = 'aion-card' + (it.mark ? ' aion-' + it.mark : '')
          card.dataset.objectId = String(it.id)
          card.title = 'Open object ' + it.id
          const img = it.src ? document.createElement('img') : document.createElement('div')
          if (it.src) { img.src = it.src; img.alt = 'object ' + it.id } else { img.className = 'aion-noimg'; img.textContent = it.label }
          img.onclick = () => model.send_msg({type: 'select', id: it.id})
          const cap = document.createElement('div')
          cap.className = 'aion-cap'
          cap.textContent = it.id + ' · ' + Number(it.score).toFixed(3)
          const row = document.createElement('div')
          row.className = 'aion-marks'
          for (const [mark, text] of [['like', '+ more'], ['dislike', '− less']]) {
            const b = document.createElement('button')
            b.textContent = text
            b.className = 'aion-' + mark + '-btn'
            b.onclick = (e) => { e.stopPropagation(); model.send_msg({type: mark, id: it.id}) }
            row.appendChild(b)
          }
          card.append(img, cap, row)
          grid.appendChild(card)
        }
        el.appendChild(grid)
      }
      draw()
      model.on('items', draw)
    }
    """

    _stylesheets = [
        """
        .aion-gallery { display: grid; grid-template-columns: repeat(auto-fill, minmax(118px, 1fr)); gap: 8px; }
        .aion-card { border: 2px solid #ddd; border-radius: 6px; padding: 4px; text-align: center; background: #fff; }
        .aion-card img, .aion-noimg { width: 104px; height: 104px; cursor: pointer; image-rendering: auto; }
        .aion-noimg { display: flex; align-items: center; justify-content: center; background: #eee; color: #555; }
        .aion-card.aion-like { border-color: #2ca02c; } .aion-card.aion-dislike { border-color: #d62728; opacity: .6; }
        .aion-cap { font: 12px monospace; margin: 2px 0; }
        .aion-marks button { font-size: 11px; margin: 0 2px; padding: 1px 4px; cursor: pointer; }
        """
    ]

    def __init__(self, on_select=None, on_mark=None, **params):
        super().__init__(**params)
        self._on_select = on_select
        self._on_mark = on_mark

    def _handle_msg(self, msg) -> None:
        kind, oid = msg.get("type"), msg.get("id")
        if oid is None:
            return
        if kind == "select" and self._on_select:
            self._on_select(int(oid))
        elif kind in ("like", "dislike") and self._on_mark:
            self._on_mark(kind, int(oid))
