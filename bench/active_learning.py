"""Active learning on offline data: test accuracy against the number of labels when the next labels are
chosen by the queue's uncertainty signals (lowest margin, highest entropy) or at random.

    python bench/active_learning.py                          # digits and glyphs, 5 seeds (a few minutes)
    python bench/active_learning.py --datasets digits --seeds 0 1 2
    python bench/active_learning.py --json .state/bench-active-learning.json

Per data set and seed: a stratified split (30% test) of the set, the rest the unlabelled pool; a
labelled start of 2 images per class drawn with the seed; then rounds that each label one image per
class's worth more (10 digits, 36 glyphs; 4 times that after 20 rounds) from the pool, chosen by
the strategy, and refit, until the whole pool is labelled. Every strategy of a seed starts from
the same labelled images and is scored on the same test split. "Full" is the model fitted on the
whole pool; the target is its accuracy minus one point, and "labels to target" is the first count
at which a run reaches it (per seed; the median and range over seeds are printed).

The model is multinomial logistic regression, refitted from scratch every round: on the digits on
raw pixels (the 8x8 scans, 64 features, 0..1), which it classifies at 97%; on the glyphs on the
pooled ImageNet features of tf_efficientnet_lite0 (the offline weights the product fine-tunes),
PCA'd to 64 and standardised, because on the glyphs' pixels (rotated, sheared, inverted renders) a
linear model stays near chance (5% on 16x16 pixels, measured). Why not the fine-tuned network: the
question is the acquisition rule, not the model, and a model that refits in a fraction of a second
lets every round of every seed refit on two cores. Margin and entropy are those of the queue
(`imgclf.labelling.policy.uncertainty`, vectorised). This is a measurement: nothing is asserted.
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
from pathlib import Path

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split

STRATEGIES = ("random", "margin", "entropy")
FINE_ROUNDS = 20


def load(name: str, data_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    """Features (N, D) in 0..1 and integer targets."""
    if name == "digits":
        from sklearn.datasets import load_digits

        digits = load_digits()
        return digits.data / 16.0, digits.target
    from datasets import GLYPH_CLASSES, write_glyphs  # bench/datasets.py
    from PIL import Image

    folder = write_glyphs(data_dir)
    images, targets = [], []
    for k, char in enumerate(GLYPH_CLASSES):
        for path in sorted((folder / char).glob("*.png")):
            images.append(np.asarray(Image.open(path).convert("RGB")))
            targets.append(k)
    return glyph_features(np.stack(images)), np.asarray(targets)


def glyph_features(images: np.ndarray, dims: int = 64) -> np.ndarray:
    """tf_efficientnet_lite0's pooled ImageNet features (the offline weights the product trains from)
    at 64 px, reduced by PCA to `dims` and standardised. No labels are used: fitting the PCA on every
    image is what an unlabelled pool allows."""
    import torch
    from sklearn.decomposition import PCA
    from sklearn.preprocessing import StandardScaler

    from imgclf.models.factory import create

    model, mean, std = create("tf_efficientnet_lite0", num_classes=0, pretrained=True)
    model.eval()
    x = (torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255 - torch.tensor(mean)[:, None, None]) / torch.tensor(
        std
    )[:, None, None]
    with torch.no_grad():
        pooled = torch.cat([model(batch) for batch in x.split(256)]).numpy()
    return StandardScaler().fit_transform(PCA(dims, random_state=0).fit_transform(pooled))


def fit(x: np.ndarray, y: np.ndarray) -> LogisticRegression:
    model = LogisticRegression(C=1.0, max_iter=300, tol=1e-3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return model.fit(x, y)


def scores(model: LogisticRegression, x: np.ndarray, classes: int) -> np.ndarray:
    """Probabilities over every class (a class not yet labelled gets 0)."""
    probs = np.zeros((len(x), classes))
    probs[:, model.classes_] = model.predict_proba(x)
    return probs


def pick(strategy: str, probs: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """Indices (into the unlabelled rows) of the next k to label."""
    if strategy == "random":
        return rng.choice(len(probs), size=k, replace=False)
    if strategy == "margin":
        top2 = np.sort(probs, axis=1)[:, -2:]
        return np.argsort(top2[:, 1] - top2[:, 0], kind="stable")[:k]
    p = np.clip(probs, 1e-12, 1.0)
    entropy = -(p * np.log(p)).sum(1)
    return np.argsort(-entropy, kind="stable")[:k]


def curve(strategy: str, pool_x, pool_y, test_x, test_y, start: np.ndarray, step: int, seed: int):
    """[(labels, test accuracy)] from the start set to the whole pool: `step` labels a round for the
    first FINE_ROUNDS rounds, then 4 x `step` (the curves are flat there; it keeps the run short)."""
    classes = int(max(pool_y.max(), test_y.max())) + 1
    rng = np.random.default_rng(seed)
    labelled = np.zeros(len(pool_y), dtype=bool)
    labelled[start] = True
    points = []
    while True:
        model = fit(pool_x[labelled], pool_y[labelled])
        points.append((int(labelled.sum()), float(np.mean(model.predict(test_x) == test_y))))
        rest = np.flatnonzero(~labelled)
        if len(rest) == 0:
            return points
        k = min(step if len(points) <= FINE_ROUNDS else 4 * step, len(rest))
        labelled[rest[pick(strategy, scores(model, pool_x[rest], classes), k, rng)]] = True


def run_seed(x, y, seed: int, step: int) -> dict:
    pool_x, test_x, pool_y, test_y = train_test_split(x, y, test_size=0.3, stratify=y, random_state=seed)
    rng = np.random.default_rng(seed)
    start = np.concatenate([rng.choice(np.flatnonzero(pool_y == c), 2, replace=False) for c in np.unique(pool_y)])
    full = float(np.mean(fit(pool_x, pool_y).predict(test_x) == test_y))
    curves = {s: curve(s, pool_x, pool_y, test_x, test_y, start, step, seed) for s in STRATEGIES}
    return {"seed": seed, "pool": len(pool_y), "full": full, "curves": curves}


def labels_to(points: list[tuple[int, float]], target: float) -> int | None:
    return next((n for n, acc in points if acc >= target), None)


def report(name: str, runs: list[dict], checkpoints: list[int]) -> None:
    full = np.array([r["full"] for r in runs])
    print(f"\n## {name}: pool {runs[0]['pool']} images, {len(runs)} seeds; full-pool accuracy {full.mean():.4f} "
          f"(± {full.std():.4f}); target = full - 0.01 per seed")  # fmt: skip
    print("\n| labels | " + " | ".join(STRATEGIES) + " |\n|---|" + "---|" * len(STRATEGIES))
    for n in checkpoints:
        cells = []
        for s in STRATEGIES:
            accs = [dict(r["curves"][s]).get(n) for r in runs]
            accs = [a for a in accs if a is not None]
            cells.append(f"{np.mean(accs):.4f} ± {np.std(accs):.4f}" if accs else "-")
        print(f"| {n} | " + " | ".join(cells) + " |")
    print(
        "\n| strategy | labels to reach full - 1 point: median [min, max] | share of the pool | runs that reached it |"
    )
    print("|---|---|---|---|")
    needed = {}
    for s in STRATEGIES:
        hits = [labels_to(r["curves"][s], r["full"] - 0.01) for r in runs]
        got = [h for h in hits if h is not None]
        needed[s] = float(np.median(got)) if got else None
        spread = f"{np.median(got):.0f} [{min(got)}, {max(got)}]" if got else "not within the budget"
        share = f"{np.median(got) / runs[0]['pool']:.0%}" if got else "-"
        print(f"| {s} | {spread} | {share} | {len(got)}/{len(runs)} |")
    if needed["random"] and needed["margin"]:
        print(f"\nrandom needs {needed['random'] / needed['margin']:.2f}x the labels of margin sampling (medians)")


STEPS = {"digits": 10, "glyphs": 36}  # labels a round: one per class


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", nargs="+", default=list(STEPS), choices=list(STEPS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2, 3, 4])
    parser.add_argument("--data-dir", default=".state/bench-data", help="where bench/datasets.py writes glyphs")
    parser.add_argument("--json", help="also write every curve here")
    args = parser.parse_args()
    everything = {}
    for name in args.datasets:
        started = time.perf_counter()
        x, y = load(name, Path(args.data_dir))
        step = STEPS[name]
        runs = [run_seed(x, y, seed, step) for seed in args.seeds]
        counts = [n for n, _ in runs[0]["curves"]["random"]]
        fine, coarse = counts[: FINE_ROUNDS + 1 : 4], counts[FINE_ROUNDS + 3 :: 3]
        checkpoints = sorted({*fine, *coarse, counts[-1]})
        report(f"{name} ({len(y)} images, {len(np.unique(y))} classes, +{step} labels a round)", runs, checkpoints)
        print(f"({time.perf_counter() - started:.0f} s)")
        everything[name] = runs
    if args.json:
        Path(args.json).write_text(json.dumps(everything))


if __name__ == "__main__":
    main()
