"""Inspection labels (quality, class, comment per object) kept in SQLite on the server.

SQLite gives atomic, crash-safe writes and concurrent readers for free; one connection per call
keeps it safe under Panel's thread pool. Labels are keyed by (dataset, object_id) so one file can
serve several datasets.
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import pandas as pd

QUALITIES = ("unset", "good", "artefact", "blend", "bad data")
CLASSES = ("unset", "spiral", "elliptical", "merger", "lens", "star", "qso", "other")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS labels (
    dataset TEXT NOT NULL, object_id INTEGER NOT NULL, quality TEXT NOT NULL, class TEXT NOT NULL,
    comment TEXT NOT NULL DEFAULT '', updated REAL NOT NULL, PRIMARY KEY (dataset, object_id)
)"""


class LabelStore:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._connect() as con:
            con.execute(_SCHEMA)

    def _connect(self) -> sqlite3.Connection:
        try:
            return sqlite3.connect(self.path, timeout=10)
        except sqlite3.Error as exc:
            raise ValueError(f"{self.path}: cannot open the labels database ({exc}); set AION_LABELS_DB to a writable path") from exc

    def save(self, dataset: str, object_id: int, quality: str, cls: str, comment: str = "") -> None:
        if quality not in QUALITIES:
            raise ValueError(f"quality {quality!r} not accepted; accepted: {', '.join(QUALITIES)}")
        if cls not in CLASSES:
            raise ValueError(f"class {cls!r} not accepted; accepted: {', '.join(CLASSES)}")
        if len(comment) > 2000:
            raise ValueError(f"comment is {len(comment)} characters; at most 2000 are accepted")
        with self._connect() as con:
            con.execute("INSERT OR REPLACE INTO labels VALUES (?, ?, ?, ?, ?, ?)",
                        (dataset, int(object_id), quality, cls, comment, time.time()))

    def get(self, dataset: str, object_id: int) -> dict | None:
        with self._connect() as con:
            row = con.execute("SELECT quality, class, comment FROM labels WHERE dataset = ? AND object_id = ?",
                              (dataset, int(object_id))).fetchone()
        return None if row is None else {"quality": row[0], "class": row[1], "comment": row[2]}

    def frame(self, dataset: str) -> pd.DataFrame:
        with self._connect() as con:
            return pd.read_sql_query("SELECT object_id, quality, class, comment, updated FROM labels WHERE dataset = ? "
                                     "ORDER BY object_id", con, params=(dataset,))

    def to_csv(self, dataset: str) -> bytes:
        return self.frame(dataset).to_csv(index=False).encode()
