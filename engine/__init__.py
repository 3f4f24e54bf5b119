"""AION Explorer engine: data, models, training, embeddings, indexes and science tasks.

Never imports ``app`` or panel: the app reads what the engine writes.
"""

__version__ = "0.1.0"
