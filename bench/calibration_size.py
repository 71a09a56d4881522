"""INT8 calibration sample size: what fewer calibration images cost in agreement with fp32, and what
more cost in time, on a trained bundle (the 224-px case is the one the default sample size is for).

    imgclf train data/digits --image-size 224 --epochs 3 --out runs/digits224
    python bench/calibration_size.py runs/digits224                       # 64..1024 images
    python bench/calibration_size.py runs/digits224 --sizes 128 256 --recipes minmax

For each recipe (the default one, per-channel min-max, and the percentile one the search also
tries) and each sample size: quantise the bundle's fp32 ONNX calibrated on that many training
images (the seeded sample `imgclf export` and the quantize step draw), then report on the
untouched test split the INT8 model's top-1 agreement with fp32 and its accuracy, and the
quantisation's wall time and peak resident memory (each run in a fresh process, so peaks do not
mix). The row marked "default" is the size the product picks for the bundle's image size
(`calibration_sample_size`). This is a measurement: nothing is asserted.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

RECIPES = {"minmax": {}, "percentile": {"calibration": "Percentile"}}


def measure(bundle: str, size: int, recipe: str) -> dict:
    """One quantisation, in this process: agreement and accuracy on test, seconds, peak RSS."""
    import numpy as np

    from imgclf.commands.inputs import model_split
    from imgclf.data.decoded import DecodedSplits
    from imgclf.export.exporter import calibration_sample
    from imgclf.export.onnx import export_onnx, onnx_logits
    from imgclf.export.quantize import Int8Recipe, quantize_int8
    from imgclf.models.trained import TrainedModel

    trained = TrainedModel.load(bundle)
    data = DecodedSplits(model_split(trained, None, None, "bench", "calibration"), trained.preprocess)
    spec, test = trained.preprocess, data.test
    fp32 = export_onnx(trained)
    calibration = calibration_sample(data.train.images, size)
    started = time.perf_counter()
    int8 = quantize_int8(fp32, calibration, spec, Int8Recipe(**RECIPES[recipe]))
    seconds = time.perf_counter() - started
    reference = onnx_logits(fp32, test.images, spec).argmax(1)
    answers = onnx_logits(int8, test.images, spec).argmax(1)
    return {
        "recipe": recipe,
        "images": len(calibration),
        "agreement": float(np.mean(answers == reference)),
        "int8_accuracy": float(np.mean(answers == test.targets)),
        "fp32_accuracy": float(np.mean(reference == test.targets)),
        "seconds": seconds,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "test_images": len(test),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bundle", help="a bundle folder written by imgclf train")
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 128, 256, 512, 1024])
    parser.add_argument("--recipes", nargs="+", choices=sorted(RECIPES), default=sorted(RECIPES))
    parser.add_argument("--json", help="write the rows here")
    parser.add_argument("--child", nargs=2, metavar=("SIZE", "RECIPE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args.bundle, int(args.child[0]), args.child[1])))
        return

    from imgclf.export.exporter import calibration_sample_size
    from imgclf.models.trained import TrainedModel

    default = calibration_sample_size(TrainedModel.load(args.bundle).preprocess.image_size)
    rows = []
    print(
        "| recipe | calibration images | top-1 agreement with fp32 | INT8 accuracy | fp32 accuracy | s | peak RSS MB |"
    )
    print("|---|---|---|---|---|---|---|")
    for recipe in args.recipes:
        for size in sorted(set(args.sizes) | {default}):
            out = subprocess.run(
                [sys.executable, __file__, args.bundle, "--child", str(size), recipe],
                capture_output=True,
                text=True,
                check=True,
            )
            rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
            print_row(rows[-1], default)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)


def print_row(row: dict, default: int) -> None:
    images = f"{row['images']}" + (" (default)" if row["images"] == default else "")
    print(
        f"| {row['recipe']} | {images} | {row['agreement']:.4f} | {row['int8_accuracy']:.4f} "
        f"| {row['fp32_accuracy']:.4f} | {row['seconds']:.1f} | {row['peak_rss_mb']:.0f} |",
        flush=True,
    )


if __name__ == "__main__":
    main()
