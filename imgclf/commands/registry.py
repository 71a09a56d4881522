"""`imgclf promote`, `rollback`, `stages` and `summary`: the registry's stages from the command line.
Every move goes through `imgclf.registry.move_stage` (compare-and-set, audited, mirrored to ZenML) and the
services recorded for the stage follow it."""

from __future__ import annotations

import argparse

from imgclf import paths
from imgclf.stages import DATA_HASH_TAG, DATA_VERSION_TAG, DECISION_TAG, GATE_TAG

NOBODY = "none"  # --expect none: the stage must be empty


def promote(args: argparse.Namespace) -> int:
    """Score VERSION beside the stage's champion on VERSION's test images, apply the rules, move the stage."""
    from imgclf.promotion.promote import CURRENT, promote_version
    from imgclf.promotion.rules import PromotionRules
    from imgclf.promotion.scoring import TestImagesUnavailable

    expect = CURRENT if args.expect is None else (None if args.expect.lower() == NOBODY else args.expect)
    try:
        record = promote_version(
            args.model_name, args.version, args.to, PromotionRules(), expect, data_root=args.data_root
        )
    except (TestImagesUnavailable, FileNotFoundError) as exc:  # no test images; a holder that is no bundle
        raise SystemExit(f"imgclf promote: {exc}") from None
    print(record.to_markdown())
    if not record.moved:
        return 1
    return _follow(args.model_name, args.to, args.version)


def rollback(args: argparse.Namespace) -> int:
    """The stage back to its previous holder from the audit trail."""
    from imgclf.registry import rollback_stage
    from imgclf.stages import StageConflict, StageSyncError

    synced = True
    try:
        move = rollback_stage(args.model_name, args.stage, args.reason)
    except StageConflict as exc:
        raise SystemExit(f"imgclf rollback: {exc}") from None
    except StageSyncError as exc:  # MLflow moved: the services still follow, and the command fails
        print(f"WARNING: {exc}")
        move, synced = exc.moves[0], False
    print(f"{args.stage} of {args.model_name}: version {move.from_version} -> {move.to_version} (move {move.seq})")
    return _follow(args.model_name, args.stage, str(move.to_version)) or (0 if synced else 1)


def fetch(args: argparse.Namespace) -> int:
    """The version's bundle files directly in --out (what the serving image's `baked` target copies)."""
    import shutil
    import tempfile
    from pathlib import Path

    from imgclf.registry import fetch_bundle

    out = Path(args.out)
    if out.exists() and any(out.iterdir()):
        raise SystemExit(f"imgclf fetch: {out} is not empty; give a new or empty folder")
    with tempfile.TemporaryDirectory(prefix="imgclf-fetch-") as tmp:
        bundle, version = fetch_bundle(f"models:/{args.model_name}/{args.version}", tmp)
        shutil.copytree(bundle, out, dirs_exist_ok=True)
    print(f"version {version} of {args.model_name}: its bundle is in {out}")
    return 0


def stages(args: argparse.Namespace) -> int:
    """The stages table; `--holder STAGE` prints the holder's version alone (nothing when empty)."""
    from imgclf import registry

    name = args.model_name
    if args.sync:
        registry.sync_stage_mirrors(name)
    holders = registry.stage_holders(name)
    if args.holder:
        print(holders[args.holder] or "")
        return 0
    history = registry.stage_history(name)
    rows = []
    for stage, version in holders.items():  # since: the holder's last arrival (a rollback's, after one)
        move = next((m for m in reversed(history) if m.stage == stage and m.to_version == version), None)
        tags = registry.version_info(name, version).tags if version else {}
        rows.append(_stage_row(stage, version, move, tags))
    print(_markdown_table(["stage", "version", "since", "by", "test accuracy [95% CI]", "data version"], rows))
    problems = registry.stage_disagreements(name)
    print("\n" + ("; ".join(problems) + " (repair: imgclf stages --sync)" if problems else "ZenML's stages agree."))
    return 1 if problems else 0


def _stage_row(stage: str, version: str | None, move, tags: dict[str, str]) -> list[str]:
    if version is None:
        return [stage, "-", "-", "-", "-", "-"]
    accuracy = tags.get("test_accuracy", "-")
    if "test_accuracy_ci_low" in tags:
        accuracy += f" [{tags['test_accuracy_ci_low']}, {tags['test_accuracy_ci_high']}]"
    since, by = (move.at, move.by) if move is not None else ("-", "set outside imgclf")
    data = tags.get(DATA_VERSION_TAG) or "-"
    if tags.get(DATA_HASH_TAG):
        data += f" (manifest {tags[DATA_HASH_TAG][:12]})"
    return [stage, version, since, by, accuracy, data]


def _markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])


def _follow(name: str, stage: str, version: str) -> int:
    """Services recorded for the stage now serve its new holder; 1 (and why) when one could not."""
    from imgclf.serving.deployment import redeploy_stage

    try:
        for deployment in redeploy_stage(name, stage, version):
            print(f"the {stage} service at {deployment.url} now serves version {deployment.model_version}")
    except (RuntimeError, TimeoutError, OSError) as exc:
        print(f"WARNING: {stage} moved to version {version}, but its service did not follow: {exc}")
        return 1
    return 0


def summary(args: argparse.Namespace) -> int:
    """The latest registered version, its headline metrics, its promotion, and where its report and card are."""
    from imgclf import registry

    found = registry.version_info(args.model_name)
    if args.markdown:
        return _summary_markdown(args, found)
    print(f"\nRegistered models:/{found.name}/{found.version}  (MLflow run {found.run_id})")
    for key in ("test_accuracy", "test_macro_f1"):
        if key in found.tags:
            print(f"  {key} = {found.tags[key]}")
    for key, value in sorted(found.tags.items()):
        if key.startswith(DECISION_TAG):
            print(f"  promotion: {value}")
    reports = paths.reports_dir() / f"{found.name}-v{found.version}"
    for label, artifact in (("Evaluation report", "evaluation/report.html"), ("Model card", "model_card.md")):
        local = registry.download_run_file(found.run_id, artifact, reports)
        print(f"{label}: {local}" if local else f"{label}: not logged by run {found.run_id}")
    print(f"MLflow UI:      mlflow ui --backend-store-uri {registry.tracking_uri()}")
    print("ZenML dashboard: zenml login --local   (runs, artifacts and visualisations)")
    print("Stages:         imgclf stages")
    print("Serve it:       make serve   (production, else staging, else the latest version)")
    return 0


def _summary_markdown(args: argparse.Namespace, found) -> int:
    """For a CI job summary: headline metrics, the promotion decision and the stages table."""
    tags = found.tags
    print(f"## {found.name} version {found.version}\n")
    rows = [[key, tags[key]] for key in ("test_accuracy", "test_macro_f1", GATE_TAG) if key in tags]
    rows += [[key.removeprefix("imgclf."), v] for key, v in sorted(tags.items()) if key.startswith(DECISION_TAG)]
    print(_markdown_table(["", ""], rows) + "\n")
    return stages(argparse.Namespace(model_name=args.model_name, sync=False, holder=None))
