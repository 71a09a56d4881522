"""Batch inference: list a folder, manifest, archive or bucket prefix of images, split it into shards,
classify each shard with the served ONNX model (no torch), and account for every input."""
