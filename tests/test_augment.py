"""The augmentation policy: every op and preset runs on uint8 tensors, Mixup/CutMix give soft targets,
class-balanced sampling evens out classes, and the dashboard preview grid has the promised layout."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from imgclf.augment.policy import AugmentPolicy, BatchMix, class_balanced_indices
from imgclf.augment.preview import preview_grid, preview_images
from imgclf.data.ingest import ingest_folder
from imgclf.data.split import SplitConfig, stratified_split

OPS = [
    {"hflip": 1.0},
    {"vflip": 1.0},
    {"rotation_degrees": 30},
    {"scale_min": 0.5},
    {"brightness": 0.5},
    {"contrast": 0.5},
    {"saturation": 0.5},
    {"noise_std": 0.1},
    {"erasing": 1.0},
    {"preset": "randaugment", "randaugment_magnitude": 15},
    {"preset": "trivialaugment"},
    {
        "hflip": 0.5,
        "rotation_degrees": 10,
        "scale_min": 0.8,
        "brightness": 0.2,
        "noise_std": 0.05,
        "erasing": 0.5,
        "preset": "randaugment",
    },
]


@pytest.fixture()
def image() -> torch.Tensor:
    return torch.from_numpy(np.random.default_rng(0).integers(0, 256, (3, 32, 32), dtype=np.uint8))


@pytest.mark.parametrize("fields", OPS, ids=lambda f: "+".join(f))
def test_each_op_keeps_uint8_and_shape_and_changes_the_image(fields, image):
    transform = AugmentPolicy(**fields).build(32)
    torch.manual_seed(0)
    outs = [transform(image) for _ in range(4)]
    assert all(out.dtype == torch.uint8 and out.shape == (3, 32, 32) for out in outs)
    assert any(not torch.equal(out, image) for out in outs)


def test_the_default_policy_leaves_images_alone(image):
    assert torch.equal(AugmentPolicy().build(32)(image), image)
    assert AugmentPolicy().build_mix(10) is None


def test_hflip_is_exactly_a_mirror(image):
    assert torch.equal(AugmentPolicy(hflip=1.0).build(32)(image), image.flip(-1))


def test_policy_round_trips_through_json_and_refuses_unknown_keys():
    policy = AugmentPolicy(preset="trivialaugment", mixup_alpha=0.2, class_balanced=True)
    assert AugmentPolicy.model_validate(policy.model_dump(mode="json")) == policy
    with pytest.raises(ValidationError, match="mixup"):
        AugmentPolicy(mixup=0.2)
    with pytest.raises(ValidationError, match="preset"):
        AugmentPolicy(preset="autoaugment")


@pytest.mark.parametrize(
    "fields", [{"mixup_alpha": 0.4}, {"cutmix_alpha": 1.0}, {"mixup_alpha": 0.4, "cutmix_alpha": 1.0}]
)
@pytest.mark.parametrize("dtype", [torch.float32, torch.uint8])
def test_mix_gives_soft_targets_that_sum_to_one(fields, dtype):
    torch.manual_seed(0)
    images = (torch.rand(8, 3, 16, 16) * 255).to(dtype)
    labels = torch.tensor([0, 1, 2, 3, 4, 0, 1, 2])
    mix = AugmentPolicy(**fields).build_mix(num_classes=5)
    mixed, targets = mix(images, labels)
    assert mixed.shape == images.shape and mixed.dtype == dtype
    assert targets.shape == (8, 5) and targets.dtype == torch.float32
    assert torch.allclose(targets.sum(1), torch.ones(8))
    assert not torch.equal(mixed, images)
    assert ((targets > 0).sum(1) == 2).all()  # each row blends its own label with its neighbour's


def test_an_unmixed_batch_gets_one_hot_targets_and_no_mix_means_none():
    images, labels = torch.rand(4, 3, 8, 8), torch.tensor([2, 0, 1, 2])
    same, targets = BatchMix(mixup_alpha=0.4, cutmix_alpha=0.0, prob=0.0, num_classes=3)(images, labels)
    assert torch.equal(same, images) and torch.equal(targets, torch.eye(3)[labels])
    assert AugmentPolicy(mixup_alpha=0.4, mix_prob=0.0).build_mix(3) is None
    with pytest.raises(ValueError, match="labels"):
        AugmentPolicy(cutmix_alpha=1.0).build_mix(3)(images, labels[:2])


def test_class_balanced_sampling_evens_out_an_imbalanced_label_array():
    labels = np.repeat([0, 1, 2], [900, 90, 10])
    drawn = class_balanced_indices(labels, 30_000, np.random.default_rng(0))
    share = np.bincount(labels[drawn], minlength=3) / len(drawn)
    assert np.allclose(share, 1 / 3, atol=0.02)
    plain = AugmentPolicy().epoch_indices(labels, np.random.default_rng(0))
    assert sorted(plain.tolist()) == list(range(1000))  # a permutation, imbalance kept
    balanced = AugmentPolicy(class_balanced=True).epoch_indices(labels, np.random.default_rng(0))
    assert len(balanced) == 1000 and np.bincount(labels[balanced], minlength=3).min() > 250


def test_class_balanced_sampling_refuses_empty_labels():
    with pytest.raises(ValueError, match="non-empty"):
        class_balanced_indices(np.array([]), 5, np.random.default_rng(0))


def test_preview_grid_layout_is_seeded_and_leaves_the_global_rng_alone():
    images = np.random.default_rng(1).integers(0, 256, (8, 24, 24, 3), dtype=np.uint8)
    policy = AugmentPolicy(hflip=0.5, rotation_degrees=20, cutmix_alpha=1.0)
    state = torch.get_rng_state()
    grid = preview_grid(images, policy, rows=4, pad=2)
    assert torch.equal(torch.get_rng_state(), state)
    assert grid.size == (8 * 24 + 9 * 2, 4 * 24 + 5 * 2) and grid.mode == "RGB"
    assert np.array_equal(np.asarray(grid), np.asarray(preview_grid(images, policy, rows=4, pad=2)))
    cells = np.asarray(grid)[2:26]  # first row of cells
    assert not np.array_equal(cells, np.asarray(grid)[28:52])  # rows are independent draws


def test_preview_images_are_distinct_training_images(digits_dir):
    manifest = stratified_split(ingest_folder(digits_dir), SplitConfig(near_duplicate_threshold=None))
    images = preview_images(manifest, count=8, size=40)
    assert images.shape == (8, 40, 40, 3) and images.dtype == np.uint8
    assert len({image.tobytes() for image in images}) == 8
    with pytest.raises(ValueError, match="split manifest"):
        preview_images(ingest_folder(digits_dir))


def test_mixup_blends_multi_hot_targets_of_multi_label_data():
    torch.manual_seed(0)
    images = torch.rand(4, 3, 8, 8)
    targets = torch.tensor([[1, 1, 0], [0, 1, 0], [0, 0, 1], [1, 0, 1]], dtype=torch.float32)
    mixed, soft = AugmentPolicy(mixup_alpha=0.4).build_mix(3)(images, targets)
    lam = float(
        ((mixed - images.roll(1, 0)) / (images - images.roll(1, 0)))[0, 0, 0, 0]
    )  # Mixup: lam*x + (1-lam)*x.roll(1)
    assert torch.allclose(soft, lam * targets + (1 - lam) * targets.roll(1, 0), atol=1e-5)
