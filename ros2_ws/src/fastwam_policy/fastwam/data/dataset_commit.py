"""One dataset update made of several files, committed all at once or not at all, even under SIGKILL.

Every file is first written under a hidden temporary name (".<name>.tmp", which no LeRobot glob
such as data/*/*.parquet matches) and flushed to disk; then a journal listing the renames is
written (atomically), the renames are done with meta/info.json last, and the journal is removed.
A writer killed before the journal leaves only temporary files, removed when a writer next opens
the dataset; killed during the renames, readers still see the previous state (they trust
info.json) and the next writer redoes the renames from the journal.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from fastwam.data.lerobot_reader import DatasetError

JOURNAL = "meta/.fastwam_commit.json"


class StagedCommit:
    """One episode's files, written under temporary names, then renamed into place together."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.moves: list[tuple[Path, Path]] = []

    def path(self, final: Path) -> Path:
        """The temporary name to write `final` under (hidden, ending .tmp: outside LeRobot's globs)."""
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = final.with_name(f".{final.name}.tmp")
        self.moves.append((tmp, final))
        return tmp

    def write_text(self, final: Path, text: str) -> None:
        self.path(final).write_text(text)

    def write_json(self, final: Path, data: Any) -> None:
        self.write_text(final, json.dumps(data, indent=4, ensure_ascii=False) + "\n")

    def commit(self) -> None:
        # meta/info.json last: it holds total_episodes, the readers' commit point.
        moves = sorted(self.moves, key=lambda m: m[1].name == "info.json")
        for tmp, _ in moves:  # on disk before the journal promises them (a power cut, not only a kill)
            _fsync(tmp)
        journal = self.root / JOURNAL
        listing = [[str(t.relative_to(self.root)), str(f.relative_to(self.root))] for t, f in moves]
        atomic_write(journal, lambda tmp: tmp.write_text(json.dumps({"moves": listing}) + "\n"))
        apply_moves(self.root, listing)
        for folder in dict.fromkeys(final.parent for _, final in moves):
            _fsync(folder)  # the renames themselves
        journal.unlink()

    def abandon(self) -> None:
        for tmp, _ in self.moves:
            tmp.unlink(missing_ok=True)


def recover_interrupted_write(root: str | os.PathLike[str]) -> bool:
    """Finish or undo a writer's episode that a crash interrupted; True if a journal was replayed.

    With a journal, every staged file was complete before the first rename: the renames are
    redone. Without one, the staged files never became part of the dataset: they are removed.
    Run only by writers (one writer per dataset at a time)."""
    root = Path(root)
    journal = root / JOURNAL
    replayed = False
    if journal.is_file():
        try:
            listing = json.loads(journal.read_text())["moves"]
        except (OSError, json.JSONDecodeError, KeyError) as error:
            raise DatasetError(f"{journal}: unreadable commit journal: {error}") from error
        apply_moves(root, listing)
        journal.unlink()
        replayed = True
    for folder in ("data", "videos", "meta"):
        if (root / folder).is_dir():
            for stale in (root / folder).rglob(".*.tmp"):
                stale.unlink(missing_ok=True)
    return replayed


def apply_moves(root: Path, listing: Sequence[Sequence[str]]) -> None:
    for tmp, final in listing:
        if (root / tmp).exists():
            os.replace(root / tmp, root / final)


def atomic_write(path: Path, write) -> None:
    """`write(tmp)`, flushed to disk, then renamed to `path`: `path` is the old or the new file."""
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        write(tmp)
        _fsync(tmp)
        os.replace(tmp, path)
        _fsync(path.parent)
    finally:
        tmp.unlink(missing_ok=True)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
