"""Pooled (pre-logits) features beside the logits, from one forward pass, for every architecture the
factory builds: timm models (pruned or not, distilled ViTs included) through `forward_features` and
`forward_head(pre_logits=True)`, torchvision models through the input of their classifier (the last
nn.Linear, which the factory replaced). `WithEmbedding` is what the ONNX export traces."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn


def _classifier(model: nn.Module) -> nn.Linear:
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ValueError(f"{type(model).__name__} has no nn.Linear classifier whose input is the pooled features")
    return linears[-1]


def logits_and_features(model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(logits (N, C), pooled features (N, F)) of a batch, in one pass through the backbone."""
    if hasattr(model, "forward_features") and hasattr(model, "forward_head"):  # timm
        features = model.forward_features(x)
        return model.forward_head(features), model.forward_head(features, pre_logits=True).flatten(1)
    captured: list[torch.Tensor] = []
    handle = _classifier(model).register_forward_pre_hook(lambda module, args: captured.append(args[0]))
    try:
        logits = model(x)
    finally:
        handle.remove()
    return logits, captured[-1].flatten(1)


class WithEmbedding(nn.Module):
    """`model` returning (logits, embedding): embedding = (pooled - mean) @ components.T, float32."""

    def __init__(self, model: nn.Module, mean: np.ndarray, components: np.ndarray) -> None:
        super().__init__()
        self.model = model
        self.register_buffer("mean", torch.as_tensor(np.asarray(mean, dtype=np.float32)))
        self.register_buffer(
            "components_t", torch.as_tensor(np.ascontiguousarray(np.asarray(components, dtype=np.float32).T))
        )

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits, pooled = logits_and_features(self.model, x)
        return logits, (pooled - self.mean) @ self.components_t
