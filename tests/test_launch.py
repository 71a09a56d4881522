"""Starting data-parallel training from inside a process (imgclf.train.launch): how many processes a
config asks for, resume from another run's checkpoints, and a failing rank reported with its error."""

from __future__ import annotations

import pytest
import torch
from pydantic import ValidationError

from imgclf.augment.policy import AugmentPolicy
from imgclf.data.ingest import ingest_folder
from imgclf.data.split import SplitConfig, stratified_split
from imgclf.train.config import DistributedConfig, TrainConfig
from imgclf.train.launch import fit_processes
from imgclf.train.loop import fit_manifest

TINY = {
    "arch": "resnet10t", "pretrained": False, "image_size": 16, "batch_size": 32, "lr": 3e-3,
    "num_workers": 0, "early_stopping_patience": None,
}  # fmt: skip


def test_distributed_config_counts_processes():
    assert DistributedConfig().processes() == 1
    assert DistributedConfig(nproc_per_node=3).processes() == 3
    auto = DistributedConfig(nproc_per_node="auto").processes()
    assert auto == (torch.cuda.device_count() if torch.cuda.is_available() else 1)
    for bad in ({"nproc_per_node": 0}, {"nproc_per_node": "all"}, {"nproc": 2}):
        with pytest.raises(ValidationError):
            DistributedConfig(**bad)


def test_fit_processes_refuses_zero():
    with pytest.raises(ValueError, match="nproc must be at least 1"):
        fit_processes(None, TrainConfig(**TINY), AugmentPolicy(), 0)


@pytest.fixture(scope="module")
def split_digits(digits_dir):
    return stratified_split(ingest_folder(digits_dir), SplitConfig(seed=1))


@pytest.mark.slow
def test_two_processes_resume_from_the_checkpoints_of_one(split_digits, tmp_path, monkeypatch):
    """A run started with one process and stopped after 2 epochs continues with two from epoch 3 (the
    checkpoints are keyed by data and config, not by the number of processes)."""
    from imgclf import paths

    monkeypatch.setenv("IMGCLF_STATE", str(tmp_path))
    run_key = f"{split_digits.content_hash()[:12]}-{TrainConfig(**TINY, epochs=2).resume_key()}"
    first = fit_manifest(split_digits, TrainConfig(**TINY, epochs=2), checkpoint_dir=paths.checkpoints_dir(run_key))
    logged: list[int] = []
    resumed = fit_processes(
        split_digits, TrainConfig(**TINY, epochs=4), AugmentPolicy(), 2, lambda metrics, epoch: logged.append(epoch)
    )
    assert resumed.info["world_size"] == 2 and resumed.info["resumed_after_epoch"] == 2
    assert resumed.history[:2] == first.history and len(resumed.history) == 4
    assert logged == [3, 4]  # only the epochs this run trained reach the caller
    assert not paths.checkpoints_dir(run_key).exists()  # removed once the run succeeded, as with one process


@pytest.mark.slow
def test_a_failing_rank_is_an_error_that_shows_why(split_digits, tmp_path, monkeypatch):
    monkeypatch.setenv("IMGCLF_STATE", str(tmp_path))
    config = TrainConfig(**{**TINY, "arch": "no_such_arch"}, epochs=1)
    with pytest.raises(RuntimeError, match=r"(?s)\(2 processes\) failed with exit status.*no_such_arch"):
        fit_processes(split_digits, config, AugmentPolicy(), 2)


def test_the_shipped_training_config_asks_for_a_valid_process_count():
    import yaml

    from conftest import ROOT

    config = yaml.safe_load((ROOT / "configs" / "training.yaml").read_text())
    assert DistributedConfig(**config["steps"]["train"]["parameters"]["distributed"]).processes() == 1
