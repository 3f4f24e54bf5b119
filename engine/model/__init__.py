"""AION models: presets, modality mapping, codec sets, loading/saving, and the fast encode path."""
