"""Crash-safe file writes: temp file in the same folder, fsync, ``os.replace``, fsync the folder.

``faiss.write_index`` truncates its target first and never fsyncs, so a crash mid-write would
leave a half index under the final name. Everything the index package writes goes through here.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

_HASH_BLOCK = 1 << 22


def fsync_dir(folder: Path) -> None:
    """Persist a rename: on POSIX the directory entry itself must be flushed."""
    with contextlib.suppress(OSError):  # some filesystems refuse O_RDONLY dir fsync
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def temp_sibling(path: Path) -> Path:
    """A unique hidden name beside ``path`` (same filesystem, so ``os.replace`` is atomic)."""
    return path.parent / f".{path.name}.tmp-{uuid.uuid4().hex[:8]}"


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path to write; on success fsync it and rename it onto ``path``.

    On an exception the temporary file is removed and ``path`` is left as it was.
    """
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_sibling(final)
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, final)
        fsync_dir(final.parent)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_json_atomic(path: str | os.PathLike, obj: Any) -> None:
    write_bytes_atomic(path, (json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n").encode())


def write_with_atomic(path: str | os.PathLike, writer: Callable[[str], None]) -> None:
    """Run ``writer(tmp_path_str)`` (e.g. ``faiss.write_index``) and move the result into place."""
    with atomic_path(path) as tmp:
        writer(str(tmp))


def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(_HASH_BLOCK):
            h.update(block)
    return h.hexdigest()


def _json_default(obj: Any) -> Any:
    import numpy as np

    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")
