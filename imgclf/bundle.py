"""The model bundle: weights as safetensors plus a JSON spec (architecture, classes, PreprocessSpec).

This is the trained-model artifact, the unit the registry stores and the service loads. Plain files,
never pickle: loading a bundle cannot execute code.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from imgclf.preprocess import PreprocessSpec

WEIGHTS_FILE = "model.safetensors"
SPEC_FILE = "model.json"
ONNX_FILE = "model.onnx"
ONNX_INT8_FILE = "model.int8.onnx"


@dataclass
class TrainedModel:
    arch: str
    class_names: list[str]
    preprocess: PreprocessSpec
    state_dict: dict[str, Any]  # name -> torch.Tensor
    history: list[dict[str, float]] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)  # weights origin, data hash, train config
    # module name -> attributes that differ from `arch` as built (channel counts of a pruned network);
    # with the weights' shapes this rebuilds the network without pickling it. Empty: `arch` as is.
    structure: dict[str, dict[str, Any]] = field(default_factory=dict)

    def spec_dict(self) -> dict[str, Any]:
        return {
            "arch": self.arch,
            "class_names": list(self.class_names),
            "preprocess": self.preprocess.to_dict(),
            "history": self.history,
            "info": self.info,
            "structure": self.structure,
        }

    def build(self, drop_rate: float = 0.0):
        """A torch module in eval mode with these weights (no pretrained lookup: the weights are here)."""
        from imgclf.models import create

        model, _, _ = create(self.arch, len(self.class_names), pretrained=False, drop_rate=drop_rate, image_size=self.preprocess.image_size)
        if self.structure:
            from imgclf.export.prune import apply_structure

            apply_structure(model, self.structure, self.state_dict)
        model.load_state_dict(self.state_dict)
        return model.eval()

    def save(self, directory: str | Path) -> Path:
        from safetensors.torch import save_file

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        tensors = {k: v.detach().cpu().contiguous() for k, v in self.state_dict.items()}
        save_file(tensors, str(directory / WEIGHTS_FILE))
        (directory / SPEC_FILE).write_text(json.dumps(self.spec_dict(), indent=2, default=str))
        return directory

    @classmethod
    def load(cls, directory: str | Path) -> "TrainedModel":
        from safetensors.torch import load_file

        directory = Path(directory)
        spec_path = directory / SPEC_FILE
        if not spec_path.is_file():
            raise FileNotFoundError(f"{directory} is not a model bundle: {SPEC_FILE} is missing")
        spec = json.loads(spec_path.read_text())
        return cls(
            arch=spec["arch"],
            class_names=spec["class_names"],
            preprocess=PreprocessSpec.from_dict(spec["preprocess"]),
            state_dict=load_file(str(directory / WEIGHTS_FILE)),
            history=spec.get("history", []),
            info=spec.get("info", {}),
            structure=spec.get("structure", {}),
        )


def set_serving_model(directory: str | Path, file_name: str) -> None:
    """Record in the bundle's spec which ONNX file the service loads (the export's INT8-or-fp32 choice)."""
    directory = Path(directory)
    if not (directory / file_name).is_file():
        raise FileNotFoundError(f"cannot serve {file_name}: it is not in the bundle {directory}")
    spec_path = directory / SPEC_FILE
    spec = json.loads(spec_path.read_text())
    spec["serving"] = {"model": file_name}
    spec_path.write_text(json.dumps(spec, indent=2, default=str))


def serving_model(directory: str | Path) -> str:
    """The ONNX file a bundle is served from: the recorded choice, else the fp32 model.onnx."""
    spec_path = Path(directory) / SPEC_FILE
    spec = json.loads(spec_path.read_text()) if spec_path.is_file() else {}
    return spec.get("serving", {}).get("model", ONNX_FILE)
