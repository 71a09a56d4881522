"""Data for a model: sources, ingest, decoding, per-file checks, the dataset suite, splitting, the
decoded cache and its loader."""
