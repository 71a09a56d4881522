"""The service's start-time settings from IMGCLF_* variables. Decode caps: SERVING_LIMITS by default, any
value within training's caps accepted, anything else refused at start with the variable named; batching
settings refused the same way."""

from __future__ import annotations

import io
import os
import subprocess
import sys

import pytest
from PIL import Image

from conftest import ROOT
from imgclf.data.decode import SERVING_LIMITS, DecodeLimits, ImageRejected, open_image
from imgclf.serving import deployment
from imgclf.serving.guard_config import GuardConfigError, decode_limits_from_env


def png(width: int, height: int) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), (90, 30, 200)).save(out, "PNG")
    return out.getvalue()


def test_no_variables_give_the_serving_limits():
    assert decode_limits_from_env({}) == SERVING_LIMITS


def test_stricter_and_looser_values_within_training_caps_are_taken():
    strict = decode_limits_from_env(
        {"IMGCLF_MAX_PIXELS": "1000000", "IMGCLF_MAX_SIDE": " 100 ", "IMGCLF_MIN_SIDE": "16"}
    )
    assert strict == DecodeLimits(max_pixels=1_000_000, max_side=100, min_side=16, max_aspect=SERVING_LIMITS.max_aspect)
    open_image(png(150, 40), limits=SERVING_LIMITS)
    with pytest.raises(ImageRejected) as caught:
        open_image(png(150, 40), limits=strict)
    assert caught.value.reason == "too_large"
    loose = decode_limits_from_env(
        {"IMGCLF_MAX_PIXELS": "40000000", "IMGCLF_MAX_SIDE": "20000", "IMGCLF_MAX_ASPECT": "50"}
    )
    assert (loose.max_pixels, loose.max_side, loose.max_aspect) == (40_000_000, 20_000, 50.0)
    open_image(png(300, 8), limits=loose)  # 37.5:1, refused by SERVING_LIMITS' 20:1
    with pytest.raises(ImageRejected, match="extreme_aspect_ratio"):
        open_image(png(300, 8), limits=SERVING_LIMITS)


@pytest.mark.parametrize(
    ("environ", "named", "why"),
    [
        ({"IMGCLF_MAX_PIXELS": "lots"}, "IMGCLF_MAX_PIXELS", "integer"),
        ({"IMGCLF_MAX_PIXELS": "40000001"}, "IMGCLF_MAX_PIXELS", "training's cap"),
        ({"IMGCLF_MAX_SIDE": "20001"}, "IMGCLF_MAX_SIDE", "training's cap"),
        ({"IMGCLF_MIN_SIDE": "4"}, "IMGCLF_MIN_SIDE", "training's minimum"),
        ({"IMGCLF_MAX_ASPECT": "0.5"}, "IMGCLF_MAX_ASPECT", "greater than or equal to 1"),
        ({"IMGCLF_MAX_ASPECT": "nan"}, "IMGCLF_MAX_ASPECT", ""),
        ({"IMGCLF_MAX_SIDE": "10", "IMGCLF_MIN_SIDE": "12"}, "IMGCLF_MAX_SIDE", "below IMGCLF_MIN_SIDE"),
        ({"IMGCLF_MIN_SIDE": "5000", "IMGCLF_MAX_PIXELS": "1000000"}, "IMGCLF_MIN_SIDE", "no image would pass"),
    ],
)
def test_bad_values_are_refused_naming_the_variable(environ, named, why):
    with pytest.raises(GuardConfigError) as caught:
        decode_limits_from_env(environ)
    assert named in str(caught.value) and why in str(caught.value)


def test_serve_command_refuses_bad_decode_settings(monkeypatch):
    monkeypatch.setenv("IMGCLF_MAX_SIDE", "big")
    with pytest.raises(GuardConfigError, match="IMGCLF_MAX_SIDE"):
        deployment.serve_command("/tmp/model.onnx", "1", "127.0.0.1", 3000)


def test_the_container_preflight_checks_them():
    env = {**os.environ, "IMGCLF_MAX_PIXELS": "99999999999"}
    done = subprocess.run(
        [sys.executable, "-m", "imgclf.serving.guard_config"], env=env, cwd=ROOT, capture_output=True, text=True
    )
    assert done.returncode == 1
    assert "IMGCLF_MAX_PIXELS" in done.stderr and "training's cap" in done.stderr and "Traceback" not in done.stderr


def test_bad_batching_settings_stop_a_server_before_it_starts(monkeypatch):
    monkeypatch.setenv("IMGCLF_MAX_BATCH_SIZE", "0")
    with pytest.raises(GuardConfigError, match=r"IMGCLF_MAX_BATCH_SIZE: .*greater than or equal to 1"):
        deployment.serve_command("/tmp/model.onnx", "1", "127.0.0.1", 3000)
    env = {**os.environ, "IMGCLF_MAX_LATENCY_MS": "soon"}
    done = subprocess.run(
        [sys.executable, "-m", "imgclf.serving.guard_config"], env=env, cwd=ROOT, capture_output=True, text=True
    )
    assert done.returncode == 1 and "IMGCLF_MAX_LATENCY_MS" in done.stderr and "Traceback" not in done.stderr
