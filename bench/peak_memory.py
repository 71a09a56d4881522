"""Peak memory and time of any command and the processes it starts, measured as bench/memory_scale.py
measures a step (bench/common.py run_tree): e.g. the 224-px train and export a user runs.

    python bench/peak_memory.py -- imgclf train data/digits --image-size 224 --epochs 3 --out runs/digits224
    python bench/peak_memory.py -- imgclf export runs/digits224 --out runs/digits224

Prints one row: peak anon MB (the tree's anonymous + shared memory as PSS, what the machine must find
room for), peak RSS MB (the largest process, file-backed pages included), wall and CPU seconds, and
the exit code; the command's output goes to --log.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from common import run_tree


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--log", type=Path, default=Path("peak_memory.log"), help="the command's output")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- then the command")
    args = parser.parse_args()
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("give the command to measure after --")
    run = run_tree(command, env=dict(os.environ), cwd=Path.cwd(), log=args.log)
    print("| command | peak anon MB | peak RSS MB | wall s | CPU s | exit |")
    print("|---|---:|---:|---:|---:|---:|")
    print(
        f"| `{' '.join(command)}` | {run.peak_anon_mb:,.0f} | {run.peak_rss_mb:,.0f} | {run.wall_s:.0f} "
        f"| {run.cpu_s:.0f} | {run.returncode} |"
    )
    sys.exit(run.returncode)


if __name__ == "__main__":
    main()
