"""Knowledge distillation: train a small student to match a trained teacher's softened outputs as
well as the labels (Hinton et al. 2015), with the same training loop as any other model.

loss = alpha * T^2 * KL(softmax(teacher / T) || softmax(student / T)) + (1 - alpha) * CE(student, labels)

The T^2 keeps the soft term's gradients on the scale of the hard term's as T changes. The teacher
sees exactly the batch the student sees: the loop hands the loss its augmented (and mixed) input,
re-normalised here from the student's mean/std to the teacher's. A teacher forward per batch costs
more than caching its logits once, but cached logits would be of un-augmented images and teach the
student the wrong answer for every crop and flip.

The suggested students (`mobilenetv3_small_050`, the default, and `mobilenetv3_small_100`) start
from random weights: no ImageNet weights for them ship offline (give `weights_file` for your own). The same student is
also trained alone (same config and seed, no teacher) so the report shows what the teacher added.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from imgclf.augment.policy import AugmentPolicy
from imgclf.compress.figures import ModelFigures, compression_data, figures_table, measure_models
from imgclf.data.decoded import DecodedSplits
from imgclf.data.manifest import DatasetManifest
from imgclf.models.factory import normalisation
from imgclf.models.trained import TrainedModel
from imgclf.preprocess import PreprocessSpec
from imgclf.train.config import TrainConfig
from imgclf.train.loop import fit


class DistillConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    student: str = Field("mobilenetv3_small_050", description="timm name or torchvision/<name>")
    pretrained: bool = Field(False, description="ImageNet weights for the student (none ship offline for the defaults)")
    weights_file: str | None = None
    temperature: float = Field(4.0, gt=0)
    alpha: float = Field(0.7, ge=0, le=1, description="weight of the soft (teacher) term; 0 = plain training")
    epochs: int = Field(8, ge=1)
    lr: float = Field(2e-3, gt=0)
    batch_size: int = Field(64, ge=1)
    seed: int = 42
    num_workers: int | None = Field(None, ge=0)
    baseline: bool = Field(True, description="also train the student alone, for the comparison")
    latency_repeats: int = Field(50, ge=1, description="batch-1 timed calls per model and round")
    latency_rounds: int = Field(3, ge=1, description="alternating timing rounds; the report keeps the medians")


def kd_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    target: torch.Tensor,
    temperature: float,
    alpha: float,
    hard_loss: nn.Module | None = None,
) -> torch.Tensor:
    """alpha * T^2 * KL(teacher_T || student_T) + (1 - alpha) * hard_loss(student, target), batch mean.
    `hard_loss` defaults to cross-entropy; targets may be class indices or (mixed) probabilities."""
    hard = (hard_loss or F.cross_entropy)(student_logits, target)
    if alpha == 0:
        return hard
    soft = F.kl_div(
        F.log_softmax(student_logits / temperature, dim=1),
        F.log_softmax(teacher_logits / temperature, dim=1),
        reduction="batchmean",
        log_target=True,
    )
    return alpha * temperature**2 * soft + (1 - alpha) * hard


class DistillationLoss:
    """The loop's `loss_fn`: runs the frozen teacher on the student's input batch, then `kd_loss`."""

    def __init__(
        self,
        teacher: nn.Module,
        teacher_spec: PreprocessSpec,
        student_spec: PreprocessSpec,
        temperature: float,
        alpha: float,
        hard_loss: nn.Module,
    ) -> None:
        if teacher_spec.channel_order != student_spec.channel_order:
            raise ValueError(
                f"teacher ({teacher_spec.channel_order}) and student ({student_spec.channel_order}) "
                "channel orders differ"
            )
        self.teacher = teacher.eval()
        for p in self.teacher.parameters():
            p.requires_grad_(False)
        # student input x = (u - m_s) / s_s for pixels u in [0, 1]; the teacher wants (u - m_t) / s_t
        m_s, s_s = torch.tensor(student_spec.mean), torch.tensor(student_spec.std)
        m_t, s_t = torch.tensor(teacher_spec.mean), torch.tensor(teacher_spec.std)
        self.scale = (s_s / s_t).view(1, 3, 1, 1)
        self.shift = ((m_s - m_t) / s_t).view(1, 3, 1, 1)
        self.temperature, self.alpha, self.hard_loss = temperature, alpha, hard_loss

    def teacher_input(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale.to(x.device) + self.shift.to(x.device)

    def __call__(self, logits: torch.Tensor, target: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        if next(self.teacher.parameters()).device != x.device:
            self.teacher.to(x.device)
        with torch.no_grad():
            teacher_logits = self.teacher(self.teacher_input(x)).float()
        return kd_loss(logits, teacher_logits, target, self.temperature, self.alpha, self.hard_loss)


@dataclass
class DistillReport:
    teacher_arch: str
    student_arch: str
    temperature: float
    alpha: float
    epochs: int
    teacher: ModelFigures
    student_distilled: ModelFigures
    student_alone: ModelFigures | None  # same config and seed, no teacher (None: not trained)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def table(self) -> str:
        rows = [
            (f"{self.teacher_arch} (teacher)", self.teacher),
            (f"{self.student_arch} distilled", self.student_distilled),
        ]
        if self.student_alone is not None:
            rows.append((f"{self.student_arch} alone", self.student_alone))
        text = figures_table(rows)
        if self.student_alone is not None:
            gain = self.student_distilled.test_accuracy - self.student_alone.test_accuracy
            text += f"\ndistillation vs the student alone (same config and seed): {gain:+.4f} test accuracy"
        return text


def student_config(teacher: TrainedModel, config: DistillConfig) -> TrainConfig:
    """Training settings of the student: the loop's defaults, at the teacher's input size (one decoded
    cache feeds both networks)."""
    return TrainConfig(
        arch=config.student,
        pretrained=config.pretrained,
        weights_file=config.weights_file,
        image_size=teacher.preprocess.image_size,
        resize_mode=teacher.preprocess.resize_mode,
        epochs=config.epochs,
        lr=config.lr,
        batch_size=config.batch_size,
        seed=config.seed,
        num_workers=config.num_workers,
    )


def train_student(
    teacher: TrainedModel | None,
    data: DecodedSplits,
    train_config: TrainConfig,
    config: DistillConfig,
    policy: AugmentPolicy,
) -> TrainedModel:
    """The student trained with the teacher's soft targets, or alone when `teacher` is None."""
    loss_fn = None
    if teacher is not None:
        mean, std = normalisation(train_config.arch, train_config.pretrained, train_config.weights_file)
        student_spec = PreprocessSpec(
            image_size=train_config.image_size, resize_mode=train_config.resize_mode, mean=mean, std=std
        )
        loss_fn = DistillationLoss(
            teacher.build(),
            teacher.preprocess,
            student_spec,
            config.temperature,
            config.alpha,
            nn.CrossEntropyLoss(label_smoothing=train_config.label_smoothing),  # the loop's own hard loss
        )
    student = fit(data, train_config, policy, loss_fn=loss_fn)
    if teacher is not None:
        student.info["distilled_from"] = {
            "arch": teacher.arch,
            "temperature": config.temperature,
            "alpha": config.alpha,
        }
    return student


def distill(
    teacher: TrainedModel, split: DatasetManifest, config: DistillConfig, policy: AugmentPolicy = AugmentPolicy()
) -> tuple[TrainedModel, TrainedModel | None, DistillReport]:
    """Distil `teacher` into `config.student` on the split's train rows (selecting on val), train the
    same student alone unless `config.baseline` is off, and measure all of them on the test rows.
    Returns (distilled student, student alone or None, report)."""
    data = compression_data(split, teacher)
    train_config = student_config(teacher, config)
    distilled = train_student(teacher, data, train_config, config, policy)
    alone = train_student(None, data, train_config, config, policy) if config.baseline else None

    bundles = [teacher, distilled] + ([alone] if alone is not None else [])
    figures = measure_models(
        [(b.build(), b.preprocess) for b in bundles],
        data.test.images,
        data.test.targets,
        config.latency_repeats,
        config.latency_rounds,
    )
    report = DistillReport(
        teacher_arch=teacher.arch,
        student_arch=config.student,
        temperature=config.temperature,
        alpha=config.alpha,
        epochs=config.epochs,
        teacher=figures[0],
        student_distilled=figures[1],
        student_alone=figures[2] if alone is not None else None,
    )
    distilled.info["distill_report"] = report.to_dict()
    return distilled, alone, report
