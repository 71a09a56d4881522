"""Per-epoch checkpoints that survive a SIGKILL at any moment.

`last.pt` holds everything needed to continue (`imgclf.train.state.TrainState.state_dict`: weights,
optimiser, scheduler, EMA, RNG, epoch, the hooks' state, history); `best.safetensors` the best
weights so far. Both are written to a
temporary file and renamed, so a kill leaves the previous complete checkpoint. Loading uses
`torch.load(weights_only=True)`: tensors and plain containers only, never arbitrary pickled objects.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import torch

LAST = "last.pt"
BEST = "best.safetensors"


def _atomic(path: Path, write) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save(directory: str | Path, state: dict[str, Any], best_weights: dict[str, torch.Tensor] | None = None) -> None:
    """Write the best weights first, then `last.pt`: `last.pt` never points at a best that is missing."""
    directory = Path(directory)
    if best_weights is not None:
        from safetensors.torch import save_file

        tensors = {k: v.detach().cpu().contiguous() for k, v in best_weights.items()}
        _atomic(directory / BEST, lambda tmp: save_file(tensors, tmp))
    _atomic(directory / LAST, lambda tmp: torch.save(state, tmp))


def load(directory: str | Path) -> tuple[dict[str, Any], dict[str, torch.Tensor] | None] | None:
    """(state, best weights) of the last complete checkpoint, or None when there is none."""
    directory = Path(directory)
    if not (directory / LAST).is_file():
        return None
    state = torch.load(directory / LAST, map_location="cpu", weights_only=True)
    best = None
    if (directory / BEST).is_file():
        from safetensors.torch import load_file

        best = load_file(str(directory / BEST))
    return state, best
