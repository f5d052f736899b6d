"""Several training runs side by side on one machine's CPU cores.

Small models train inefficiently on many threads (on 2 cores the sim preset's step is ~1.5x faster
with 2 threads than with 1, not 2x), so two runs on one core each finish sooner than the same two
runs one after the other on both. Each run starts with its share of this process's CPUs as its
torch thread count, written to a file it re-reads every step (``train.cpu_threads_file``,
``fastwam_training.cpu_threads``); when a run ends, its CPUs go to the next queued run, or else to
the runs still training. The OS places the threads; nothing is pinned.

Each run's output goes to its log file; progress is read from its ``logs/metrics.jsonl``.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from fastwam_training.cpu_threads import available_cpus, write_thread_count
from fastwam_training.tracking import read_metrics


@dataclass
class Run:
    name: str
    command: list[str]  # a fastwam_training.train command line (the thread overrides are appended)
    log: Path  # stdout and stderr of the run
    metrics: Path  # the run's logs/metrics.jsonl
    max_steps: int
    seconds: float = 0.0  # wall time, once finished
    returncode: int | None = None
    threads: int = 0  # its current share of the CPUs
    _process: subprocess.Popen | None = None
    _started: float = 0.0

    @property
    def threads_file(self) -> Path:
        """The run's thread count, which it re-reads every step (beside its log)."""
        return self.log.with_name(f"{self.log.stem}.cpu_threads")


def share(total: int, n: int) -> list[int]:
    """``total`` CPUs split into n near-equal counts, larger first (n <= total)."""
    size, extra = divmod(total, n)
    return [size + (1 if i < extra else 0) for i in range(n)]


def last_step(run: Run) -> int:
    rows = read_metrics(run.metrics)
    return int(rows[-1]["step"]) if rows else 0


def run_side_by_side(
    runs: Sequence[Run],
    env: dict[str, str] | None = None,
    on_progress: Callable[[Run, int], None] | None = None,
    poll_s: float = 1.0,
    cpus: int | None = None,
) -> None:
    """Run every ``Run`` to its end, at most one per CPU at a time, moving CPUs as runs end.

    Raises RuntimeError naming the run and its log when one fails (the others are stopped).
    ``on_progress(run, step)`` is called as a run's logged step advances and when it ends."""
    total = cpus or available_cpus()
    queue = list(runs)
    running: list[Run] = []
    shown: dict[str, int] = {}

    def start(run: Run, threads: int) -> None:
        run.log.parent.mkdir(parents=True, exist_ok=True)
        run.threads = threads
        write_thread_count(run.threads_file, threads)
        overrides = [f"train.cpu_threads={threads}", f"train.cpu_threads_file={run.threads_file}"]
        with run.log.open("w") as out:
            run._process = subprocess.Popen(
                [*run.command, *overrides], stdout=out, stderr=subprocess.STDOUT, env=env
            )
        run._started = time.monotonic()
        running.append(run)

    def rebalance() -> None:
        free = total - sum(r.threads for r in running)
        while queue and free > 0:
            start(queue.pop(0), 1)
            free -= 1
        if free > 0 and running:
            for run, extra in zip(running, share(free, min(free, len(running))), strict=False):
                run.threads += extra
                write_thread_count(run.threads_file, run.threads)

    try:
        first = queue[:total]
        del queue[: len(first)]
        for run, threads in zip(first, share(total, len(first)), strict=True):
            start(run, threads)
        while running:
            time.sleep(poll_s)
            for run in list(running):
                code = run._process.poll()
                step = last_step(run)
                if on_progress and step != shown.get(run.name):
                    shown[run.name] = step
                    on_progress(run, step)
                if code is None:
                    continue
                run.returncode, run.seconds = code, time.monotonic() - run._started
                running.remove(run)
                run.threads = 0
                if code != 0:
                    tail = run.log.read_text(errors="replace")[-3000:] if run.log.is_file() else ""
                    raise RuntimeError(
                        f"training run {run.name!r} failed (exit code {code}); log {run.log}:\n{tail}"
                    )
                rebalance()
    finally:
        for run in running:
            if run._process is not None and run._process.poll() is None:
                run._process.terminate()
                try:
                    run._process.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    run._process.kill()
