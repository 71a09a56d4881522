"""The `imgclf` command's own behaviour: what it does before handing work to the library."""

from __future__ import annotations

import pytest

from imgclf.cli import main


def test_serve_refuses_a_bundle_without_onnx_and_says_how_to_export(small_model, tmp_path):
    trained, _ = small_model
    bundle = trained.save(tmp_path / "bundle")  # what `imgclf train` writes: weights and spec, no ONNX
    with pytest.raises(SystemExit, match=r"holds no model\.onnx to serve.*imgclf export .*bundle --out .*bundle"):
        main(["serve", "--model", str(bundle)])
    with pytest.raises(SystemExit, match="does not exist"):
        main(["serve", "--model", str(tmp_path / "nowhere")])
    (tmp_path / "notes.txt").write_text("not a model")
    with pytest.raises(SystemExit, match=r"notes\.txt is not an \.onnx file"):
        main(["serve", "--model", str(tmp_path / "notes.txt")])


def test_data_that_cannot_be_read_is_a_clear_error_not_a_traceback(tmp_path):
    with pytest.raises(SystemExit, match=r"^imgclf train: data source .*nowhere does not exist$"):
        main(["train", str(tmp_path / "nowhere"), "--out", str(tmp_path / "bundle")])


def test_a_setting_the_config_refuses_is_named_not_a_traceback(tmp_path):
    for flag, value in (("--epochs", "many"), ("--lr", "guess"), ("--image-size", "4")):
        with pytest.raises(
            SystemExit, match=rf"^imgclf train: \d validation errors? for TrainConfig\n{flag[2:].replace('-', '_')}"
        ):
            main(["train", str(tmp_path / "nowhere"), "--out", str(tmp_path / "bundle"), flag, value])


def test_train_records_its_data_so_export_needs_no_data_flag_and_the_bundle_then_serves(
    digits_dir, tmp_path, monkeypatch
):
    import json

    from imgclf.bundle import serving_model
    from imgclf.commands.serve import check_servable
    from imgclf.data.prepare import prepare_data
    from imgclf.data.split import SplitConfig
    from imgclf.export import exporter
    from imgclf.export.quantize import Int8Recipe
    from imgclf.models.trained import TrainedModel

    monkeypatch.setattr(exporter, "DEFAULT_CANDIDATES", (Int8Recipe(),))  # one recipe keeps the test short
    bundle = tmp_path / "bundle"
    train = ["train", str(digits_dir), "--out", str(bundle), "--arch", "resnet10t", "--no-pretrained"]
    assert main([*train, "--image-size", "32", "--batch-size", "32", "--epochs", "1", "--workers", "0"]) == 0
    info = TrainedModel.load(bundle).info
    assert info["data_source"] == str(digits_dir.resolve()) and info["split_config"] == SplitConfig().model_dump()

    assert main(["export", str(bundle), "--out", str(bundle)]) == 0  # no --data: the bundle says where it trained
    report = json.loads((bundle / "export_report.json").read_text())
    val = prepare_data(digits_dir, SplitConfig(**info["split_config"])).manifest.subset("val")
    assert report["eval_images"] == len(val) > 0
    assert serving_model(bundle) == ("model.int8.onnx" if report["serve"] == "int8" else "model.onnx")
    check_servable(bundle)  # what `imgclf serve --model <bundle>` checks before starting the server

    moved = digits_dir.parent / "moved_away"
    digits_dir.rename(moved)  # the recorded source is gone: the command says so and what to pass
    try:
        with pytest.raises(SystemExit, match=r"^imgclf prune: .*the source the bundle records\); pass --data"):
            main(["prune", str(bundle), "--out", str(tmp_path / "pruned")])
    finally:
        moved.rename(digits_dir)
