"""Domain errors. Each names the file or field at fault and what is accepted.

They subclass the builtin a caller would expect (ValueError, KeyError, FileNotFoundError)
so generic handlers still work; the CLI prints them as one line and exits non-zero.
"""

from __future__ import annotations


class EngineError(Exception):
    """Base of every error the CLI reports as one clean line."""


class DatasetError(EngineError, ValueError):
    """A dataset folder or one of its files is missing, corrupt or inconsistent."""


class MissingFileError(EngineError, FileNotFoundError):
    """A file the engine needs does not exist."""


class UnknownObjectError(EngineError, KeyError):
    """Object ids that are not in the dataset's catalog."""

    def __init__(self, ids, where: str):
        ids = list(ids)
        shown = ", ".join(str(i) for i in ids[:5]) + (" ..." if len(ids) > 5 else "")
        self.ids = ids
        super().__init__(f"unknown object_id {shown} in {where}")

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0])


class MissingModalityError(DatasetError):
    """Objects lack the modality a request needs (e.g. no spectrum for a spectrum query)."""


class ModelError(EngineError, ValueError):
    """A model folder is missing a file, a codec, or holds weights that do not match."""


class IndexError_(EngineError, ValueError):
    """An index is missing or stale (dataset/model changed since it was built)."""


class ValidationError(EngineError, ValueError):
    """An input file or argument failed validation; the message names file and field."""
