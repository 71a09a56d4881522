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
