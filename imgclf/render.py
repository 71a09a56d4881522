"""HTML pages from the Jinja2 templates in `imgclf/templates/`: the evaluation report, the validation
view and the dashboard views. Autoescaped, and a missing value is an error rather than a blank."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, StrictUndefined

TEMPLATES = Path(__file__).parent / "templates"
_ENV = Environment(
    loader=FileSystemLoader(TEMPLATES), autoescape=True, undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True
)


def render(template: str, **context: Any) -> str:
    """`template` (a file name in imgclf/templates) filled in with `context`."""
    return _ENV.get_template(template).render(**context)
