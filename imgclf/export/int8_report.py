"""The INT8 search's report: the typed rows of export_report.json's "int8_search", and the same
as a Markdown table (int8_recipes.md, the dashboard, the benchmark)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

RECIPES_FILE = "int8_recipes.md"  # the recipe table, beside an export


@dataclass
class Fp32Figures:
    accuracy: float
    images_per_s: float  # batch-32 throughput, median over the rounds
    batch1_p50_ms: float


@dataclass
class RecipeRow:
    """One recipe's line of the table; None where quantising it failed."""

    recipe: str
    speedup: float | None
    images_per_s: float | None
    batch1_p50_ms: float | None
    accuracy: float | None
    accuracy_drop: float | None
    top1_agreement: float | None
    ok: bool  # qualifies
    chosen: bool
    why: str


@dataclass
class Int8SearchReport:
    """The choice, the rules it was made by, fp32's figures and the recipe table."""

    serve: Literal["int8", "fp32"]
    chosen_recipe: str | None
    summary: str
    tolerance: float
    min_agreement: float
    min_speedup: float
    eval_images: int
    timing_rounds: int
    fp32: Fp32Figures
    recipes: list[RecipeRow]


def _num(value: float | None, fmt: str, suffix: str = "") -> str:
    return "—" if value is None else format(value, fmt) + suffix


def recipe_table_markdown(report: Int8SearchReport) -> str:
    """The search report as Markdown: the choice in words, then one row per recipe."""
    fp32 = report.fp32
    lines = [
        f"**{report.summary}**",
        "",
        f"Rules: accuracy drop <= {report.tolerance}, top-1 agreement with fp32 >= {report.min_agreement}, "
        f"batch-32 speedup >= {report.min_speedup}x ORT fp32 (median of {report.timing_rounds} interleaved rounds); "
        f"accuracy on {report.eval_images} eval images.",
        "",
        "| recipe | speedup | images/s (batch 32) | batch-1 p50 ms | accuracy | drop | top-1 agreement | ok | why |",
        "|---|---:|---:|---:|---:|---:|---:|:-:|---|",
        f"| ORT fp32 (baseline) | 1.00x | {fp32.images_per_s:.0f} | {fp32.batch1_p50_ms:.2f} | {fp32.accuracy:.4f} "
        "| — | — | | |",
    ]
    for row in report.recipes:
        name = f"**{row.recipe}**" if row.chosen else row.recipe
        why = row.why.replace("|", "/").replace("\n", " ")
        lines.append(
            f"| {name} | {_num(row.speedup, '.2f', 'x')} | {_num(row.images_per_s, '.0f')} "
            f"| {_num(row.batch1_p50_ms, '.2f')} | {_num(row.accuracy, '.4f')} | {_num(row.accuracy_drop, '+.4f')} "
            f"| {_num(row.top1_agreement, '.4f')} | {'yes' if row.ok else 'no'} | {why} |"
        )
    return "\n".join(lines) + "\n"
