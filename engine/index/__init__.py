"""Embeddings on disk, FAISS indexes, manifests and the Searcher used by the CLI and the app."""
