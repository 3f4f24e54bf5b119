"""Datasets: the catalog schema, the on-disk store, the mock survey and readers of real formats."""

from engine.data.store import Dataset, open_dataset
from engine.data.writer import DatasetWriter

__all__ = ["Dataset", "DatasetWriter", "open_dataset"]
