"""A network's structure as plain data: the attributes that differ from the architecture as built (a
pruned conv's channel counts, a norm's num_features, ...). With the saved weights' shapes this rebuilds
a pruned network from safetensors + JSON, without pickling it or storing code."""

from __future__ import annotations

import itertools
from typing import Any

import torch
from torch import nn


def _shape_value(value: Any) -> bool:
    """int or tuple/list of ints: the kind of attribute a channel count lives in (bools are flags)."""
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return True
    return (
        isinstance(value, (tuple, list))
        and bool(value)
        and all(isinstance(v, int) and not isinstance(v, bool) for v in value)
    )


def structure_of(model: nn.Module, reference: nn.Module) -> dict[str, dict[str, Any]]:
    """Per module, the integer attributes of `model` that differ from `reference` (the same
    architecture as built): what `apply_structure` needs, JSON-ready."""
    ref = dict(reference.named_modules())
    structure: dict[str, dict[str, Any]] = {}
    for name, module in model.named_modules():
        if name not in ref:
            raise ValueError(
                f"module {name!r} ({type(module).__name__}) is not in the architecture as built; cannot describe it"
            )
        diff = {
            attr: list(value) if isinstance(value, tuple) else value
            for attr, value in vars(module).items()
            if not attr.startswith("_") and _shape_value(value) and getattr(ref[name], attr, None) != value
        }
        if diff:
            structure[name] = diff
    return structure


def apply_structure(model: nn.Module, structure: dict[str, dict[str, Any]], state_dict: dict[str, Any]) -> None:
    """Turn `model` (the architecture as built) into the pruned network: set the recorded attributes,
    and give every parameter and buffer the shape of its saved tensor (values come from loading)."""
    modules = dict(model.named_modules())
    for name, attrs in structure.items():
        if name not in modules:
            raise ValueError(
                f"the bundle's structure names module {name!r}, which {type(model).__name__} does not have"
            )
        module = modules[name]
        for attr, value in attrs.items():
            if not hasattr(module, attr):
                raise ValueError(
                    f"the bundle's structure sets {name}.{attr}, which {type(module).__name__} does not have"
                )
            setattr(module, attr, tuple(value) if isinstance(getattr(module, attr), tuple) else value)
    for key, tensor in itertools.chain(model.named_parameters(), model.named_buffers()):
        saved = state_dict.get(key)
        if saved is None or tuple(saved.shape) == tuple(tensor.shape):
            continue
        owner_name, _, attr = key.rpartition(".")
        owner = model.get_submodule(owner_name)
        empty = torch.empty(tuple(saved.shape), dtype=tensor.dtype)
        setattr(
            owner,
            attr,
            nn.Parameter(empty, requires_grad=tensor.requires_grad) if isinstance(tensor, nn.Parameter) else empty,
        )
