"""The 224-px export in bounded memory: INT8 calibration once held every activation of every
calibration image, and a 224-px export took a 24 GB machine down. Here it runs in a subprocess
whose data segment the test caps itself, so a regression fails this test instead of the machine."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

DATA_LIMIT_BYTES = 3 * 2**30

EXPORT_UNDER_A_LIMIT = textwrap.dedent(
    """
    import json, resource, sys
    resource.setrlimit(resource.RLIMIT_DATA, (int(sys.argv[1]), int(sys.argv[1])))
    import numpy as np
    from imgclf.export.exporter import ExportConfig, ExportImages, export_checked
    from imgclf.export.quantize import DEFAULT_RECIPE, Int8Recipe
    from imgclf.latency import LatencyReport
    from imgclf.models.factory import create
    from imgclf.models.trained import TrainedModel
    from imgclf.preprocess import PreprocessSpec

    network, mean, std = create("tf_efficientnet_lite0", 10, pretrained=False, image_size=224)
    spec = PreprocessSpec(image_size=224, mean=mean, std=std)
    trained = TrainedModel("tf_efficientnet_lite0", [str(i) for i in range(10)], spec, network.state_dict())
    rng = np.random.default_rng(0)
    images = ExportImages(
        calibration=rng.integers(0, 256, (64, 224, 224, 3), dtype=np.uint8),
        eval_images=rng.integers(0, 256, (16, 224, 224, 3), dtype=np.uint8),
        eval_labels=rng.integers(0, 10, 16),
    )
    # the histogram calibrators hold the most; timing is not what this checks
    config = ExportConfig(candidates=[DEFAULT_RECIPE, Int8Recipe(calibration="Percentile")], rounds=1)
    report = LatencyReport(p50_ms=1.0, p95_ms=1.0, batch32_images_per_s=1.0, batch32_p50_ms=32.0)
    exported, search = export_checked(trained, images, config, measure=lambda label, run: report)
    print(json.dumps({t.recipe.name: t.error for t in search.trials}))
    """
)


@pytest.mark.slow
def test_a_224px_export_quantises_every_recipe_under_a_3_gib_data_limit():
    done = subprocess.run(
        [sys.executable, "-c", EXPORT_UNDER_A_LIMIT, str(DATA_LIMIT_BYTES)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    errors = json.loads(done.stdout.strip().splitlines()[-1])
    assert len(errors) == 2
    assert errors == dict.fromkeys(errors), f"a recipe failed under the memory limit: {errors}"
