"""The training budget chosen from the data: image size from the source resolution, epochs from the
number of training images, the LR from the finder when asked, and the per-epoch step cap."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError

from imgclf.augment.policy import AugmentPolicy
from imgclf.data.decoded import DecodedSplits
from imgclf.data.ingest import ingest_folder
from imgclf.data.manifest import DatasetManifest
from imgclf.data.split import SplitConfig, stratified_split
from imgclf.preprocess import PreprocessSpec
from imgclf.train import budget, distributed
from imgclf.train.batches import TrainBatches
from imgclf.train.config import TrainConfig
from imgclf.train.loop import fit_manifest

TINY = {"arch": "resnet10t", "pretrained": False, "batch_size": 32, "num_workers": 0}


def _decided(config: TrainConfig) -> bool:
    """No "auto" or "find" left in `config`."""
    return "auto" not in (config.epochs, config.image_size) and config.lr != "find"


def _manifest(sizes: list[tuple[int, int]]) -> DatasetManifest:
    records = pd.DataFrame(
        {
            "path": [f"{i}.png" for i in range(len(sizes))],
            "label": ["a", "b"] * (len(sizes) // 2) + ["a"] * (len(sizes) % 2),
            "sha256": [f"{i:064x}" for i in range(len(sizes))],
            "bytes": 100,
            "format": "PNG",
            "mode": "RGB",
            "width": [w for w, _ in sizes],
            "height": [h for _, h in sizes],
        }
    )
    return DatasetManifest("/nowhere", records)


@pytest.fixture(scope="module")
def split_digits(digits_dir):
    return stratified_split(ingest_folder(digits_dir), SplitConfig(seed=1))


@pytest.mark.parametrize(
    ("sizes", "expected"),
    [
        ([(8, 8)] * 5, 64),  # tiny scans: the floor
        ([(300, 200)] * 3 + [(90, 90)] * 2, 192),  # median short side 200 -> nearest multiple of 32
        ([(4000, 3000)] * 4, 224),  # photos: the cap
    ],
)
def test_image_size_follows_the_source_resolution(sizes, expected):
    resolved = budget.resolve(TrainConfig(epochs=3), _manifest(sizes))
    assert resolved.config.image_size == expected
    assert resolved.config.epochs == 3 and "epochs" not in resolved.reasons
    assert "median short side" in resolved.reasons["image_size"]


@pytest.mark.parametrize(
    ("train_images", "expected"),
    [(100, budget.MAX_EPOCHS), (1257, 16), (2500, 8), (200_000, budget.MIN_EPOCHS)],
)
def test_epochs_follow_the_number_of_training_images(train_images, expected):
    resolved = budget.resolve(TrainConfig(image_size=32), _manifest([(32, 32)] * train_images))
    assert resolved.config.epochs == expected and set(resolved.reasons) == {"epochs"}


def test_a_batch_too_large_for_memory_becomes_micro_batches_of_the_same_effective_size():
    resolved = budget.resolve(TrainConfig(epochs=3, batch_size=64), _manifest([(4000, 3000)] * 4))
    assert (resolved.config.batch_size, resolved.config.accumulate_steps) == (32, 2)
    assert "micro-batches" in resolved.reasons["accumulate_steps"]
    odd = budget.resolve(TrainConfig(epochs=3, batch_size=70), _manifest([(4000, 3000)] * 4)).config
    assert (odd.batch_size, odd.accumulate_steps) == (14, 5)  # 3 x 24 would be 72: 5 x 14 is exactly 70
    chosen = TrainConfig(epochs=3, batch_size=64, accumulate_steps=1, image_size=64)
    assert budget.resolve(chosen, _manifest([(4000, 3000)] * 4)).config == chosen  # small images: one batch


def test_explicit_values_are_kept_and_nothing_is_explained():
    config = TrainConfig(image_size=96, epochs=4)
    resolved = budget.resolve(config, _manifest([(8, 8)] * 10))
    assert resolved.config == config and resolved.reasons == {} and _decided(resolved.config)


def test_config_accepts_auto_and_find_and_names_bad_values():
    assert not _decided(TrainConfig())  # the defaults are decided from the data
    assert TrainConfig(image_size="96", epochs="12", lr="find").image_size == 96
    for bad in ({"epochs": "many"}, {"epochs": 0}, {"image_size": 4}, {"lr": "guess"}, {"lr": 0}):
        with pytest.raises(ValidationError) as err:
            TrainConfig(**bad)
        assert next(iter(bad)) in str(err.value)


def test_an_empty_train_split_is_named():
    with pytest.raises(ValueError, match="train split is empty"):
        budget.resolve(TrainConfig(), _manifest([]))


def test_fit_records_the_decided_budget(split_digits, monkeypatch):
    monkeypatch.setattr(budget, "IMAGES_SEEN", 300)  # a short run: the wiring is what this checks
    monkeypatch.setattr(budget, "MIN_EPOCHS", 1)
    config = TrainConfig(**TINY, image_size="auto", epochs="auto", max_steps_per_epoch=2)
    trained = fit_manifest(split_digits, config)
    decided = TrainConfig(**trained.info["train_config"])
    train_rows = int((split_digits.records["split"] == "train").sum())
    assert _decided(decided) and decided.image_size == 64  # 8x8 scans: the floor
    assert decided.epochs == budget.epochs_for(train_rows)[0] == 2
    assert set(trained.info["budget"]) == {"image_size", "epochs"}
    assert trained.preprocess.image_size == 64 and len(trained.history) <= decided.epochs


def test_max_steps_per_epoch_draws_a_fresh_subset_each_epoch(split_digits):
    data = DecodedSplits(split_digits, PreprocessSpec(image_size=16))
    config = TrainConfig(**TINY, image_size=16, epochs=3, max_steps_per_epoch=2)
    batches = TrainBatches.build(data.train, AugmentPolicy(), data.spec, config, distributed.setup(), 10)
    try:
        plans = [batches.loader.epoch_plan(epoch) for epoch in (1, 2)]
        assert batches.batches_per_epoch() == 2 and batches.images_in_epoch(1) == 2 * 32 < len(data.train)
        first, second = (np.concatenate([rows for _, rows in plan]) for plan in plans)
        assert len(set(first)) == len(first) and set(first) != set(second)
    finally:
        batches.close()


def test_lr_find_trains_at_the_finders_suggestion(split_digits):
    config = TrainConfig(**TINY, image_size=16, epochs=1, lr="find", max_steps_per_epoch=1)
    trained = fit_manifest(split_digits, config)
    lr = trained.info["train_config"]["lr"]
    assert isinstance(lr, float) and 1e-7 < lr < 10
    assert "LR finder" in trained.info["budget"]["lr"]


def test_an_unsplit_manifest_is_named_before_anything_is_decoded():
    with pytest.raises(ValueError, match="no `split` column"):
        fit_manifest(_manifest([(32, 32)] * 4), TrainConfig())
