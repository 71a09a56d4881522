"""Train/val/test split without leakage: stratified by label, seeded, and whole clusters at a time.

A cluster is every row that must share a split: the same `group` value (one patient, one product, one
video), the same file bytes, or a near-duplicate picture (64-bit perceptual hashes within
`near_duplicate_threshold` bits, see `imgclf.data.phash`). Without that, a re-saved or brightened copy
of a training image can sit in test and inflate the test score.

Each class gets a quota per split (round(n * fraction), train keeps at least one image). Clusters are
then placed largest first, each in the split whose quotas it overflows least (ties: the split with the
most room left, relative to its quota). Singletons fill the quotas exactly, so data without groups or
duplicates is split exactly as stratified as before. A multi-label row ("cat|outdoor") counts toward
each of its classes' quotas, which stratifies every class approximately. Rows are put in a canonical
order (sha256, path) and shuffled with the seed, so the result depends on the seed and the data, never
on file order.

A manifest that already has a `split` column (a source that came split) keeps it as given; rows left
empty there are assigned around the given ones, and a near-duplicate across the given splits is
reported (`clusters_across_splits`), not moved.
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, model_validator

from imgclf.data.decode import ImageRejected
from imgclf.data.manifest import DatasetManifest
from imgclf.data.phash import MAX_THRESHOLD, near_duplicate_pairs, phash_files

SPLITS = ("train", "val", "test")
DEFAULT_GROUP_COLUMN = "group"


class SplitConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    train: float = Field(0.70, gt=0, lt=1)
    val: float = Field(0.15, gt=0, lt=1)
    test: float = Field(0.15, gt=0, lt=1)
    seed: int = 42
    group_column: str | None = Field(
        DEFAULT_GROUP_COLUMN,
        description="rows with the same value here share a split; the default `group` is used when the manifest "
        "has it, any other name must be a manifest column; null: ignore",
    )
    near_duplicate_threshold: int | None = Field(
        4,
        ge=0,
        le=MAX_THRESHOLD,
        description="images whose 64-bit pHashes differ in at most this many bits share a split; "
        "0: identical pHash only; null: off (no decoding)",
    )

    @model_validator(mode="after")
    def _fractions_sum_to_one(self) -> SplitConfig:
        total = self.train + self.val + self.test
        if abs(total - 1.0) > 1e-6:
            raise ValueError(f"split fractions train+val+test must sum to 1, got {total:.3f}")
        return self


def stratified_split(manifest: DatasetManifest, config: SplitConfig, workers: int | None = None) -> DatasetManifest:
    """Return the manifest with `split` (train/val/test) and `split_cluster` columns, plus `phash`
    (16 hex digits) when near-duplicate detection is on.

    `split_cluster` numbers the rows that were kept together, so the assignment can be audited.
    An existing `phash` column is reused instead of decoding the files again.
    """
    records = manifest.records.copy()
    if records.empty:
        raise ValueError("cannot split an empty manifest")
    canon = np.lexsort((records["path"].astype(str).to_numpy(), records["sha256"].astype(str).to_numpy()))
    rows = records.iloc[canon]

    edges = [_same_value_edges(rows["sha256"].astype(str).where(rows["sha256"].astype(str) != ""))]
    if config.group_column is not None:
        if config.group_column in rows.columns:
            edges.append(_same_value_edges(rows[config.group_column]))
        elif config.group_column != DEFAULT_GROUP_COLUMN:
            raise ValueError(
                f"group_column {config.group_column!r} is not a manifest column; columns: {list(rows.columns)}"
            )
    if config.near_duplicate_threshold is not None:
        hashes = _phashes(manifest, workers)
        records["phash"] = [f"{int(h):016x}" for h in hashes]
        edges.append(near_duplicate_pairs(hashes[canon], config.near_duplicate_threshold))
    cluster = _connected_components(len(rows), np.concatenate(edges))

    given = _given_splits(rows)
    assigned = _assign(DatasetManifest(manifest.root, rows).label_sets(), cluster, given, config)
    records.loc[rows.index, "split"] = [SPLITS[s] for s in assigned]
    records.loc[rows.index, "split_cluster"] = cluster
    records["split_cluster"] = records["split_cluster"].astype(np.int64)
    return DatasetManifest(manifest.root, records)


def split_report(manifest: DatasetManifest) -> dict:
    """Counts per split and per class per split, and how rows were clustered (for step metadata)."""
    records = manifest.records
    counts = records["split"].value_counts()
    report: dict = {name: int(counts.get(name, 0)) for name in SPLITS}
    # multi-label: a row counts towards each of its classes
    classes = pd.DataFrame({"label": manifest.label_sets(), "split": records["split"]}).explode("label")
    per_class = (
        classes.groupby(["label", "split"]).size().unstack(fill_value=0).reindex(columns=list(SPLITS), fill_value=0)
    )
    report["per_class"] = {str(label): {s: int(n) for s, n in row.items()} for label, row in per_class.iterrows()}
    if "split_cluster" in records.columns:
        by_cluster = records.groupby("split_cluster")
        sizes = by_cluster.size()
        report["clusters"] = len(sizes)
        report["rows_in_shared_clusters"] = int(sizes[sizes > 1].sum())
        report["largest_cluster"] = int(sizes.max())
        report["clusters_across_splits"] = int((by_cluster["split"].nunique() > 1).sum())
        report["clusters_with_mixed_labels"] = int((by_cluster["label"].nunique() > 1).sum())
    return report


def _phashes(manifest: DatasetManifest, workers: int | None) -> np.ndarray:
    if "phash" in manifest.records.columns and manifest.records["phash"].notna().all():
        return np.array([int(h, 16) for h in manifest.records["phash"]], dtype=np.uint64)
    try:
        return phash_files(manifest.absolute_paths(), workers)
    except ImageRejected as exc:
        raise ValueError(
            f"near-duplicate detection needs decodable images (split a validated manifest): {exc}"
        ) from exc


def _same_value_edges(values: pd.Series) -> np.ndarray:
    """Edges (first row with the value, row) joining rows with equal non-null values."""
    codes, _ = pd.factorize(values)
    rows = np.flatnonzero(codes >= 0)
    codes = codes[rows]
    first = np.full(codes.max() + 1 if len(codes) else 0, len(values), dtype=np.int64)
    np.minimum.at(first, codes, rows)
    return np.stack([first[codes], rows], axis=1)


def _connected_components(n: int, edges: np.ndarray) -> np.ndarray:
    """Union-find; cluster ids numbered by each cluster's first row, so they are deterministic."""
    parent = list(range(n))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for a, b in edges.tolist():
        ra, rb = root(a), root(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    roots = np.array([root(i) for i in range(n)])
    return np.unique(roots, return_inverse=True)[1].astype(np.int64)


def _given_splits(rows: pd.DataFrame) -> np.ndarray:
    """Index into SPLITS per row from an existing `split` column, -1 where none is given."""
    if "split" not in rows.columns:
        return np.full(len(rows), -1, dtype=np.int64)
    values = rows["split"].astype("string").str.strip().fillna("")
    unknown = sorted(set(values) - set(SPLITS) - {""})
    if unknown:
        raise ValueError(f"the manifest's split column has values {unknown}; expected {list(SPLITS)} or empty")
    return values.map({name: i for i, name in enumerate(SPLITS)}).fillna(-1).to_numpy(dtype=np.int64)


def _quotas(sizes: list[int], config: SplitConfig) -> list[list[int]]:
    """Images per class per split: round(n * fraction) for val and test, the rest in train (at least one)."""
    quotas = []
    for n in sizes:
        n_test = min(round(n * config.test), n - 1)
        n_val = min(round(n * config.val), n - 1 - n_test)
        quotas.append([n - n_test - n_val, n_val, n_test])
    return quotas


def _placement_cost(per_class, quota: list[list[int]], count: list[list[int]], s: int) -> tuple[int, float]:
    """(images over the class quotas of split s, minus the room left there relative to the quotas)."""
    overflow = sum(max(k - (quota[cls][s] - count[cls][s]), 0) for cls, k in per_class)
    room = sum(k * (quota[cls][s] - count[cls][s]) / max(quota[cls][s], 1) for cls, k in per_class)
    return overflow, -room


def _assign(label_sets: list[list[str]], cluster: np.ndarray, given: np.ndarray, config: SplitConfig) -> np.ndarray:
    """Split index per row. A multi-label row counts toward each of its classes' quotas."""
    index = {name: i for i, name in enumerate(sorted({name for labels in label_sets for name in labels}))}
    row_classes = [[index[name] for name in labels] for labels in label_sets]
    sizes = Counter(c for classes in row_classes for c in classes)
    quota = _quotas([sizes[c] for c in range(len(index))], config)
    count = [[0] * len(SPLITS) for _ in index]
    split = given.copy()

    members: dict[int, list[int]] = {}
    for row, c in enumerate(cluster.tolist()):
        members.setdefault(c, []).append(row)
    free = []
    for c, rows in members.items():
        fixed = [int(given[r]) for r in rows if given[r] >= 0]
        if fixed:  # follow the given split (the most common one if the cluster straddles several)
            target = Counter(fixed).most_common(1)[0][0]
            for r in rows:
                if split[r] < 0:
                    split[r] = target
        else:
            free.append(c)
    for r, s in enumerate(split.tolist()):
        if s >= 0:
            for cls in row_classes[r]:
                count[cls][s] += 1

    rng = np.random.default_rng(config.seed)
    shuffled = [free[i] for i in rng.permutation(len(free))]
    for c in sorted(shuffled, key=lambda c: -len(members[c])):  # stable: equal sizes keep the seeded order
        per_class = Counter(cls for r in members[c] for cls in row_classes[r]).items()
        costs = [_placement_cost(per_class, quota, count, s) for s in range(len(SPLITS))]
        best = costs.index(min(costs))  # ties: the first split in SPLITS order
        for cls, k in per_class:
            count[cls][best] += k
        for r in members[c]:
            split[r] = best
    return split
