"""Model compression: structured pruning (smaller network, rebuilt exactly from its bundle, fine-tuned),
the distillation loss against a hand computation, distillation through the training loop, and the
`imgclf prune` / `imgclf distill` commands end to end on small digits."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from imgclf.augment.policy import AugmentPolicy
from imgclf.bundle import SPEC_FILE, WEIGHTS_FILE
from imgclf.cli import main
from imgclf.compress.distill import DistillationLoss, DistillConfig, distill, kd_loss, student_config, train_student
from imgclf.compress.figures import accuracy, compression_data, count_macs, count_params
from imgclf.compress.prune import PruneConfig, prune_and_finetune, prune_model
from imgclf.data.ingest import ingest_folder
from imgclf.data.split import SplitConfig, stratified_split
from imgclf.inference import predict_logits_and_features
from imgclf.models.factory import create
from imgclf.models.trained import TrainedModel
from imgclf.preprocess import PreprocessSpec
from imgclf.train.config import TrainConfig
from imgclf.train.loop import fit_manifest

SEED = 42  # the teacher's training seed: `imgclf prune/distill` split the data with it, as `imgclf train` does
FAST = {"num_workers": 0, "latency_repeats": 3, "latency_rounds": 1}


@pytest.fixture(scope="module")
def split(digits_dir):
    return stratified_split(ingest_folder(digits_dir), SplitConfig(seed=SEED))


@pytest.fixture(scope="module")
def teacher(split):
    """resnet10t from scratch, 32 px, 3 epochs on 300 digits (test accuracy about 0.97)."""
    config = TrainConfig(
        arch="resnet10t", pretrained=False, image_size=32, batch_size=16, lr=3e-3, epochs=3, num_workers=0, seed=SEED
    )
    return fit_manifest(split, config)


def _random_bundle(arch: str, size: int = 32) -> TrainedModel:
    torch.manual_seed(0)
    model, mean, std = create(arch, 10)
    return TrainedModel(arch, [str(i) for i in range(10)], PreprocessSpec(size, mean=mean, std=std), model.state_dict())


def test_count_macs_and_params_match_a_hand_count():
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.Conv2d(8, 8, 3, padding=1, groups=8),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8, 10),
    )
    # 8x8 outputs: 64 positions x 8 channels x (3 x 3 x 3) + 64 x 8 x (1 x 3 x 3), then 10 x 8
    assert count_macs(model, 8) == 64 * 8 * 27 + 64 * 8 * 9 + 80
    assert count_params(model) == (8 * 27 + 8) + (8 * 9 + 8) + (80 + 10)


@pytest.mark.parametrize("arch", ["resnet10t", "mobilenetv3_small_050"])
def test_pruned_network_is_smaller_and_its_bundle_rebuilds_it_exactly(arch, tmp_path):
    original = _random_bundle(arch)
    pruned = prune_model(original, PruneConfig(amount=0.4))
    before, after = original.build(), pruned.build()
    assert count_params(after) < 0.6 * count_params(before)
    assert count_macs(after, 32) < 0.6 * count_macs(before, 32)
    convs = {n: m for n, m in before.named_modules() if isinstance(m, nn.Conv2d)}
    smaller = [
        n for n, m in after.named_modules() if isinstance(m, nn.Conv2d) and m.out_channels < convs[n].out_channels
    ]
    assert len(smaller) > len(convs) // 2, "channels were not removed from most convs"
    assert after.get_classifier().out_features == 10

    pruned.save(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == [SPEC_FILE, WEIGHTS_FILE]  # plain files, no pickle
    loaded = TrainedModel.load(tmp_path)
    assert loaded.structure == json.loads(json.dumps(pruned.structure))
    x = torch.randn(4, 3, 32, 32)
    with torch.inference_mode():
        assert torch.equal(loaded.build()(x), after(x))


def test_bundle_without_structure_still_loads(tmp_path):
    """Bundles written before `structure` existed load as the plain architecture."""
    original = _random_bundle("resnet10t")
    original.save(tmp_path)
    spec = json.loads((tmp_path / SPEC_FILE).read_text())
    del spec["structure"]
    (tmp_path / SPEC_FILE).write_text(json.dumps(spec))
    x = torch.randn(2, 3, 32, 32)
    with torch.inference_mode():
        assert torch.equal(TrainedModel.load(tmp_path).build()(x), original.build()(x))


def test_ignored_layers_keep_their_channels():
    original = _random_bundle("resnet10t")
    pruned = prune_model(original, PruneConfig(amount=0.5, ignore=["layer1.0.conv1"])).build()
    assert pruned.layer1[0].conv1.out_channels == original.build().layer1[0].conv1.out_channels
    assert pruned.layer2[0].conv1.out_channels < original.build().layer2[0].conv1.out_channels
    with pytest.raises(ValueError, match=r"'layer9\.\*' matches no module of resnet10t"):
        prune_model(original, PruneConfig(ignore=["layer9.*"]))
    with pytest.raises(ValueError, match="extra"):
        PruneConfig(amout=0.3)


def test_prune_and_finetune_on_digits(teacher, split):
    pruned, report = prune_and_finetune(teacher, split, PruneConfig(amount=0.3, epochs=2, **FAST))
    assert report.after.params < 0.7 * report.before.params and report.after.macs < 0.7 * report.before.macs
    assert report.data_matches_training is True
    assert report.before.test_accuracy > 0.8, "the teacher did not learn: the test cannot judge pruning"
    assert report.after.test_accuracy > 0.7  # 10 classes: chance is 0.1 (about 0.95 when written)
    assert pruned.structure and pruned.info["pruned"][0]["amount"] == 0.3 and len(pruned.history) == 2
    assert count_params(pruned.build()) == report.after.params
    assert "pruned 30%, fine-tuned 2 ep" in report.table()
    assert pruned.projection is not None and pruned.projection.features < teacher.projection.features


def test_pruning_without_finetuning_fits_a_projection_on_the_pruned_features(teacher, split):
    pruned, _ = prune_and_finetune(teacher, split, PruneConfig(amount=0.3, epochs=0, **FAST))
    images = compression_data(split, teacher).train.images[:8]
    _, pooled = predict_logits_and_features(pruned.build(), images, pruned.preprocess)
    assert pruned.projection is not None and pruned.projection.features == pooled.shape[1] < 512
    assert pruned.projection.apply(pooled).shape == (8, pruned.projection.dim)


def test_batchnorm_recalibration_rescues_the_pruned_network(teacher, split):
    """Pruning leaves later BatchNorm statistics stale: this small net falls to about chance until
    they are re-estimated on train images."""
    data = compression_data(split, teacher)
    config = PruneConfig(amount=0.1)
    stale = accuracy(prune_model(teacher, config).build(), data.test.images, data.test.targets, teacher.preprocess)
    recalibrated = accuracy(
        prune_model(teacher, config, data.train.images).build(), data.test.images, data.test.targets, teacher.preprocess
    )
    assert recalibrated > 0.8 and recalibrated > stale + 0.3


def test_kd_loss_matches_a_hand_computation():
    s = torch.tensor([[1.0, 2.0, 0.5], [0.1, -1.0, 2.0]])
    t = torch.tensor([[2.0, 1.0, 0.0], [0.0, 0.0, 3.0]])
    y = torch.tensor([1, 2])
    T, alpha = 2.0, 0.7

    def softmax(z):
        e = np.exp(z - z.max(1, keepdims=True))
        return e / e.sum(1, keepdims=True)

    sn, tn = s.numpy().astype(np.float64), t.numpy().astype(np.float64)
    ps, pt = softmax(sn / T), softmax(tn / T)
    kl = np.mean(np.sum(pt * (np.log(pt) - np.log(ps)), axis=1))
    ce = np.mean(-np.log(softmax(sn)[np.arange(2), y.numpy()]))
    loss = kd_loss(s, t, y, T, alpha)
    assert float(loss) == pytest.approx(alpha * T**2 * kl + (1 - alpha) * ce, rel=1e-5)

    leaf = s.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(kd_loss(leaf, t, y, T, 1.0), leaf)
    assert grad.numpy() == pytest.approx(T * (ps - pt) / 2, abs=1e-6)  # Hinton: dL/dz = T (p_s - p_t) / batch

    assert float(kd_loss(s, t, y, T, 0.0)) == pytest.approx(float(F.cross_entropy(s, y)), rel=1e-6)
    mixed = torch.tensor([[0.0, 0.6, 0.4], [0.0, 0.0, 1.0]])  # mixup targets are probabilities
    assert float(kd_loss(s, t, mixed, T, 0.0)) == pytest.approx(float(F.cross_entropy(s, mixed)), rel=1e-6)


def test_teacher_sees_the_students_batch_in_its_own_normalisation():
    seen = []

    class Recorder(nn.Module):
        def __init__(self):
            super().__init__()
            self.scale = nn.Parameter(torch.ones(1))

        def forward(self, x):
            seen.append(x)
            return x.mean((2, 3)) * self.scale

    student_spec = PreprocessSpec(16, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
    teacher_spec = PreprocessSpec(16, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    loss = DistillationLoss(Recorder(), teacher_spec, student_spec, 4.0, 0.5, nn.CrossEntropyLoss())
    pixels = torch.randint(0, 256, (2, 3, 16, 16), dtype=torch.uint8)
    loss(torch.zeros(2, 3), torch.tensor([0, 1]), student_spec.normalize(pixels))
    assert torch.allclose(seen[0], teacher_spec.normalize(pixels), atol=1e-5)


def test_distillation_trains_a_smaller_student_and_at_alpha_zero_is_training_alone(teacher, split):
    config = DistillConfig(epochs=1, alpha=0.7, batch_size=32, **FAST)
    student, alone, report = distill(teacher, split, config)
    assert any(not torch.equal(student.state_dict[k], alone.state_dict[k]) for k in alone.state_dict), (
        "the teacher changed nothing"
    )
    assert (
        report.student_distilled.params < report.teacher.params / 4
        and report.student_alone.params == report.student_distilled.params
    )
    assert student.info["distilled_from"] == {"arch": "resnet10t", "temperature": 4.0, "alpha": 0.7}
    # with no teacher term, the loss hook must leave training exactly as it is without one
    data = compression_data(split, teacher)
    plain = config.model_copy(update={"alpha": 0.0})
    no_soft = train_student(teacher, data, student_config(teacher, plain), plain, AugmentPolicy())
    assert all(torch.equal(no_soft.state_dict[k], alone.state_dict[k]) for k in alone.state_dict)


def test_prune_and_distill_commands(teacher, digits_dir, tmp_path, capsys):
    teacher.save(tmp_path / "teacher")
    (tmp_path / "prune.yaml").write_text("latency_rounds: 1\namount: 0.9\n")  # --amount overrides the file
    (tmp_path / "distill.yaml").write_text("latency_rounds: 1\n")
    assert (
        main(
            [
                "prune",
                str(tmp_path / "teacher"),
                "--data",
                str(digits_dir),
                "--out",
                str(tmp_path / "pruned"),
                "--amount",
                "0.3",
                "--epochs",
                "1",
                "--workers",
                "0",
                "--latency-repeats",
                "3",
                "--config",
                str(tmp_path / "prune.yaml"),
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert "resnet10t (before)" in printed and "pruned 30%" in printed and "warning" not in printed
    report = json.loads((tmp_path / "pruned" / "prune_report.json").read_text())
    assert report["config"]["amount"] == 0.3 and report["config"]["latency_rounds"] == 1
    assert report["report"]["after"]["params"] < report["report"]["before"]["params"]
    assert count_params(TrainedModel.load(tmp_path / "pruned").build()) == report["report"]["after"]["params"]

    assert (
        main(
            [
                "distill",
                str(tmp_path / "teacher"),
                "--data",
                str(digits_dir),
                "--out",
                str(tmp_path / "student"),
                "--student",
                "mobilenetv3_small_050",
                "--epochs",
                "1",
                "--temperature",
                "4",
                "--alpha",
                "0.7",
                "--batch-size",
                "32",
                "--no-baseline",
                "--workers",
                "0",
                "--latency-repeats",
                "3",
                "--config",
                str(tmp_path / "distill.yaml"),
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert "resnet10t (teacher)" in printed and "mobilenetv3_small_050 distilled" in printed
    report = json.loads((tmp_path / "student" / "distill_report.json").read_text())
    assert report["report"]["student_alone"] is None and report["config"]["alpha"] == 0.7
    student = TrainedModel.load(tmp_path / "student")
    assert (
        student.arch == "mobilenetv3_small_050"
        and count_params(student.build()) == report["report"]["student_distilled"]["params"]
    )
