"""The decoded cache and the training batch loader: every image once per epoch, labels aligned,
reproducible by seed whatever the worker count, and batched augmentation that behaves like v2."""

from __future__ import annotations

import pickle
import shutil

import numpy as np
import pytest
import torch
from torchvision.transforms import InterpolationMode, v2
from torchvision.transforms.v2 import functional as TF

from imgclf.augment.batched import BatchAugment
from imgclf.augment.policy import AugmentPolicy
from imgclf.data.cache import CacheBuildError, decoded_cache_path, decoded_images
from imgclf.data.ingest import ingest_folder
from imgclf.data.loader import CacheLoader
from imgclf.preprocess import PreprocessSpec

N, SIZE, BATCH, CLASSES = 203, 8, 16, 7  # N is not a multiple of BATCH: the last batch is partial
FULL_POLICY = AugmentPolicy(
    hflip=0.5,
    vflip=0.5,
    rotation_degrees=20,
    scale_min=0.5,
    brightness=0.3,
    contrast=0.3,
    saturation=0.3,
    noise_std=0.05,
    erasing=0.5,
)


@pytest.fixture()
def index_cache(tmp_path):
    """A cache whose image i is filled with (i % 256, i // 256, 7): the pixels say which image it is."""
    path = tmp_path / "cache.npy"
    images = np.lib.format.open_memmap(path, mode="w+", dtype=np.uint8, shape=(N, SIZE, SIZE, 3))
    index = np.arange(N)
    images[:] = np.stack([index % 256, index // 256, np.full(N, 7)], axis=1)[:, None, None, :]
    images.flush()
    return path, index % CLASSES


def decode_index(images: torch.Tensor) -> np.ndarray:
    return (images[:, 0, 0, 0].long() + 256 * images[:, 1, 0, 0].long()).numpy()


@pytest.mark.parametrize("workers", [0, 2])
def test_every_image_once_per_epoch_with_its_label(index_cache, workers):
    path, labels = index_cache
    with CacheLoader(path, labels, BATCH, seed=3, num_workers=workers) as loader:
        orders = []
        for epoch in (1, 2):
            batches = list(loader.epoch(epoch))
            assert [len(y) for _, y in batches] == [BATCH] * (N // BATCH) + [N % BATCH]
            assert len(batches) == loader.batches_per_epoch(epoch)
            for images, targets in batches:
                assert images.dtype == torch.uint8 and images.shape[1:] == (3, SIZE, SIZE)
                assert targets.dtype == torch.int64
                assert np.array_equal(targets.numpy(), decode_index(images) % CLASSES)
            seen = np.concatenate([decode_index(images) for images, _ in batches])
            assert sorted(seen.tolist()) == list(range(N))
            orders.append(seen)
        assert not np.array_equal(orders[0], orders[1]), "epochs should be shuffled differently"


def test_an_epoch_left_early_does_not_leak_into_the_next(index_cache):
    path, labels = index_cache
    with CacheLoader(path, labels, BATCH, seed=1, num_workers=2) as loader:
        first = loader.epoch(1)
        next(first), next(first)
        del first
        seen = np.concatenate([decode_index(images) for images, _ in loader.epoch(2)])
    assert sorted(seen.tolist()) == list(range(N))


def test_drop_last_and_no_shuffle(index_cache):
    path, labels = index_cache
    loader = CacheLoader(path, labels, BATCH, shuffle=False, drop_last=True, num_workers=0)
    seen = np.concatenate([decode_index(images) for images, _ in loader.epoch(1)])
    assert seen.tolist() == list(range(N // BATCH * BATCH))


def test_same_seed_same_batches_whatever_the_worker_count(index_cache):
    path, labels = index_cache
    augment = BatchAugment.from_policy(FULL_POLICY, SIZE)
    rng_before = torch.get_rng_state()
    runs = {}
    for workers, seed in ((0, 5), (2, 5), (0, 6)):
        with CacheLoader(path, labels, BATCH, augment=augment, seed=seed, num_workers=workers) as loader:
            runs[(workers, seed)] = list(loader.epoch(4))
    assert torch.equal(torch.get_rng_state(), rng_before), "the loader must not touch torch's global RNG"
    for (a, ya), (b, yb) in zip(runs[(0, 5)], runs[(2, 5)]):
        assert torch.equal(a, b) and torch.equal(ya, yb)
    assert not all(torch.equal(a, b) for (a, _), (b, _) in zip(runs[(0, 5)], runs[(0, 6)]))


def test_indices_for_epoch_hook_allows_repeats_and_checks_range(index_cache):
    path, labels = index_cache
    only_class_0 = np.flatnonzero(labels == 0)

    def oversample(epoch, rng):
        return rng.choice(only_class_0, size=3 * len(only_class_0))

    loader = CacheLoader(path, labels, BATCH, indices_for_epoch=oversample, num_workers=0)
    batches = list(loader.epoch(1))
    assert sum(len(y) for _, y in batches) == 3 * len(only_class_0)
    assert all((y == 0).all() for _, y in batches)
    bad = CacheLoader(path, labels, BATCH, indices_for_epoch=lambda epoch, rng: [0, N], num_workers=0)
    with pytest.raises(ValueError, match="indices_for_epoch"):
        bad.epoch_plan(1)


def test_memory_map_goes_to_workers_by_path(index_cache):
    path, labels = index_cache
    loader = CacheLoader(np.load(path, mmap_mode="r"), labels, BATCH, num_workers=0)
    assert loader.dataset.path == path
    next(loader.epoch(1))  # maps the file in this process
    assert len(pickle.dumps(loader.dataset)) < 10_000, "a pickled dataset must not carry the pixels"
    sliced = CacheLoader(np.load(path, mmap_mode="r")[:50], labels[:50], BATCH, num_workers=0)
    assert sliced.dataset.path is None  # a slice is not the file: it is used as an in-memory array
    with pytest.raises(ValueError, match="labels"):
        CacheLoader(path, labels[:-1], BATCH)


def constant_batch(value: int = 200, n: int = 6, size: int = 16) -> torch.Tensor:
    return torch.full((n, 3, size, size), value, dtype=torch.uint8)


def test_batch_augment_varies_per_image_and_is_reproducible():
    x = torch.arange(16 * 16, dtype=torch.uint8).view(1, 1, 16, 16).expand(8, 3, 16, 16).contiguous()
    augment = BatchAugment.from_policy(FULL_POLICY, 16)
    out = augment(x, torch.Generator().manual_seed(1))
    assert out.dtype == torch.uint8 and out.shape == x.shape
    assert torch.equal(out, augment(x, torch.Generator().manual_seed(1)))
    assert len({bytes(image.numpy()) for image in out}) == len(out), "each image gets its own parameters"
    assert torch.equal(BatchAugment.from_policy(AugmentPolicy(), 16)(x, torch.Generator()), x)


def test_batch_augment_flip_and_rotation_match_v2():
    x = torch.randint(0, 256, (4, 3, 16, 16), dtype=torch.uint8)
    flip = BatchAugment(v2.RandomHorizontalFlip(1.0))
    assert torch.equal(flip(x, torch.Generator()), x.flip(-1))
    # a smooth image, so bilinear sampling differences stay small
    ramp = torch.linspace(0, 255, 32).round().to(torch.uint8)
    smooth = (ramp.view(1, 1, 1, 32) // 2 + ramp.view(1, 1, 32, 1) // 2).expand(2, 3, 32, 32).contiguous()
    rotate = BatchAugment(v2.RandomRotation([20, 20], interpolation=InterpolationMode.BILINEAR))
    expected = TF.rotate(smooth, 20, interpolation=InterpolationMode.BILINEAR)
    assert (rotate(smooth, torch.Generator()).float() - expected.float()).abs().mean() < 2.0


def test_batch_augment_erasing_and_rotation_fill_with_zeros():
    erased = BatchAugment.from_policy(AugmentPolicy(erasing=1.0), 16)(
        constant_batch(), torch.Generator().manual_seed(0)
    )
    zero_fraction = (erased == 0).all(1).float().mean((1, 2))
    assert set(erased.unique().tolist()) <= {0, 200}
    assert ((zero_fraction >= 0.02) & (zero_fraction <= 0.34)).all()
    rotated = BatchAugment(v2.RandomRotation([45, 45]))(constant_batch(), torch.Generator())
    assert (rotated[:, :, 0, 0] == 0).all() and (rotated[:, :, 8, 8] == 200).all()


def test_batch_augment_runs_other_ops_per_image_reproducibly():
    x = torch.randint(0, 256, (6, 3, 16, 16), dtype=torch.uint8)
    assert torch.equal(BatchAugment(v2.RandomInvert(1.0))(x, torch.Generator()), 255 - x)
    augment = BatchAugment.from_policy(AugmentPolicy(hflip=0.5, preset="trivialaugment", brightness=0.2), 16)
    assert [type(stage).__name__ for stage in augment.stages] == ["_Geometry", "_PerImage", "_Colour"]
    rng_before = torch.get_rng_state()
    first = augment(x, torch.Generator().manual_seed(2))
    assert torch.equal(first, augment(x, torch.Generator().manual_seed(2)))
    assert torch.equal(torch.get_rng_state(), rng_before)


def test_batch_augment_rejects_a_crop_of_another_size():
    augment = BatchAugment.from_policy(AugmentPolicy(scale_min=0.5), 32)
    with pytest.raises(ValueError, match="RandomResizedCrop size"):
        augment(constant_batch(size=16), torch.Generator())


def test_cache_built_in_processes_matches_in_process(full_digits_dir, tmp_path):
    manifest = ingest_folder(full_digits_dir)  # 1797 images: enough to use worker processes
    spec = PreprocessSpec(image_size=16)
    parallel = decoded_images(manifest, spec, cache_dir=tmp_path / "p", workers=2)
    serial = decoded_images(manifest, spec, cache_dir=tmp_path / "s", workers=1)
    assert np.array_equal(parallel, serial)


def test_cache_names_the_bad_file_leaves_no_temp_and_rebuilds_a_broken_cache(digits_dir, tmp_path):
    root = tmp_path / "digits"
    shutil.copytree(digits_dir, root)
    manifest = ingest_folder(root)
    spec = PreprocessSpec(image_size=8)
    path = decoded_cache_path(manifest, spec, cache_dir=tmp_path / "cache")
    path.write_bytes(b"not an npy file")
    assert decoded_images(manifest, spec, cache_dir=tmp_path / "cache").shape == (len(manifest), 8, 8, 3)

    bad = root / manifest.records["path"][3]
    bad.write_bytes(b"garbage")
    with pytest.raises(CacheBuildError, match=bad.name):
        decoded_cache_path(manifest, spec, cache_dir=tmp_path / "other", workers=1)
    assert list((tmp_path / "other").iterdir()) == []
