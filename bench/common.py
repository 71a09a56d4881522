"""Shared by the benchmarks: the generated image folder, a scratch folder that is always removed, and
the peak memory of a command's whole process tree."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image


def write_images(root: Path, count: int, side: int = 96) -> None:
    """`count` real-ish RGB images: scikit-learn's digits, upscaled, tinted, shifted; PNG and JPEG."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    rng = np.random.default_rng(0)
    for i in range(count):
        k = i % len(digits.images)
        grey = Image.fromarray((digits.images[k] * (255 / 16)).astype(np.uint8)).resize((side, side), Image.BILINEAR)
        shifted = np.roll(np.asarray(grey), rng.integers(-4, 5, size=2), axis=(0, 1))
        rgb = (shifted[..., None] * rng.uniform(0.5, 1.0, 3)).astype(np.uint8)
        path = root / str(digits.target[k]) / f"{i:05d}.{'png' if i % 2 else 'jpg'}"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rgb).save(path)


@contextlib.contextmanager
def scratch_dir(prefix: str):
    path = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def image_folder(data: Path | None, scratch: Path, count: int) -> Path:
    """`data` if it already holds images, else `count` generated images there (or in `scratch`)."""
    root = data or scratch / "images"
    if not root.exists() or not any(root.iterdir()):
        write_images(root, count)
    return root


# -- peak memory of a process tree (Linux) ---------------------------------------------------------

_MB = 1024 * 1024


@dataclass
class TreeRun:
    """What `run_tree` measured of one command and every process it started."""

    returncode: int
    wall_s: float  # the whole command, interpreter start and imports included
    cpu_s: float  # user + sys of the command and its waited-for descendants
    peak_rss_mb: float  # ru_maxrss: the largest single process's peak resident set, file-backed pages included
    peak_anon_mb: float  # the tree's anonymous + shmem pages, each shared page counted once (PSS)
    peak_anon_rss_mb: float  # the same, a page shared by forked processes counted in each (RssAnon + RssShmem)
    samples: int  # every `interval`
    exact_reads: int  # of smaps_rollup; see TreeSampler


class TreeSampler:
    """The anonymous memory of a process and its descendants, summed, sampled cheaply and often.

    Two sums: RssAnon + RssShmem from /proc/PID/status, which counts a page that forked processes
    share copy-on-write once per process, and Pss_Anon + Pss_Shmem from /proc/PID/smaps_rollup, which
    divides it among them. /proc/PID/status costs microseconds; smaps_rollup walks the page tables,
    tens of ms for a process with torch loaded, so it is read only now and then ("exact reads", at most
    `budget` of the sampler's time, and whenever the set of processes changes). Between exact reads the
    PSS sum is taken as the status sum minus the double count found at the last exact read: pages that
    stop being shared since then are missed until the next one.
    """

    def __init__(self, root: int, budget: float = 0.05) -> None:
        self.root = root
        self.budget = budget
        self.pids = [root]
        self.double_count = 0
        self.next_exact = 0.0
        self.peak_pss = self.peak_rss = 0
        self.exact_reads = 0

    def sample(self, refresh: bool) -> None:
        """One sample; `refresh`: look for new and exited descendants first (scans /proc)."""
        if refresh:
            pids = _tree(self.root)
            if set(pids) != set(self.pids):
                self.pids, self.next_exact = pids, 0.0
        if time.perf_counter() >= self.next_exact:
            self._exact()
            return
        rss = sum(_status_anon(pid) for pid in self.pids)
        self.peak_rss = max(self.peak_rss, rss)
        self.peak_pss = max(self.peak_pss, rss - self.double_count)

    def _exact(self) -> None:
        started = time.perf_counter()
        rss = sum(_status_anon(pid) for pid in self.pids)
        pss = sum(_smaps_anon(pid) for pid in self.pids)
        took = time.perf_counter() - started
        self.double_count = max(0, rss - pss)
        self.peak_rss, self.peak_pss = max(self.peak_rss, rss), max(self.peak_pss, pss)
        self.next_exact = time.perf_counter() + took / self.budget
        self.exact_reads += 1


def run_tree(cmd: list[str], *, env: dict[str, str], cwd: Path, log: Path, interval: float = 0.02) -> TreeRun:
    """Run `cmd` (stdout and stderr to `log`), sampling the anonymous memory of it and its descendants
    every `interval` seconds until it exits; its rusage comes from wait4, so it is this command's alone."""
    started = time.perf_counter()
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=out, stderr=subprocess.STDOUT)
    sampler = TreeSampler(proc.pid)
    samples = 0
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        sampler.sample(refresh=samples % 5 == 0)  # new workers show up within 5 samples
        samples += 1
        time.sleep(interval)
    proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here; keeps Popen from waiting again
    return TreeRun(
        returncode=proc.returncode,
        wall_s=time.perf_counter() - started,
        cpu_s=usage.ru_utime + usage.ru_stime,
        peak_rss_mb=usage.ru_maxrss / 1024,  # KiB on Linux
        peak_anon_mb=sampler.peak_pss / _MB,
        peak_anon_rss_mb=sampler.peak_rss / _MB,
        samples=samples,
        exact_reads=sampler.exact_reads,
    )


def _tree(root: int) -> list[int]:
    """`root` and its live descendants, by parent pid from /proc/PID/stat (no /proc/PID/task/TID/children here)."""
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path("/proc", entry.name, "stat").read_text()
        except OSError:
            continue  # exited since the listing
        ppid = int(stat.rsplit(")", 1)[1].split()[1])  # the command name may hold spaces and parentheses
        children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, []))
    return found


def _status_anon(pid: int) -> int:
    """RssAnon + RssShmem of `pid` in bytes; 0 once it has exited."""
    fields = _kib_fields(f"/proc/{pid}/status")
    return (fields.get("RssAnon", 0) + fields.get("RssShmem", 0)) * 1024


def _smaps_anon(pid: int) -> int:
    """Pss_Anon + Pss_Shmem of `pid` in bytes; 0 once it has exited."""
    fields = _kib_fields(f"/proc/{pid}/smaps_rollup")
    return (fields.get("Pss_Anon", 0) + fields.get("Pss_Shmem", 0)) * 1024


def _kib_fields(path: str) -> dict[str, int]:
    """The `Name:   123 kB` lines of a /proc file as {name: 123}; empty when the process is gone."""
    try:
        text = Path(path).read_text()
    except OSError:
        return {}
    fields = {}
    for line in text.splitlines():
        name, _, value = line.partition(":")
        parts = value.split()
        if len(parts) == 2 and parts[1] == "kB":
            fields[name] = int(parts[0])
    return fields


class CpuWatch:
    """Share of the machine's CPU time used by other processes while a block runs (Linux /proc/stat):
    all busy CPU time minus this process's and its reaped children's (the loader workers, which both
    loops join before returning). Other jobs slow torch's spinning threads far more than their share."""

    def __init__(self) -> None:
        self.shares: list[float] = []

    @staticmethod
    def _busy() -> float | None:
        try:
            fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
        except OSError:
            return None
        user, nice, system, _idle, _iowait, irq, softirq, steal = (int(v) for v in fields[:8])
        return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")

    @contextlib.contextmanager
    def __call__(self):
        busy, own, wall = self._busy(), sum(os.times()[:4]), time.perf_counter()
        yield
        if busy is not None:
            others = (self._busy() - busy) - (sum(os.times()[:4]) - own)
            self.shares.append(max(0.0, others) / ((time.perf_counter() - wall) * (os.cpu_count() or 1)))


def free_port() -> int:
    """A free TCP port on 127.0.0.1 (the benchmarks' servers listen on loopback only)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
