"""Data-parallel training started from inside a process (the pipeline's `train` step): torchrun runs
`fit_resumable` in N processes on this machine, and the caller gets the same TrainedModel and the same
per-epoch metrics as from one process.

The caller and the ranks talk through plain files in a job folder: the manifest (parquet), the
configs (JSON), the epochs' metrics rank 0 appends (JSON lines, followed while the ranks run, so the
caller logs them live) and rank 0's bundle (safetensors). One process (`nproc == 1`) skips all of it.
Checkpoints and resume are `fit_resumable`'s, keyed by data and config: a killed N-process run started
again continues from its last epoch, with N processes or one.
"""

from __future__ import annotations

import collections
import json
import logging
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import IO

from torch.distributed.elastic.multiprocessing.errors import record

from imgclf.augment.policy import AugmentPolicy
from imgclf.data.manifest import DatasetManifest
from imgclf.models.trained import TrainedModel
from imgclf.train.config import TrainConfig
from imgclf.train.hooks import OnEpoch
from imgclf.train.loop import fit_resumable

MANIFEST, CONFIG, POLICY, EPOCHS, MODEL = "manifest", "train_config.json", "policy.json", "epochs.jsonl", "model"
FOLLOW_EVERY_S = 0.5

log = logging.getLogger(__name__)


def fit_processes(
    manifest: DatasetManifest,
    config: TrainConfig,
    policy: AugmentPolicy,
    nproc: int,
    on_epoch: OnEpoch | None = None,
) -> TrainedModel:
    """`fit_resumable` in `nproc` data-parallel processes (torchrun, standalone on this machine; gloo on
    CPU, NCCL on GPU), each epoch's metrics handed to `on_epoch` as rank 0 records them."""
    if nproc < 1:
        raise ValueError(f"nproc must be at least 1, got {nproc}")
    if nproc == 1:
        return fit_resumable(manifest, config, policy, on_epoch)
    with tempfile.TemporaryDirectory(prefix="imgclf-ddp-") as tmp:
        job = Path(tmp)
        manifest.write(job / MANIFEST)
        (job / CONFIG).write_text(config.model_dump_json())
        (job / POLICY).write_text(policy.model_dump_json())
        command = [
            *(sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}"),
            *("-m", __name__, str(job)),
        ]
        ranks = subprocess.Popen(
            command, env=_environment(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        tail: collections.deque[str] = collections.deque(maxlen=40)
        relay = threading.Thread(target=_relay, args=(ranks.stdout, tail), daemon=True)
        relay.start()
        try:
            _follow(job / EPOCHS, ranks, on_epoch or (lambda metrics, epoch: None))
        finally:
            if ranks.poll() is None:  # the caller failed or was interrupted: stop the ranks with it
                ranks.terminate()
                ranks.wait()
            relay.join()
        if ranks.returncode != 0:
            raise RuntimeError(
                f"data-parallel training ({nproc} processes) failed with exit status {ranks.returncode}; "
                "its last lines:\n" + "\n".join(tail)
            )
        return TrainedModel.load(job / MODEL)


def _environment() -> dict[str, str]:
    """This process's environment, with the folder that holds `imgclf` first on the ranks' path."""
    root = str(Path(__file__).resolve().parents[2])
    path = os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH", "")) if p)
    return {**os.environ, "PYTHONPATH": path}


def _relay(stream: IO[str], tail: collections.deque[str]) -> None:
    """The ranks' output into this process's log (a ZenML step keeps it with the step)."""
    for line in stream:
        tail.append(line.rstrip())
        log.info("%s", line.rstrip())


def _follow(epochs_file: Path, ranks: subprocess.Popen, on_epoch: OnEpoch) -> None:
    """Hand each line rank 0 appends to `epochs_file` to `on_epoch` until the ranks exit."""
    done = 0
    while True:
        finished = ranks.poll() is not None
        text = epochs_file.read_text() if epochs_file.exists() else ""
        complete = text[: text.rfind("\n") + 1].splitlines()  # a line without its newline is still being written
        for line in complete[done:]:
            record = json.loads(line)
            on_epoch(record["metrics"], record["epoch"])
        done = max(done, len(complete))
        if finished:
            return
        time.sleep(FOLLOW_EVERY_S)


def _append_epoch(epochs_file: Path) -> OnEpoch:
    def on_epoch(metrics: dict[str, float], epoch: int) -> None:
        with epochs_file.open("a") as out:
            out.write(json.dumps({"epoch": epoch, "metrics": metrics}) + "\n")

    return on_epoch


@record  # a failing rank's exception goes into torchrun's summary, the part of the output the caller quotes
def main(job: Path) -> int:
    """One rank: train on the job folder's data and configs; rank 0 records the epochs and the bundle."""
    manifest = DatasetManifest.read(job / MANIFEST)
    config = TrainConfig.model_validate_json((job / CONFIG).read_text())
    policy = AugmentPolicy.model_validate_json((job / POLICY).read_text())
    rank = os.environ.get("RANK", "0")
    main_rank = rank == "0"
    logging.basicConfig(level=logging.INFO, format=f"[rank {rank}] %(name)s: %(message)s")
    trained = fit_resumable(manifest, config, policy, _append_epoch(job / EPOCHS) if main_rank else None)
    if main_rank:
        trained.save(job / MODEL)
    return 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1])))
