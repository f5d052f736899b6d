"""A dataset writer killed with SIGKILL mid-episode leaves a dataset of its complete episodes.

The writer runs in a real subprocess (lerobot_crash_worker.py) that is killed at a chosen point of
an episode's commit, or at an arbitrary moment. Afterwards our reader, and a reader that globs the
files the way LeRobot does (data/*/*.parquet, meta/episodes/*/*.parquet: lerobot utils.py
`load_nested_dataset`, and v2.1's meta/*.jsonl), see exactly the complete episodes; a new writer
finishes or discards the interrupted episode and appends after it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from fastwam.data.dataset_commit import JOURNAL
from fastwam.data.lerobot import LeRobotDataset, open_writer
from fastwam_training.synthetic import CAMERAS, episode_arrays

WORKER = Path(__file__).with_name("lerobot_crash_worker.py")
NAMES = ["joint1", "joint2", "joint3", "gripper"]


def length(episode: int) -> int:
    return 5 + 2 * (episode % 3)  # as the worker writes them


def run_and_kill(tmp_path: Path, version: str, committed: int, stop: str, delay_s: float = 0.0) -> Path:
    root = tmp_path / "ds"
    process = subprocess.Popen(
        [sys.executable, str(WORKER), str(root), version, str(committed), stop],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 300  # generous: a loaded 2-core machine
        while not (tmp_path / "ready").exists():
            if process.poll() is not None:
                pytest.fail(f"worker exited early: {process.stdout.read().decode()}")
            if time.monotonic() > deadline:
                pytest.fail("worker never reached its stopping point")
            time.sleep(0.05)
        time.sleep(delay_s)
    finally:
        os.kill(process.pid, signal.SIGKILL)
        process.wait()
        process.stdout.close()
    assert process.returncode == -signal.SIGKILL
    return root


def check_exact(root: Path, count: int) -> None:
    ds = LeRobotDataset(root)
    assert ds.episode_indices == list(range(count))
    for e in range(count):
        src = episode_arrays(e, length(e))
        data = ds.read_episode(e, ["action", "observation.state", "source_timestamp"])
        np.testing.assert_array_equal(data.columns["action"], src["action"])
        np.testing.assert_allclose(data.columns["source_timestamp"][:, 0], src["timestamps"], atol=1e-9)
        for key in CAMERAS:
            np.testing.assert_array_equal(ds.read_frames(e, key, data.timestamps), src["frames"][key])


def lerobot_visible_episodes(root: Path, version: str) -> tuple[set[int], int]:
    """Episode indices of the rows a LeRobot loader picks up by globbing, and their frame count."""
    indices: set[int] = set()
    frames = 0
    for path in sorted(root.glob("data/*/*.parquet")):
        column = pq.read_table(path, columns=["episode_index"])["episode_index"]
        indices |= set(pc.unique(column).to_pylist())
        frames += len(column)
    if version == "v3.0":
        meta = {
            r
            for p in root.glob("meta/episodes/*/*.parquet")
            for r in pq.read_table(p)["episode_index"].to_pylist()
        }
    else:
        lines = (root / "meta/episodes.jsonl").read_text().splitlines()
        meta = {json.loads(line)["episode_index"] for line in lines}
    assert meta == indices, (meta, indices)
    return indices, frames


def append_one(root: Path, episode: int) -> None:
    writer = open_writer(root, 15, "synthetic_arm", CAMERAS, NAMES, NAMES, video_codec="h264_lossless")
    assert writer.num_episodes == episode
    a = episode_arrays(episode, length(episode))
    assert writer.add_episode(a["frames"], a["state"], a["action"], a["timestamps"], a["task"]) == episode


@pytest.mark.parametrize("version", ["v3.0", "v2.1"])
def test_killed_with_the_episode_staged(tmp_path, version):
    """Killed with every file of episode 3 written under a temporary name: nothing of it is
    visible, to us or to LeRobot's globs; the next writer removes the leftovers and appends."""
    root = run_and_kill(tmp_path, version, 3, "staged")
    info = json.loads((root / "meta/info.json").read_text())
    assert info["total_episodes"] == 3
    assert list(root.rglob(".*.tmp")), "the worker did not stop mid-episode"
    assert not (root / JOURNAL).exists()
    check_exact(root, 3)
    indices, frames = lerobot_visible_episodes(root, version)
    assert indices == {0, 1, 2} and frames == info["total_frames"] == sum(map(length, range(3)))
    append_one(root, 3)
    assert not list(root.rglob(".*.tmp"))
    check_exact(root, 4)
    assert lerobot_visible_episodes(root, version)[0] == {0, 1, 2, 3}


@pytest.mark.parametrize("version", ["v3.0", "v2.1"])
def test_killed_halfway_through_the_renames(tmp_path, version):
    """Killed after the journal and half of episode 2's renames: our reader still sees episodes
    0-1 (info.json is renamed last); the next writer completes episode 2 from the journal."""
    root = run_and_kill(tmp_path, version, 2, "renaming")
    assert (root / JOURNAL).is_file()
    check_exact(root, 2)
    writer = open_writer(root, 15, "synthetic_arm", CAMERAS, NAMES, NAMES, video_codec="h264_lossless")
    assert writer.num_episodes == 3 and not (root / JOURNAL).exists()
    check_exact(root, 3)
    assert lerobot_visible_episodes(root, version)[0] == {0, 1, 2}
    append_one(root, 3)
    check_exact(root, 4)


def test_killed_at_an_arbitrary_moment(tmp_path):
    """Killed while writing episode after episode: whatever moment the kill lands on, a reopened
    writer leaves a dataset whose episodes are all complete, and it can go on appending."""
    root = run_and_kill(tmp_path, "v3.0", 2, "none", delay_s=0.4)
    count = open_writer(root, 15, "synthetic_arm", CAMERAS, NAMES, NAMES).num_episodes
    assert count >= 2
    check_exact(root, count)
    assert lerobot_visible_episodes(root, "v3.0")[0] == set(range(count))
    append_one(root, count)
    check_exact(root, count + 1)
