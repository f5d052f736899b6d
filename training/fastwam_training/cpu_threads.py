"""How many CPU threads torch's intra-op pool of a training process uses.

``train.cpu_threads``: null leaves torch's default, an integer fixes the count.
``train.cpu_threads_file``: a file holding the count, re-read whenever it changes (checked every
step), so that a scheduler can move cores between training processes as they come and go:
``fastwam_training.side_by_side`` trains runs on one core each and gives a finished run's core to
a run still training. (Not the process's CPU set: OpenMP sizes its spin-waiting to the CPUs it saw
at start-up, so a process started on one CPU stays slow on two; measured on 2 cores, 0.385 s
against 0.254 s per sim-preset step.)
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import torch

log = logging.getLogger("fastwam_training")


def write_thread_count(path: str | os.PathLike[str], threads: int) -> None:
    """Write a thread count file atomically (a reader never sees it half written)."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(f"{int(threads)}\n")
    os.replace(tmp, path)


class CpuThreads:
    def __init__(self, threads: int | None = None, threads_file: str | os.PathLike[str] | None = None):
        if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
            raise ValueError(f"train.cpu_threads must be null or a positive integer, got {threads!r}")
        self.threads = threads
        self.file = Path(threads_file) if threads_file else None
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
        """Apply the setting (cheap when nothing changed: call it every step); the thread count."""
        want = self.threads
        if self.file is not None:
            want = self._from_file() or want
            if want is not None:
                self.threads = want
        have = torch.get_num_threads()
        if want is not None and want != have:
            torch.set_num_threads(want)
            log.info("CPU threads: %d -> %d", have, want)
            return want
        return have
