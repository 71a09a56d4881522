"""LR finder: a real sweep on the digits with a tiny model, the valley heuristic on hand-made curves,
and `run_lr_find` (what `imgclf lr-find` calls) on a messy split source."""

from __future__ import annotations

import json
import logging
import math
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from imgclf.data.cache import decoded_images
from imgclf.data.ingest import ingest_folder
from imgclf.models.factory import create
from imgclf.preprocess import PreprocessSpec
from imgclf.train.config import TrainConfig
from imgclf.train.lr_finder import LRFinderResult, default_optimizer, find_lr, run_lr_find, suggest_lr

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
START, END, STEPS = 1e-5, 10.0, 30
ARCH = "test_efficientnet"  # timm's 0.1M-parameter test net: a sweep step costs a few ms on 2 cores


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """A 0.1M-parameter net gains nothing from intra-op threads; on 2 shared cores the second thread
    mostly spins (measured 5-15x slower per step under load). Restored afterwards."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def digits(digits_dir):
    manifest = ingest_folder(digits_dir)
    images = decoded_images(manifest, PreprocessSpec(image_size=32))
    return images, manifest.label_indices(manifest.class_names)


@pytest.fixture(scope="module")
def sweep(digits):
    """One sweep of a random-init tiny model in channels_last, from eval mode, with what was there
    before it: (result, model, state before, strides before)."""
    images, labels = digits
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(123)
        model, mean, std = create(ARCH, 10, pretrained=False)
    model.eval()
    spec = PreprocessSpec(image_size=32, mean=mean, std=std)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    strides = {k: v.stride() for k, v in model.state_dict().items()}
    result = find_lr(
        model, images, labels, spec, start_lr=START, end_lr=END, num_steps=STEPS, batch_size=16, channels_last=True
    )
    return result, model, before, strides


def test_lrs_grow_geometrically_from_start_lr(sweep):
    result = sweep[0]
    ratio = (END / START) ** (1 / (STEPS - 1))
    assert result.lrs[0] == START
    assert np.allclose(np.array(result.lrs[1:]) / result.lrs[:-1], ratio, rtol=1e-9, atol=0)


def test_sweep_records_the_loss_and_stops_where_it_diverges(sweep):
    result = sweep[0]
    assert len(result.losses) == len(result.lrs) and all(math.isfinite(v) for v in result.losses)
    assert min(result.losses) < result.losses[0] - 0.2  # the model learned something on the way
    # a random-init net cannot survive lr ~ 1 with AdamW: the sweep stops there, on the diverged point
    assert result.diverged_lr is not None and len(result.lrs) < STEPS
    assert result.diverged_lr == result.lrs[-1]
    assert result.losses[-1] > 4.0 * min(result.losses)  # the stopping rule, and no step before it met it
    assert all(v <= 4.0 * min(result.losses[: i + 1]) for i, v in enumerate(result.losses[:-1]))


def test_suggestion_lies_inside_the_sweep_and_below_divergence(sweep):
    result = sweep[0]
    assert result.method == "valley"
    assert result.lrs[0] < result.suggested_lr < result.lrs[-1]
    assert result.suggested_lr < result.diverged_lr
    assert result.suggested_lr < result.lrs[int(np.argmin(result.losses))]  # on the way down, not past the bottom


def test_finder_leaves_the_model_as_it_was(sweep):
    _, model, before, strides = sweep
    after = model.state_dict()
    assert after.keys() == before.keys()
    for name, tensor in after.items():
        assert torch.equal(tensor, before[name]), name  # bitwise: integer buffers too
        assert tensor.stride() == strides[name], f"{name}: memory layout not restored"
    assert not model.training
    assert all(p.grad is None for p in model.parameters())


def test_same_seed_same_sweep_and_caller_rng_untouched(digits):
    """With dropout the sweep draws random numbers: from its own seed, whatever the caller's torch
    stream is, and the caller's stream is left where it was."""
    images, labels = digits
    model, mean, std = create(ARCH, 10, pretrained=False, drop_rate=0.5)
    spec = PreprocessSpec(image_size=32, mean=mean, std=std)

    def sweep_after_global_seed(global_seed: int, seed: int) -> list[float]:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(global_seed)
            before = torch.get_rng_state()
            result = find_lr(
                model, images, labels, spec, start_lr=1e-4, end_lr=1e-2, num_steps=5, batch_size=8, seed=seed
            )
            assert torch.equal(torch.get_rng_state(), before)
        return result.losses

    first = sweep_after_global_seed(1, seed=7)
    assert sweep_after_global_seed(2, seed=7) == first  # also: the second sweep started from restored weights
    assert sweep_after_global_seed(1, seed=8) != first


def test_default_optimizer_is_the_one_training_uses(digits):
    """TrainConfig's weight decay (its default, or the given config's), none on norms and biases; the
    sweep moves a backbone group's LR with its `backbone_lr_scale`."""
    images, labels = digits
    model, mean, std = create(ARCH, 10, pretrained=False)
    groups = default_optimizer(model).param_groups
    assert {g["weight_decay"] for g in groups} == {TrainConfig().weight_decay, 0.0}
    assert all(p.ndim <= 1 for g in groups if g["weight_decay"] == 0.0 for p in g["params"])

    config = TrainConfig(optimizer="sgd", weight_decay=0.05, backbone_lr_scale=0.1)
    made: list[torch.optim.Optimizer] = []

    def factory(m: torch.nn.Module) -> torch.optim.Optimizer:
        made.append(default_optimizer(m, config))
        return made[-1]

    spec = PreprocessSpec(image_size=32, mean=mean, std=std)
    result = find_lr(model, images, labels, spec, optimizer_factory=factory, start_lr=1e-4, end_lr=1e-3, num_steps=4)
    assert isinstance(made[0], torch.optim.SGD)
    assert {g["weight_decay"] for g in made[0].param_groups} == {0.05, 0.0}
    last = {g["lr_scale"]: g["lr"] for g in made[0].param_groups}
    assert last == {1.0: result.lrs[-1], 0.1: pytest.approx(0.1 * result.lrs[-1])}


def test_plot_writes_a_png_and_to_dict_is_json(sweep, tmp_path):
    result = sweep[0]
    path = result.plot(tmp_path / "plots" / "lr_find.png")
    assert path.read_bytes()[:8] == PNG_SIGNATURE
    with Image.open(path) as image:
        image.verify()
    data = json.loads(json.dumps(result.to_dict()))
    assert LRFinderResult(**data) == result


def _hand_made_curve() -> tuple[np.ndarray, np.ndarray]:
    """Flat at 2.3 up to 1e-4, straight down (in log lr) to 0.3 at 1e-2, then blowing up."""
    lrs = np.logspace(-7, 1, 97)  # 12 points per decade
    x = np.log10(lrs)
    losses = np.where(x <= -4, 2.3, np.where(x <= -2, 2.3 - (x + 4), 0.3 + 3 * (x + 2) ** 2))
    return lrs, losses


def test_valley_finds_the_steep_descent_of_a_hand_made_curve():
    lrs, losses = _hand_made_curve()
    suggested = suggest_lr(list(lrs), list(losses))
    assert 10**-3.25 <= suggested <= 10**-2.75  # the middle of the descent from 1e-4 to 1e-2


def test_valley_ignores_a_single_noisy_dip():
    """A one-step dip is the steepest point of the curve; the valley does not take it."""
    lrs, losses = _hand_made_curve()
    losses = losses.copy()
    dip = int(np.searchsorted(lrs, 1e-6))
    losses[dip] -= 1.0
    slope = np.gradient(losses, np.log10(lrs))
    assert abs(int(np.argmin(slope)) - dip) <= 1  # what a steepest-gradient rule would have picked
    assert 10**-3.25 <= suggest_lr(list(lrs), list(losses)) <= 10**-2.75


def test_valley_refuses_a_loss_that_never_decreases():
    lrs = list(np.logspace(-7, 1, 20))
    with pytest.raises(ValueError, match="never decreased"):
        suggest_lr(lrs, [1.0 + i for i in range(20)])


def test_run_lr_find_sweeps_the_train_split_and_skips_bad_files(digits_dir, tmp_path, caplog):
    source = tmp_path / "source"
    for split, count in (("train", 10), ("val", 2)):
        for label in ("0", "1", "2"):
            target = source / split / label
            target.mkdir(parents=True)
            for png in sorted((digits_dir / label).iterdir())[:count]:
                shutil.copy(png, target / png.name)
    (source / "train" / "0" / "broken.png").write_bytes(b"not a png at all")
    shutil.copy(next((digits_dir / "3").iterdir()), source / "train" / "stray.png")  # no class folder
    out = tmp_path / "out" / "lr_find.png"

    with caplog.at_level(logging.INFO, logger="imgclf.train.lr_finder"):
        result = run_lr_find(str(source), ARCH, 32, 8, str(out), pretrained=False, num_steps=12)

    assert out.read_bytes()[:8] == PNG_SIGNATURE
    assert 2 <= len(result.lrs) <= 12 and result.lrs[0] == 1e-7
    assert result.lrs[0] < result.suggested_lr < result.lrs[-1]
    assert "skipped 2 of 38 files" in caplog.text and "no_label" in caplog.text
    assert "sweeping the 30 train images of 36 labelled ones" in caplog.text  # the given split is kept
