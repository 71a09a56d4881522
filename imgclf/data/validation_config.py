"""What validation checks and how strictly: per-file thresholds, the dataset suite's thresholds, and
each dataset check's severity (error stops the run, warning reports and goes on)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from imgclf.data.decode import DEFAULT_MAX_PIXELS

CheckName = Literal[
    "labels_not_null",
    "labels_in_classes",
    "label_conflicts",
    "exact_duplicates",
    "image_size_range",
    "min_images_per_class",
    "min_classes",
    "class_imbalance",
]
Severity = Literal["error", "warning"]

DEFAULT_SEVERITY: dict[str, Severity] = {
    "labels_not_null": "warning",  # a stray file in the data root: quarantined, the run goes on
    "labels_in_classes": "error",  # a folder outside the declared class set is a setup mistake
    "label_conflicts": "error",  # the same image under two labels: the labels cannot be trusted
    "exact_duplicates": "warning",  # harmless once deduplicated, but worth knowing
    "image_size_range": "error",
    "min_images_per_class": "error",
    "min_classes": "error",
    "class_imbalance": "warning",
}


class ValidationConfig(BaseModel):
    """Thresholds of the image checks and the suite, and each dataset check's severity."""

    model_config = ConfigDict(extra="forbid")

    min_size: int = Field(8, ge=1, description="smallest accepted image side in pixels (per file: too_small)")
    max_pixels: int = Field(
        DEFAULT_MAX_PIXELS, ge=1, description="decompression-bomb cap (width*height); never decoded"
    )
    max_size: int = Field(20_000, ge=1, description="largest accepted image side in pixels (image_size_range)")
    classes: list[str] | None = Field(None, description="expected class names; None accepts the folders found")
    min_images_per_class: int = Field(3, ge=1, description="fewer kept images in a class fails min_images_per_class")
    min_classes: int = Field(2, ge=1, description="fewer kept classes fails min_classes")
    max_imbalance_ratio: float = Field(
        10.0, ge=1.0, description="largest class / smallest class (kept images) above this fails class_imbalance"
    )
    severity: dict[CheckName, Severity] = Field(
        default_factory=lambda: dict(DEFAULT_SEVERITY),
        description="per check: error stops the run, warning reports and goes on; unnamed checks keep their default",
    )
    fail_on_suite_error: bool = Field(True, description="false: failed error checks are reported, the run goes on")

    @field_validator("severity")
    @classmethod
    def _merge_defaults(cls, value: dict[str, Severity]) -> dict[str, Severity]:
        return {**DEFAULT_SEVERITY, **value}

    @field_validator("classes")
    @classmethod
    def _distinct_classes(cls, value: list[str] | None) -> list[str] | None:
        if value is not None and (not value or len(set(value)) != len(value) or "" in value):
            raise ValueError(f"classes must be distinct, non-empty names, got {value}")
        return value

    @model_validator(mode="after")
    def _size_order(self) -> ValidationConfig:
        if self.max_size < self.min_size:
            raise ValueError(f"max_size ({self.max_size}) is below min_size ({self.min_size})")
        return self
