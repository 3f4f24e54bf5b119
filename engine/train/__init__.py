"""Training: codecs, masked-modeling pretraining, probes. Runs under torchrun unchanged."""
