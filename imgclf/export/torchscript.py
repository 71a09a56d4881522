"""TorchScript export, for LibTorch (C++) and mobile consumers that load `.pt` without Python.

The file carries the class names and the PreprocessSpec as extra files, like the ONNX metadata, so
it is usable alone. torch 2.14 marks `torch.jit` deprecated in favour of `torch.export`, but a traced
module is still what LibTorch loads; the deprecation warnings of these calls are silenced here.
"""

from __future__ import annotations

import contextlib
import io
import json
import warnings
from pathlib import Path

from imgclf.models.trained import TrainedModel
from imgclf.preprocess import PreprocessSpec

CLASS_NAMES_FILE, PREPROCESS_FILE, ARCH_FILE = "imgclf.class_names", "imgclf.preprocess", "imgclf.arch"


@contextlib.contextmanager
def _quiet_jit():
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*torch\.jit\.\w+` is deprecated", category=FutureWarning)
        yield


def export_torchscript(trained: TrainedModel) -> bytes:
    """A traced module (batch size free) with class names and PreprocessSpec in `_extra_files`."""
    import torch

    model = trained.build()
    size = trained.preprocess.image_size
    extra = {
        CLASS_NAMES_FILE: json.dumps(trained.class_names),
        PREPROCESS_FILE: trained.preprocess.to_json(),
        ARCH_FILE: trained.arch,
    }
    buffer = io.BytesIO()
    with _quiet_jit(), torch.no_grad():
        traced = torch.jit.trace(model, torch.zeros(2, 3, size, size))
        torch.jit.save(traced, buffer, _extra_files=extra)
    return buffer.getvalue()


def load_torchscript(data: bytes | str | Path):
    """(module in eval mode, class names, PreprocessSpec) from `export_torchscript`'s bytes or file."""
    import torch

    extra = {CLASS_NAMES_FILE: "", PREPROCESS_FILE: ""}
    source = io.BytesIO(data) if isinstance(data, bytes) else str(data)
    with _quiet_jit():
        module = torch.jit.load(source, map_location="cpu", _extra_files=extra)
    if not extra[CLASS_NAMES_FILE]:
        what = data if not isinstance(data, bytes) else "the TorchScript bytes"
        raise ValueError(f"{what} carry no {CLASS_NAMES_FILE}: not written by export_torchscript")
    return (
        module.eval(),
        json.loads(extra[CLASS_NAMES_FILE]),
        PreprocessSpec.from_dict(json.loads(extra[PREPROCESS_FILE])),
    )
