"""A trained network as plain data: architecture, classes, PreprocessSpec, weights (and the channel
layout of a pruned network, the label thresholds of a multi-label model, the embedding projection),
saved as a bundle folder of safetensors + JSON (see `imgclf.bundle`).

Loading a bundle cannot execute code: no pickle anywhere. `build` turns the record back into a
torch module through the model factory, so the architecture knowledge stays in `imgclf.models`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from imgclf.bundle import (
    SPEC_EMBEDDING,
    SPEC_FILE,
    SPEC_MULTI_LABEL,
    WEIGHTS_FILE,
    multi_label_record,
    read_spec,
    thresholds_from_record,
    write_spec,
)
from imgclf.models.factory import create
from imgclf.models.projection import Projection, load_projection, save_projection
from imgclf.models.structure import apply_structure
from imgclf.preprocess import PreprocessSpec


@dataclass
class TrainedModel:
    arch: str
    class_names: list[str]
    preprocess: PreprocessSpec
    state_dict: dict[str, torch.Tensor]
    history: list[dict[str, float]] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)  # weights origin, data hash, train config
    # module name -> attributes that differ from `arch` as built (channel counts of a pruned network);
    # with the weights' shapes this rebuilds the network without pickling it. Empty: `arch` as is.
    structure: dict[str, dict[str, Any]] = field(default_factory=dict)
    # a multi-label model's per-label thresholds on sigmoid scores, in class order, tuned on val at the
    # end of training (`imgclf.models.thresholds`); None for a single-label model
    thresholds: list[float] | None = None
    # PCA of the pooled features, fitted on train images at the end of training
    # (`imgclf.models.projection`): the ONNX export's second output; None: logits only (older bundles)
    projection: Projection | None = None

    def spec_dict(self) -> dict[str, Any]:
        spec = {
            "arch": self.arch,
            "class_names": list(self.class_names),
            "preprocess": self.preprocess.to_dict(),
            "history": self.history,
            "info": self.info,
            "structure": self.structure,
        }
        if self.thresholds is not None:
            spec[SPEC_MULTI_LABEL] = multi_label_record(self.class_names, self.thresholds)
        if self.projection is not None:
            spec[SPEC_EMBEDDING] = self.projection.record()
        return spec

    def build(self, drop_rate: float = 0.0) -> nn.Module:
        """A torch module in eval mode with these weights (no pretrained lookup: the weights are here)."""
        image_size = self.preprocess.image_size
        model, _, _ = create(
            self.arch, len(self.class_names), pretrained=False, drop_rate=drop_rate, image_size=image_size
        )
        if self.structure:
            apply_structure(model, self.structure, self.state_dict)
        model.load_state_dict(self.state_dict)
        return model.eval()

    def save(self, directory: str | Path) -> Path:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        tensors = {k: v.detach().cpu().contiguous() for k, v in self.state_dict.items()}
        save_file(tensors, str(directory / WEIGHTS_FILE))
        if self.projection is not None:
            save_projection(self.projection, directory)
        write_spec(directory, self.spec_dict())
        return directory

    @classmethod
    def load(cls, directory: str | Path) -> TrainedModel:
        directory = Path(directory)
        spec = read_spec(directory)
        if spec is None:
            raise FileNotFoundError(f"{directory} is not a model bundle: {SPEC_FILE} is missing")
        return cls(
            arch=spec["arch"],
            class_names=spec["class_names"],
            preprocess=PreprocessSpec.from_dict(spec["preprocess"]),
            state_dict=load_file(str(directory / WEIGHTS_FILE)),
            history=spec.get("history", []),
            info=spec.get("info", {}),
            structure=spec.get("structure", {}),
            thresholds=None
            if SPEC_MULTI_LABEL not in spec
            else thresholds_from_record(spec[SPEC_MULTI_LABEL], spec["class_names"], f"{directory / SPEC_FILE}"),
            projection=load_projection(directory, spec[SPEC_EMBEDDING]) if SPEC_EMBEDDING in spec else None,
        )
