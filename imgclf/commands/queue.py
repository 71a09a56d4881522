"""`imgclf queue list|export|import|purge`: the active-learning queue from the command line (the
service fills it; a person labels what it holds; the labels join the data folder)."""

from __future__ import annotations

import argparse
from collections import Counter


def _queue(args: argparse.Namespace):
    from imgclf.labelling.queue import LabelQueue

    return LabelQueue(args.folder)


def _fail(exc: Exception) -> SystemExit:
    return SystemExit(f"imgclf queue: {exc}")


def list_items(args: argparse.Namespace) -> int:
    """A table of the queued items, oldest first, then the totals per predicted class."""
    queue = _queue(args)
    items = queue.items()
    if not items:
        print(f"The queue in {queue.folder} is empty.")
        return 0
    print("| sha256 | predicted | confidence | margin | entropy | model version | queued at | bytes |")
    print("|---|---|---|---|---|---|---|---|")
    for it in items[-args.limit :] if args.limit else items:
        print(
            f"| {it.sha256[:12]} | {it.predicted} | {it.confidence:.3f} | {it.margin:.3f} | {it.entropy:.3f} | "
            f"{it.model_version} | {it.queued_iso} | {it.size_bytes} |"
        )
    classes = ", ".join(f"{label}: {n}" for label, n in sorted(Counter(i.predicted for i in items).items()))
    age_days = (queue.clock() - items[0].queued_at) / 86400
    print(
        f"\n{len(items)} items, {sum(i.size_bytes for i in items) / 1e6:.1f} MB, oldest {age_days:.1f} days "
        f"(kept at most {queue.policy.max_age_days:g}); per predicted class: {classes}"
    )
    return 0


def export(args: argparse.Namespace) -> int:
    queue = _queue(args)
    csv = args.format == "csv"
    count = queue.export_csv(args.out) if csv else queue.export_label_studio(args.out, args.url_prefix)
    print(f"{count} items -> {args.out}")
    return 0


def import_labels(args: argparse.Namespace) -> int:
    from imgclf.labelling.records import QueueError

    try:
        report = _queue(args).import_labels(args.file, args.data, args.labelled_by, args.new_class)
    except QueueError as exc:
        raise _fail(exc) from None
    print(
        f"{len(report.imported)} labelled images -> {args.data} (provenance in {args.data}/.provenance); "
        f"{report.unlabelled} without a label stay queued. Next: dvc add {args.data}"
    )
    return 0


def purge(args: argparse.Namespace) -> int:
    from imgclf.labelling.records import QueueError

    try:
        removed = _queue(args).purge(older_than_days=args.older_than, all=args.all)
    except QueueError as exc:
        raise _fail(exc) from None
    print(f"{removed} items deleted")
    return 0


def add_parser(sub) -> None:
    """`imgclf queue ...` and its four actions."""
    from imgclf.labelling.exports import LOCAL_FILES

    p = sub.add_parser("queue", help="the active-learning queue: list, export for labelling, import labels, purge")
    p.add_argument("--folder", help="the queue folder (default: label-queue/ in the state directory)")
    actions = p.add_subparsers(dest="action", required=True)
    a = actions.add_parser("list", help="the queued items, oldest first, and totals")
    a.add_argument("--limit", type=int, default=0, help="show only the newest N rows (0: all)")
    a.set_defaults(func=list_items)
    a = actions.add_parser("export", help="the queue as a CSV to fill in, or Label Studio tasks")
    a.add_argument("--format", choices=["csv", "labelstudio"], default="csv")
    a.add_argument("--out", required=True)
    a.add_argument(
        "--url-prefix",
        default=LOCAL_FILES,
        help="Label Studio image URL before images/<sha256>.png (default: local files)",
    )
    a.set_defaults(func=export)
    a = actions.add_parser("import", help="labels (CSV or Label Studio JSON export) -> the data folder")
    a.add_argument("file", help="the exported CSV with its label column filled, or a Label Studio JSON export")
    a.add_argument("--data", required=True, help="the data folder (a folder per class) the images join")
    a.add_argument("--labelled-by", default="", help="who labelled, when the file does not say")
    a.add_argument("--new-class", action="store_true", help="allow labels that are no class yet")
    a.set_defaults(func=import_labels)
    a = actions.add_parser("purge", help="delete items (default: those past the age limit)")
    which = a.add_mutually_exclusive_group()
    which.add_argument("--older-than", type=float, metavar="DAYS")
    which.add_argument("--all", action="store_true")
    a.set_defaults(func=purge)
