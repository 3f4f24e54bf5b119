"""What an ingest did, file by file: for the terminal, ``--json`` and dataset.json provenance."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path


@dataclass
class FileResult:
    path: str
    label: str = ""
    source: str = ""
    objects: int = 0
    skipped_objects: int = 0
    size: int = 0
    mtime_ns: int = 0
    notes: list[str] = field(default_factory=list)
    error: str = ""

    @classmethod
    def of(cls, path: Path, **kw) -> FileResult:
        try:
            st = os.stat(path)
            kw.setdefault("size", st.st_size)
            kw.setdefault("mtime_ns", st.st_mtime_ns)
        except OSError:
            pass
        return cls(path=str(path), **kw)


@dataclass
class IngestReport:
    out: str = ""
    format: str = ""
    radius_arcsec: float = 0.0
    files: list[FileResult] = field(default_factory=list)
    objects: int = 0  # catalog rows written
    per_source: dict[str, int] = field(default_factory=dict)
    multi_source_rows: int = 0  # rows that joined objects of 2+ surveys
    dataset_hash: str = ""
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)

    @property
    def good(self) -> list[FileResult]:
        return [f for f in self.files if not f.error]

    @property
    def bad(self) -> list[FileResult]:
        return [f for f in self.files if f.error]

    def lines(self) -> list[str]:
        """Human summary: one line per bad file (its error), then the totals."""
        out = [f"skipped bad file: {f.error}" for f in self.bad]
        by_label: dict[str, list[FileResult]] = {}
        for f in self.good:  # summarised per kind of file: an ingest may read 100 000 spec files
            by_label.setdefault(f.label, []).append(f)
        for label, files in by_label.items():
            dropped = sum(f.skipped_objects for f in files)
            extra = f", {dropped} NaN-only objects dropped" if dropped else ""
            where = files[0].path if len(files) == 1 else f"{len(files)} files"
            out.append(f"read {where}: {label}, {sum(f.objects for f in files)} object(s){extra}")
            notes: dict[str, int] = {}
            for f in files:
                for n in f.notes:
                    notes[n] = notes.get(n, 0) + 1
            out.extend(f"  note: {n}" + (f" ({k} files)" if k > 1 else "") for n, k in notes.items())
        out.extend(f"note: {n}" for n in self.notes)
        per = ", ".join(f"{k} {v}" for k, v in self.per_source.items())
        out.append(
            f"ingested {len(self.good)} file(s), skipped {len(self.bad)} bad; {self.objects} objects "
            f'({per}); {self.multi_source_rows} cross-matched within {self.radius_arcsec:g}" -> {self.out} '
            f"[hash {self.dataset_hash}] in {self.seconds:.1f} s"
        )
        return out

    def to_dict(self) -> dict:
        d = asdict(self)
        d["bad_files"] = len(self.bad)
        d["good_files"] = len(self.good)
        return d
