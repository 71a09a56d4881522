"""Grad-CAM and the evaluation figures.

The Grad-CAM test has a known answer: a tiny CNN learns a task whose only evidence sits in one quadrant
of each image (a horizontal bar = class 0, a vertical bar = class 1, in a random quadrant), while an
equally bright square in another random quadrant carries no information. Grad-CAM must point at the
bar's quadrant, and must not point at the square's: brightness alone does not pass.
"""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from imgclf.evaluate import plots
from imgclf.evaluate.gradcam import GradCamUnsupported, find_target_layer, grad_cam, overlay
from imgclf.preprocess import PreprocessSpec

SIZE, HALF = 32, 16
SPEC = PreprocessSpec(image_size=SIZE, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))


def bars(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Images (n, 32, 32, 3) of dim noise with a bright bar (3x10: class 0, 10x3: class 1) in a random
    quadrant and a bright 6x6 square in another. Returns images, labels, bar quadrant, square quadrant."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 90, (n, SIZE, SIZE, 3)).astype(np.uint8)
    labels = rng.integers(0, 2, n)
    bar_q = rng.integers(0, 4, n)
    square_q = (bar_q + rng.integers(1, 4, n)) % 4
    for i in range(n):
        h, w = (3, 10) if labels[i] == 0 else (10, 3)
        qy, qx = divmod(int(bar_q[i]), 2)
        y, x = qy * HALF + rng.integers(1, HALF - h), qx * HALF + rng.integers(1, HALF - w)
        images[i, y : y + h, x : x + w] = 255
        qy, qx = divmod(int(square_q[i]), 2)
        y, x = qy * HALF + rng.integers(2, HALF - 7), qx * HALF + rng.integers(2, HALF - 7)
        images[i, y : y + 6, x : x + 6] = 255
    return images, labels, bar_q, square_q


def concentration(heatmap: np.ndarray, quadrant: int) -> float:
    """Mean heat inside the quadrant over mean heat elsewhere."""
    qy, qx = divmod(int(quadrant), 2)
    inside = np.zeros(heatmap.shape, dtype=bool)
    inside[qy * HALF : (qy + 1) * HALF, qx * HALF : (qx + 1) * HALF] = True
    return float(heatmap[inside].mean() / max(heatmap[~inside].mean(), 1e-6))


def tiny_cnn() -> nn.Sequential:
    def block(cin: int, cout: int, stride: int) -> list[nn.Module]:
        return [nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU()]

    return nn.Sequential(
        *block(3, 16, 1),
        *block(16, 32, 2),
        *block(32, 32, 2),
        *block(32, 32, 1),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(32, 2),
    )


def _accuracy(model: nn.Module, images: np.ndarray, labels: np.ndarray) -> float:
    model.eval()
    with torch.no_grad():
        return float(
            (model(SPEC.normalize(torch.from_numpy(images).permute(0, 3, 1, 2))).argmax(1).numpy() == labels).mean()
        )


def hook_count(model: nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks) for m in model.modules())


@pytest.fixture(scope="module")
def trained():
    """The tiny CNN trained until it solves the task on held-out images (a few seconds)."""
    torch.manual_seed(0)
    train_x, train_y, _, _ = bars(512, seed=1)
    val_x, val_y, _, _ = bars(64, seed=2)
    model = tiny_cnn()
    optimiser = torch.optim.AdamW(model.parameters(), lr=3e-3)
    x, y = SPEC.normalize(torch.from_numpy(train_x).permute(0, 3, 1, 2)), torch.from_numpy(train_y)
    for epoch in range(12):
        model.train()
        for idx in torch.randperm(len(x)).split(64):
            loss = nn.functional.cross_entropy(model(x[idx]), y[idx])
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
        if epoch >= 2 and _accuracy(model, val_x, val_y) >= 0.97:
            break
    model.zero_grad(set_to_none=True)
    model.eval()
    test = bars(64, seed=3)
    accuracy = _accuracy(model, test[0], test[1])
    assert accuracy >= 0.9, (
        f"the toy model did not learn the task (test accuracy {accuracy:.2f}): the Grad-CAM check would mean nothing"
    )
    return model, test


# --- Grad-CAM ---------------------------------------------------------------------------------------


def test_grad_cam_points_at_the_informative_quadrant_not_the_bright_distractor(trained):
    model, (images, _labels, bar_q, square_q) = trained
    assert find_target_layer(model, SIZE) == "11"  # the last ReLU, 8x8, before AdaptiveAvgPool2d
    heat = grad_cam(model, images, SPEC)
    assert heat.shape == (len(images), SIZE, SIZE) and heat.dtype == np.float32
    assert heat.min() >= 0.0 and heat.max() <= 1.0 and np.isfinite(heat).all()
    on_bar = np.array([concentration(h, q) for h, q in zip(heat, bar_q)])
    on_square = np.array([concentration(h, q) for h, q in zip(heat, square_q)])
    assert (on_bar > 2).mean() >= 0.9, f"bar quadrant concentration per image: {np.round(on_bar, 2)}"
    assert (on_square > 2).mean() <= 0.1, f"distractor quadrant concentration per image: {np.round(on_square, 2)}"
    # the same answer with the layer named, or given as a module, and with the class given explicitly
    predicted = model(SPEC.normalize(torch.from_numpy(images).permute(0, 3, 1, 2))).argmax(1).numpy()
    np.testing.assert_allclose(
        grad_cam(model, images[:8], SPEC, class_indices=predicted[:8], target_layer="11"), heat[:8], atol=1e-5
    )
    np.testing.assert_allclose(
        grad_cam(model, images[:8], SPEC, target_layer=model[11], batch_size=3), heat[:8], atol=1e-5
    )


def test_grad_cam_for_another_class_differs_and_empty_input_is_empty(trained):
    model, (images, *_) = trained
    for_zero, for_one = (
        grad_cam(model, images[:8], SPEC, class_indices=0),
        grad_cam(model, images[:8], SPEC, class_indices=1),
    )
    assert not np.allclose(for_zero, for_one)
    assert grad_cam(model, images[:0], SPEC).shape == (0, SIZE, SIZE)


def test_grad_cam_leaves_the_model_as_it_found_it(trained):
    model, (images, *_) = trained
    expected = grad_cam(model, images[:8], SPEC)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    hooks = hook_count(model)
    model.train()  # a model handed over in training mode: explained in eval mode, given back in training mode
    try:
        heat = grad_cam(model, images[:8], SPEC)
        assert all(m.training for m in model.modules())
    finally:
        model.eval()
    np.testing.assert_allclose(heat, expected, atol=1e-5)  # BatchNorm used its running statistics
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before), "grad_cam changed a parameter or buffer"
    assert all(p.grad is None for p in model.parameters()), "grad_cam left gradients on the parameters"
    assert hook_count(model) == hooks
    # a frozen backbone (linear probe) is explained just the same
    for p in model.parameters():
        p.requires_grad_(False)
    try:
        np.testing.assert_allclose(grad_cam(model, images[:8], SPEC), expected, atol=1e-5)
    finally:
        for p in model.parameters():
            p.requires_grad_(True)


def test_hooks_are_removed_when_grad_cam_fails(trained):
    model, (images, *_) = trained
    hooks = hook_count(model)
    with pytest.raises(GradCamUnsupported, match="not a 4-D feature map"):
        grad_cam(model, images[:2], SPEC, target_layer=model[-1])  # the Linear head
    with pytest.raises(GradCamUnsupported, match="no layer named 'nope'"):
        grad_cam(model, images[:2], SPEC, target_layer="nope")
    with pytest.raises(ValueError, match="class index out of range"):
        grad_cam(model, images[:2], SPEC, class_indices=7)
    with pytest.raises(ValueError, match=r"\(N, H, W, 3\)"):
        grad_cam(model, images[0], SPEC)
    assert hook_count(model) == hooks
    assert not model.training


@pytest.mark.parametrize(
    "arch, layer",
    [
        ("resnet10t", "layer4"),
        ("tf_efficientnet_lite0", "bn2"),
        ("mobilenetv3_small_050", "blocks"),  # its global pool comes before conv_head
        ("torchvision/resnet18", "layer4"),
        ("torchvision/shufflenet_v2_x0_5", "conv5"),  # pools with x.mean(), not a module
        ("torchvision/mobilenet_v3_small", "features"),  # squeeze-excitation pools inside the blocks
    ],
)
def test_default_target_layer_of_project_architectures(arch, layer):
    from imgclf.models.factory import create

    model, mean, std = create(arch, 3, image_size=64)
    model.eval()
    assert find_target_layer(model, 64) == layer
    images = np.random.default_rng(0).integers(0, 256, (2, 64, 64, 3), dtype=np.uint8)
    heat = grad_cam(model, images, PreprocessSpec(image_size=64, mean=mean, std=std))
    assert heat.shape == (2, 64, 64) and np.isfinite(heat).all() and heat.min() >= 0 and heat.max() <= 1
    assert hook_count(model) == 0


def test_a_vit_is_refused_with_an_error_that_names_it():
    from imgclf.models.factory import create

    model, _, _ = create("vit_tiny_patch16_224", 2, image_size=32)
    images = np.zeros((1, 32, 32, 3), dtype=np.uint8)
    with pytest.raises(GradCamUnsupported, match=r"vit_tiny_patch16_224.*token sequences"):
        grad_cam(model, images, PreprocessSpec(image_size=32))
    assert hook_count(model) == 0


def test_overlay_keeps_shape_and_dtype_and_blends():
    image = np.full((20, 30, 3), 100, dtype=np.uint8)
    heat = np.zeros((20, 30), dtype=np.float32)
    heat[:10] = 1.0
    out = overlay(image, heat)
    assert out.shape == image.shape and out.dtype == np.uint8
    assert not np.array_equal(out[0, 0], out[-1, -1])  # hot and cold pixels get different colours
    np.testing.assert_array_equal(overlay(image, heat, alpha=0.0), image)
    assert overlay(image, heat, alpha=1.0)[0, 0].tolist() == [128, 0, 0]  # jet at 1.0 is dark red
    assert overlay(image[..., 0], np.ones((5, 5)), alpha=0.5).shape == (20, 30, 3)  # grey image, small heatmap
    with pytest.raises(ValueError):
        overlay(image, heat, alpha=1.5)


# --- figures ----------------------------------------------------------------------------------------


def png_size(data: bytes) -> tuple[int, int]:
    assert isinstance(data, bytes) and data[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(data) < 2_000_000
    with Image.open(io.BytesIO(data)) as image:
        assert image.format == "PNG"
        image.load()
        width, height = image.size
    assert 100 <= width <= 4000 and 50 <= height <= 4000, (width, height)
    return width, height


RNG = np.random.default_rng(0)
IMAGES = RNG.integers(0, 256, (12, 24, 24, 3), dtype=np.uint8)
Y_TRUE = np.array([0, 1, 2, 0, 1, 2, 0, 1, 2, 0, 1, 2])
Y_PRED = np.array([0, 2, 2, 1, 1, 2, 0, 1, 0, 0, 1, 2])
CONF = np.array([0.9, 0.55, 0.8, 0.95, 0.7, 0.6, 0.99, 0.5, 0.75, 0.9, 0.8, 0.7])
NAMES = ["cat", "dog", "a class with a very long name"]
CONFUSION = np.array([[3, 1, 0], [0, 3, 1], [1, 0, 3]])


def test_the_selections_behind_the_figures():
    assert plots.top_misclassified(Y_TRUE, Y_PRED, CONF).tolist() == [3, 8, 1]  # 0.95, 0.75, 0.55
    assert plots.top_misclassified(Y_TRUE, Y_PRED, CONF, max_items=1).tolist() == [3]
    assert plots.top_misclassified(Y_TRUE, Y_TRUE, CONF).tolist() == []
    confusion = np.array([[5, 2, 0], [7, 1, 3], [0, 2, 9]])
    assert plots.confused_pairs(confusion, top=3) == [(1, 0, 7), (1, 2, 3), (0, 1, 2)]
    assert plots.confused_pairs(np.eye(3, dtype=int)) == []


@pytest.mark.parametrize(
    "name, make",
    [
        ("misclassified_grid", lambda: plots.misclassified_grid(IMAGES, Y_TRUE, Y_PRED, CONF, NAMES)),
        (
            "misclassified_grid grey",
            lambda: plots.misclassified_grid(IMAGES[..., 0], Y_TRUE, Y_PRED, CONF, NAMES, max_items=2),
        ),
        ("confused_pairs_chart", lambda: plots.confused_pairs_chart(CONFUSION, NAMES)),
        (
            "per_class_accuracy_chart",
            lambda: plots.per_class_accuracy_chart({"cat": 0.75, "dog": 0.5, "fox": float("nan")}),
        ),
        (
            "per_class_accuracy_chart many",
            lambda: plots.per_class_accuracy_chart({f"class {i}": i / 300 for i in range(300)}),
        ),
        (
            "reliability_diagram",
            lambda: plots.reliability_diagram(
                [np.nan, 0.15, 0.33, 0.55, 0.71, 0.93], [np.nan, 0.1, 0.3, 0.6, 0.7, 0.97], [0, 3, 5, 8, 20, 200], 0.021
            ),
        ),
        # the shapes imgclf.evaluate.metrics produces: None for classes without test images and empty bins
        ("per_class_accuracy_chart none", lambda: plots.per_class_accuracy_chart({"cat": 1.0, "dog": None})),
        (
            "reliability_diagram none",
            lambda: plots.reliability_diagram(
                [None, 0.62, 0.9], [None, 0.5, 0.95], [0, 4, 30], None, bin_edges=[0.0, 1 / 3, 2 / 3, 1.0]
            ),
        ),
        (
            "gradcam_grid",
            lambda: plots.gradcam_grid(
                IMAGES[:5], RNG.random((5, 24, 24)), [f"cat {chr(0x2192)} dog (0.9{i})" for i in range(5)]
            ),
        ),
    ],
)
def test_each_figure_is_a_png_of_a_reasonable_size(name, make):
    width, height = png_size(make())
    assert width >= 250 and height >= 150, (name, width, height)


@pytest.mark.parametrize(
    "make",
    [
        lambda: plots.misclassified_grid(IMAGES, Y_TRUE, Y_TRUE, CONF, NAMES),  # nothing misclassified
        lambda: plots.misclassified_grid(IMAGES[:0], [], [], [], NAMES),
        lambda: plots.confused_pairs_chart(np.diag([4, 4, 4]), NAMES),
        lambda: plots.confused_pairs_chart(np.zeros((0, 0), dtype=int), []),
        lambda: plots.per_class_accuracy_chart({}),
        lambda: plots.reliability_diagram([], [], [], float("nan")),
        lambda: plots.reliability_diagram([np.nan] * 10, [np.nan] * 10, [0] * 10, 0.0),
        lambda: plots.gradcam_grid([], [], []),
    ],
)
def test_empty_inputs_give_a_small_png_that_says_so(make):
    _width, height = png_size(make())
    assert height < 150


def test_mismatched_inputs_are_refused():
    with pytest.raises(ValueError):
        plots.misclassified_grid(IMAGES[:3], Y_TRUE, Y_PRED, CONF, NAMES)
    with pytest.raises(ValueError):
        plots.reliability_diagram([0.5], [0.5, 0.6], [1], 0.0)
    with pytest.raises(ValueError):
        plots.gradcam_grid(IMAGES[:2], RNG.random((3, 24, 24)), None)


def test_gradcam_grid_of_the_toy_models_mistakes_and_successes(trained):
    model, (images, labels, *_) = trained
    logits = model(SPEC.normalize(torch.from_numpy(images[:6]).permute(0, 3, 1, 2))).detach()
    probs = logits.softmax(1).numpy()
    heat = grad_cam(model, images[:6], SPEC)
    titles = [f"{labels[i]} {chr(0x2192)} {probs[i].argmax()} ({probs[i].max():.2f})" for i in range(6)]
    assert png_size(plots.gradcam_grid(images[:6], heat, titles))[0] > 500
    assert plots.png_data_uri(b"\x89PNG").startswith("data:image/png;base64,")


def test_plots_never_import_pyplot_or_torch():
    code = (
        "import sys, numpy as np\n"
        "from imgclf.evaluate import plots\n"
        "plots.per_class_accuracy_chart({'a': 1.0}); plots.confused_pairs_chart([[1, 1], [0, 1]], ['a', 'b'])\n"
        "plots.reliability_diagram([0.5], [0.4], [3], 0.1); plots.message_png('x')\n"
        "plots.misclassified_grid(np.zeros((2, 8, 8, 3), np.uint8), [0, 1], [1, 1], [0.9, 0.8], ['a', 'b'])\n"
        "bad = [m for m in ('matplotlib.pyplot', 'torch') if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    root = Path(__file__).resolve().parents[1]
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=root)
    assert done.returncode == 0, done.stderr[-2000:]
