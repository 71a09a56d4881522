"""imgclf: the plain-Python core of the image-classification pipeline (no ZenML here). Module map and
layering: docs/architecture.md."""
