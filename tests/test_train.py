"""The training loop: transfer modes, multi-label, optimisers, EMA, determinism, resume after SIGKILL,
and data-parallel training with torchrun (2 processes, gloo on CPU)."""

from __future__ import annotations

import functools
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from conftest import ROOT
from imgclf.augment.policy import AugmentPolicy
from imgclf.data.ingest import ingest_folder
from imgclf.data.split import SplitConfig, stratified_split
from imgclf.logs import Progress
from imgclf.models.factory import create, head_parameters
from imgclf.models.trained import TrainedModel
from imgclf.train import epoch as epoch_module
from imgclf.train.config import TrainConfig
from imgclf.train.hooks import EarlyStopping
from imgclf.train.loop import fit_manifest
from imgclf.train.optim import build_optimizer, build_scheduler
from imgclf.train.state import TrainState

TINY = {
    "arch": "resnet10t", "pretrained": False, "image_size": 16, "batch_size": 32, "lr": 3e-3,
    "num_workers": 0, "epochs": 2,
}  # fmt: skip


@pytest.fixture(scope="module")
def split_digits(digits_dir):
    return stratified_split(ingest_folder(digits_dir), SplitConfig(seed=1))


def _backbone(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    head = {id(p) for p in head_parameters(model)}
    return {name: p.detach().clone() for name, p in model.named_parameters() if id(p) not in head}


def _initial_backbone(config: TrainConfig, num_classes: int) -> dict[str, torch.Tensor]:
    """The weights fit() starts from: it seeds, then builds the model first."""
    torch.manual_seed(config.seed)
    model, _, _ = create(
        config.arch, num_classes, pretrained=False, drop_rate=config.drop_rate, image_size=config.image_size
    )
    return _backbone(model)


def test_same_seed_same_metrics(split_digits):
    a = fit_manifest(split_digits, TrainConfig(**TINY))
    b = fit_manifest(split_digits, TrainConfig(**TINY))
    strip = lambda h: [{k: v for k, v in e.items() if k != "train_images_per_s"} for e in h]  # noqa: E731
    assert strip(a.history) == strip(b.history)
    assert all(torch.equal(a.state_dict[k], b.state_dict[k]) for k in a.state_dict)


def test_linear_probe_trains_only_the_head(split_digits):
    config = TrainConfig(**{**TINY, "transfer": "linear_probe"})
    probe = fit_manifest(split_digits, config)
    before, after = _initial_backbone(config, 10), _backbone(probe.build())
    assert all(torch.equal(before[k], after[k]) for k in before), "the frozen backbone changed"
    bn = [k for k in probe.state_dict if k.endswith("running_mean") and not k.startswith("fc")]
    torch.manual_seed(config.seed)
    fresh, _, _ = create(config.arch, 10, pretrained=False, drop_rate=config.drop_rate, image_size=16)
    assert all(torch.equal(probe.state_dict[k], fresh.state_dict()[k]) for k in bn), "frozen BatchNorm statistics moved"
    assert probe.history[-1]["train_loss"] < probe.history[0]["train_loss"]


def test_freeze_then_unfreeze_trains_the_backbone_later(split_digits):
    config = TrainConfig(
        **{**TINY, "epochs": 2, "transfer": "freeze_then_unfreeze", "freeze_epochs": 1, "backbone_lr_scale": 0.1}
    )
    trained = fit_manifest(split_digits, config)
    before, after = _initial_backbone(config, 10), _backbone(trained.build())
    assert any(not torch.equal(before[k], after[k]) for k in before), "the backbone never unfroze"
    with pytest.raises(ValueError, match="freeze_epochs"):
        TrainConfig(**{**TINY, "transfer": "freeze_then_unfreeze", "freeze_epochs": 2})


def test_multi_label_uses_bce_and_map(split_digits):
    records = split_digits.records.copy()
    records["label"] = records["label"].map(lambda d: f"{d}|{'odd' if int(d) % 2 else 'even'}")
    manifest = type(split_digits)(split_digits.root, records)
    trained = fit_manifest(manifest, TrainConfig(**{**TINY, "epochs": 3}))
    assert trained.info["multi_label"] and "val_map" in trained.history[-1]
    assert trained.history[-1]["train_loss"] < trained.history[0]["train_loss"]
    assert trained.class_names[-2:] == ["even", "odd"]


def test_sgd_step_schedule_clipping_accumulation_and_mixup(split_digits):
    config = TrainConfig(
        **{
            **TINY,
            "epochs": 3,
            "optimizer": "sgd",
            "lr": 0.05,
            "schedule": "step",
            "step_epochs": 2,
            "grad_clip_norm": 1.0,
            "accumulate_steps": 2,
        }
    )
    trained = fit_manifest(split_digits, config, AugmentPolicy(mixup_alpha=0.2, cutmix_alpha=1.0, rotation_degrees=5))
    lrs = [h["lr"] for h in trained.history]
    assert lrs == pytest.approx([0.05, 0.005, 0.005])  # lr after each epoch: decayed once 2 epochs are done
    assert trained.history[-1]["train_loss"] < trained.history[0]["train_loss"]


def test_ema_weights_are_the_ones_shipped(split_digits):
    plain = fit_manifest(split_digits, TrainConfig(**TINY))
    ema = fit_manifest(split_digits, TrainConfig(**{**TINY, "ema_decay": 0.5}))
    assert plain.history[0]["train_loss"] == ema.history[0]["train_loss"]  # same training trajectory
    differs = [k for k in plain.state_dict if not torch.equal(plain.state_dict[k], ema.state_dict[k])]
    assert any(k.startswith("fc.") for k in differs), "EMA weights were not the ones returned"


def test_early_stopping(split_digits):
    config = TrainConfig(**{**TINY, "epochs": 6, "lr": 1e-9, "warmup_epochs": 0, "early_stopping_patience": 1})
    trained = fit_manifest(split_digits, config)
    assert trained.info["stopped_early"] and len(trained.history) < 6


def _tiny_state(config: TrainConfig, hooks: list) -> TrainState:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.BatchNorm1d(3))
    optimizer = build_optimizer(model, config)
    return TrainState(model, optimizer, build_scheduler(optimizer, config, 5), config.resume_key(), hooks=hooks)


def test_state_round_trips_through_a_checkpoint_and_refuses_another_config(tmp_path):
    config = TrainConfig(**TINY)
    state, stopper = _tiny_state(config, []), EarlyStopping(3)
    state.hooks.append(stopper)
    for score in (0.5, 0.4):  # epoch 1 improves, epoch 2 does not
        state.model.train()
        state.model(torch.randn(8, 4)).sum().backward()
        state.optimizer.step()
        state.scheduler.step()
        state.end_epoch({"train_loss": 1.0, "val_score": score})
        stopper.on_epoch_end(state, {})
        rng_at_save = torch.get_rng_state()
        state.save(tmp_path)
    assert state.improved is False and stopper.bad_epochs == 1
    torch.rand(10)  # the random state moves on after the checkpoint

    restored, restored_stopper = _tiny_state(config, []), EarlyStopping(3)
    restored.hooks.append(restored_stopper)
    restored.restore(tmp_path)
    assert (restored.epoch, restored.best_epoch, restored.best_score, restored.resumed_after_epoch) == (2, 1, 0.5, 2)
    assert restored.history == state.history and restored_stopper.bad_epochs == 1
    assert all(torch.equal(restored.best_weights[k], state.best_weights[k]) for k in state.best_weights)
    assert all(torch.equal(v, state.model.state_dict()[k]) for k, v in restored.model.state_dict().items())
    assert restored.scheduler.state_dict() == state.scheduler.state_dict()
    assert torch.equal(torch.get_rng_state(), rng_at_save)

    other = _tiny_state(TrainConfig(**{**TINY, "lr": 1e-4}), [])
    with pytest.raises(ValueError, match="different training config"):
        other.restore(tmp_path)
    fresh = _tiny_state(config, [])
    fresh.restore(tmp_path / "empty")  # no checkpoint: nothing to do
    assert fresh.epoch == 0


def test_long_epochs_log_progress_and_short_ones_do_not(split_digits, monkeypatch, caplog):
    """Progress lines come from imgclf.logs.Progress; what counts as long is its `every_s` (set here,
    as timing on a busy machine says nothing)."""
    config = TrainConfig(**{**TINY, "epochs": 1})
    for every_s, expect_progress in ((3600.0, False), (0.0, True)):
        monkeypatch.setattr(epoch_module, "Progress", functools.partial(Progress, every_s=every_s))
        caplog.clear()
        with caplog.at_level("INFO", logger="imgclf.train"):
            fit_manifest(split_digits, config)
        assert "epoch 1/1 train_loss=" in caplog.text  # the epoch's one line, always
        progress_line = re.search(r"epoch 1/1: \d+/\d+ images \(\d+%\), [\d.]+ images/s", caplog.text)
        assert bool(progress_line) == expect_progress, caplog.text


def _train_cmd(data: Path, out: Path, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "imgclf.cli",
        "train",
        str(data),
        "--out",
        str(out),
        "--arch",
        "resnet10t",
        "--no-pretrained",
        "--image-size",
        "16",
        "--batch-size",
        "16",
        "--workers",
        "0",
        *extra,
    ]


@pytest.mark.slow
def test_resume_after_sigkill_matches_an_uninterrupted_run(digits_dir, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    reference = subprocess.run(
        _train_cmd(digits_dir, tmp_path / "ref", "--epochs", "4"), env=env, capture_output=True, text=True, timeout=600
    )
    assert reference.returncode == 0, reference.stderr[-2000:]
    assert re.search(r"\d+(\.\d+)? images/s", reference.stdout)

    out = tmp_path / "killed"
    proc = subprocess.Popen(
        _train_cmd(digits_dir, out, "--epochs", "4"), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 300
    while not (out / "checkpoints" / "last.pt").exists() and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.02)
    assert proc.poll() is None, "the run finished before it could be killed"  # killed early in epoch 2
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (out / "model.json").exists()

    resumed = subprocess.run(
        _train_cmd(digits_dir, out, "--epochs", "4"), env=env, capture_output=True, text=True, timeout=600
    )
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resuming from" in resumed.stderr + resumed.stdout
    a, b = TrainedModel.load(tmp_path / "ref"), TrainedModel.load(out)
    assert b.info["resumed_after_epoch"] >= 1 and len(b.history) == 4
    assert b.history[-1]["val_accuracy"] == pytest.approx(a.history[-1]["val_accuracy"], abs=0.02)
    assert b.info["best_val_score"] == pytest.approx(a.info["best_val_score"], abs=0.02)


@pytest.mark.slow
def test_ddp_two_processes_hold_identical_weights(digits_dir, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    torchrun = str(Path(sys.executable).with_name("torchrun"))
    cmd = [
        torchrun,
        "--standalone",
        "--nproc_per_node",
        "2",
        "-m",
        "imgclf.cli",
        "train",
        *_train_cmd(digits_dir, tmp_path / "ddp", "--epochs", "3")[4:],
    ]
    ddp = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    single = subprocess.run(
        _train_cmd(digits_dir, tmp_path / "single", "--epochs", "3"),
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert single.returncode == 0, single.stderr[-2000:]
    a, b = TrainedModel.load(tmp_path / "ddp"), TrainedModel.load(tmp_path / "single")
    assert a.info["world_size"] == 2 and a.info["rank_weights_max_abs_diff"] == 0.0
    assert a.info["best_val_score"] == pytest.approx(b.info["best_val_score"], abs=0.15)
    assert a.info["best_val_score"] > 0.3
