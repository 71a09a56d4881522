"""Glue that plugs ZenML into `imgclf` without `imgclf` importing ZenML (entry points in pyproject.toml)."""
