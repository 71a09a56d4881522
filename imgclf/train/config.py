"""Training configuration: one typed model shared by the `train` step and `imgclf train`."""

from __future__ import annotations

import hashlib
import json
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class TrainConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # model and weights
    arch: str = Field("tf_efficientnet_lite0", description="timm name, or torchvision/<name>")
    pretrained: bool = True
    weights_file: str | None = Field(None, description="local .safetensors/state-dict ImageNet weights")
    image_size: Annotated[int, Field(ge=8)] | Literal["auto"] = Field(
        "auto", description="px; auto: from the source resolution (imgclf.train.budget)"
    )
    resize_mode: Literal["squash", "center_crop", "letterbox"] = "squash"
    drop_rate: float = Field(0.2, ge=0, lt=1, description="dropout before the new head")

    # transfer learning
    transfer: Literal["full", "linear_probe", "freeze_then_unfreeze"] = "full"
    freeze_epochs: int = Field(1, ge=0, description="freeze_then_unfreeze: epochs with the backbone frozen")
    backbone_lr_scale: float = Field(1.0, gt=0, le=1, description="backbone LR = lr * this (discriminative LRs)")

    # optimisation
    epochs: Annotated[int, Field(ge=1)] | Literal["auto"] = Field(
        "auto", description="auto: by the number of training images (imgclf.train.budget)"
    )
    max_steps_per_epoch: int | None = Field(
        None,
        ge=1,
        description="cap on optimizer steps per epoch, each epoch a fresh random subset (huge data, smoke runs)",
    )
    batch_size: int = Field(64, ge=1)
    optimizer: Literal["adamw", "sgd"] = "adamw"
    lr: Annotated[float, Field(gt=0)] | Literal["find"] = Field(
        2e-3, description="find: the LR finder's suggestion on the train split (imgclf.train.lr_finder)"
    )
    weight_decay: float = Field(0.01, ge=0, description="not applied to norms and biases")
    momentum: float = Field(0.9, ge=0, lt=1, description="SGD (Nesterov)")
    schedule: Literal["cosine", "step"] = "cosine"
    step_epochs: int = Field(3, ge=1, description="step schedule: decay every N epochs")
    step_gamma: float = Field(0.1, gt=0, le=1)
    warmup_epochs: float = Field(0.5, ge=0)
    label_smoothing: float = Field(0.1, ge=0, lt=1, description="single-label only")
    grad_clip_norm: float | None = Field(None, gt=0)
    accumulate_steps: int = Field(1, ge=1, description="gradient accumulation (effective batch = batch_size * this)")
    ema_decay: float | None = Field(None, gt=0, lt=1, description="keep an EMA of the weights; evaluate and ship it")

    # loop control
    early_stopping_patience: int | None = Field(
        5, ge=1, description="epochs without val improvement before stopping; null: never stop early"
    )
    seed: int = 42

    # speed
    channels_last: bool = Field(
        True, description="faster than NCHW for the conv nets trained here (bench/train_throughput.py)"
    )
    amp: Literal["auto", "bf16", "off"] = Field(
        "auto", description="auto: bf16 autocast on GPU only (slower on this CPU)"
    )
    compile: bool = Field(False, description="torch.compile the model")
    threads: int | None = Field(None, ge=1, description="torch intra-op threads; default: all cores")
    num_workers: int | None = Field(None, ge=0, description="augmentation worker processes; default: 2")

    @model_validator(mode="after")
    def _check(self) -> TrainConfig:
        fixed_epochs = self.epochs != "auto"
        if self.transfer == "freeze_then_unfreeze" and fixed_epochs and self.freeze_epochs >= self.epochs:
            raise ValueError(f"freeze_epochs ({self.freeze_epochs}) must be smaller than epochs ({self.epochs})")
        return self

    def resume_key(self) -> str:
        """Settings that must match for a checkpoint to be resumed (everything but speed knobs and the
        number of epochs, which may be raised to train longer)."""
        keep = self.model_dump(
            exclude={"threads", "num_workers", "compile", "epochs", "early_stopping_patience", "max_steps_per_epoch"}
        )
        return hashlib.sha256(json.dumps(keep, sort_keys=True).encode()).hexdigest()[:16]


class DistributedConfig(BaseModel):
    """How many data-parallel processes the pipeline's `train` step starts on this machine (torchrun
    from inside the step, `imgclf.train.launch`). Across machines: deploy/k8s/training (docs)."""

    model_config = ConfigDict(extra="forbid")

    nproc_per_node: Annotated[int, Field(ge=1)] | Literal["auto"] = Field(
        1, description="1: one process (no torchrun); auto: one per visible GPU, 1 without CUDA"
    )

    def processes(self) -> int:
        """The number of processes to start: `nproc_per_node`, with "auto" decided on this machine."""
        if self.nproc_per_node != "auto":
            return self.nproc_per_node
        import torch

        return max(1, torch.cuda.device_count()) if torch.cuda.is_available() else 1
