"""How many CPU threads torch's intra-op pool of a training process uses.

``train.cpu_threads``: null leaves torch's default, an integer fixes the count, ``adaptive`` measures.
``train.cpu_threads_file``: a file holding the count, re-read whenever it changes (checked every
step), so that a scheduler can move cores between training processes as they come and go:
``fastwam_training.side_by_side`` trains runs on one core each and gives a finished run's core to
a run still training. (Not the process's CPU set: OpenMP sizes its spin-waiting to the CPUs it saw
at start-up, so a process started on one CPU stays slow on two; measured on 2 cores, 0.385 s
against 0.254 s per sim-preset step.)

``adaptive``: on a machine that other processes keep busy, torch's OpenMP threads spin-wait on each
other at every parallel region while the scheduler runs someone else on the core they wait for:
measured with two busy-loop processes on the 2 cores, the sim preset trains 7.6 samples/s on 2
threads against 20.4 on 1 (unloaded: 38-48 on 2; ``benchmarks/training_throughput.py --presets sim``
under ``OMP_NUM_THREADS``). OMP_WAIT_POLICY=PASSIVE would fix the loaded case but halves the unloaded
one, and OpenMP reads it once at start-up. So the trainer measures instead: every ``PROBE_EVERY``
steps it times ``PROBE_STEPS`` steps at each candidate count (half, same, double, within 1..the
CPUs) and keeps the fastest, the current count unless another is ``MARGIN`` faster. The probe steps
are ordinary training steps; only the floating-point summation order of a parallel reduction
changes with the count, so an adaptive run is not bit-reproducible across loads.
"""

from __future__ import annotations

import logging
import os
import statistics
import time
from pathlib import Path

import torch

log = logging.getLogger("fastwam_training")


def write_thread_count(path: str | os.PathLike[str], threads: int) -> None:
    """Write a thread count file atomically (a reader never sees it half written)."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(f"{int(threads)}\n")
    os.replace(tmp, path)


ADAPTIVE = "adaptive"


def available_cpus() -> int:
    """CPUs this process may run on."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


class ThreadProbe:
    """The adaptive count: fed one wall time per training step, it says which count to run next.

    Measures steps, not the machine's load average: the load says how many processes want a core,
    not whether this step is faster on fewer threads."""

    PROBE_EVERY = 200  # steps between probes (the load of a shared machine changes over minutes)
    FIRST_PROBE = 5  # steps before the first probe (the first steps warm up allocators and caches)
    PROBE_STEPS = 4  # timed steps per candidate, after one untimed step at the new count
    MARGIN = 0.1  # another count must be this much faster to replace the current one

    def __init__(self, max_threads: int, current: int):
        self.max_threads = max(1, max_threads)
        self.current = min(max(1, current), self.max_threads)
        self._countdown = self.FIRST_PROBE
        self._queue: list[int] = []  # candidates still to time, in order
        self._timing: int | None = None  # the count whose steps are being timed
        self._warm = False  # the first step at a new count is not timed
        self._times: list[float] = []
        self._results: dict[int, float] = {}  # count -> median seconds per step in this probe

    def candidates(self) -> list[int]:
        near = {max(1, self.current // 2), self.current, min(self.max_threads, self.current * 2)}
        return sorted(near)

    def step(self, seconds: float | None) -> int:
        """Record the last step's wall time (None: not a timed step) and return the count to use."""
        if self._timing is not None:
            if seconds is not None and self._warm:
                self._times.append(seconds)
            self._warm = True
            if len(self._times) >= self.PROBE_STEPS:
                self._results[self._timing] = statistics.median(self._times)
                self._timing = None
        if self._timing is None and self._queue:
            self._timing, self._times, self._warm = self._queue.pop(0), [], False
            return self._timing
        if self._timing is not None:
            return self._timing
        if self._results:
            self._decide()
        if self._countdown > 0:
            self._countdown -= 1
            return self.current
        self._countdown = self.PROBE_EVERY
        self._queue = self.candidates()
        self._timing, self._times, self._warm = self._queue.pop(0), [], False
        return self._timing

    def _decide(self) -> None:
        results, self._results = self._results, {}
        best = min(results, key=results.get)
        if best != self.current and results[best] < (1 - self.MARGIN) * results.get(
            self.current, float("inf")
        ):
            log.info(
                "CPU threads: %s s/step -> %d",
                ", ".join(f"{n}: {t:.3f}" for n, t in sorted(results.items())),
                best,
            )
            self.current = best


class CpuThreads:
    def __init__(self, threads: int | str | None = None, threads_file: str | os.PathLike[str] | None = None):
        adaptive = threads == ADAPTIVE
        if (
            not adaptive
            and threads is not None
            and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1)
        ):
            raise ValueError(
                f"train.cpu_threads must be null, a positive integer or {ADAPTIVE!r}, got {threads!r}"
            )
        if adaptive and threads_file:
            raise ValueError("train.cpu_threads=adaptive and train.cpu_threads_file: choose one")
        self.threads = None if adaptive else threads
        self.file = Path(threads_file) if threads_file else None
        self.probe = ThreadProbe(available_cpus(), torch.get_num_threads()) if adaptive else None
        self._last: float | None = None  # when update() was last called: one step ago
        self._stamp: tuple[int, int] | None = None
        self._warned = False

    def _from_file(self) -> int | None:
        try:
            st = self.file.stat()
            stamp = (st.st_mtime_ns, st.st_size)
            if stamp == self._stamp:
                return None
            text = self.file.read_text().strip()
        except FileNotFoundError:
            return None
        self._stamp = stamp
        try:
            value = int(text)
            if value < 1:
                raise ValueError
        except ValueError:
            if not self._warned:
                log.warning(
                    "train.cpu_threads_file %s holds %r, not a positive integer: ignored", self.file, text
                )
                self._warned = True
            return None
        return value

    def update(self) -> int:
        """Apply the setting (cheap when nothing changed: call it once every step); the thread count."""
        want = self.threads
        if self.probe is not None:
            now = time.perf_counter()
            want = self.probe.step(None if self._last is None else now - self._last)
            self._last = now
        if self.file is not None:
            want = self._from_file() or want
            if want is not None:
                self.threads = want
        have = torch.get_num_threads()
        if want is not None and want != have:
            torch.set_num_threads(want)
            if self.probe is None:
                log.info("CPU threads: %d -> %d", have, want)
            return want
        return have
