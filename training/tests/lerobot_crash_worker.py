"""A dataset writer to be SIGKILLed mid-episode by test_lerobot_crash.py.

Usage: lerobot_crash_worker.py ROOT VERSION COMMITTED STOP
Writes COMMITTED synthetic episodes with our LeRobot writer, then starts one more and stops at
STOP, writing ROOT/../ready and sleeping until it is killed:
    staged    every file of the episode written under its temporary name, nothing renamed yet
    renaming  the commit journal written and half of the renames done
    none      no stop: keeps adding episodes (the test kills it at an arbitrary moment)
Only *when* it stops is arranged (by wrapping two internal steps); the kill itself is real.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from fastwam.data import dataset_commit, lerobot
from fastwam_training.synthetic import CAMERAS, episode_arrays

NAMES = ["joint1", "joint2", "joint3", "gripper"]


def length(episode: int) -> int:
    return 5 + 2 * (episode % 3)


def arrange_stop(stop: str, ready: Path) -> None:
    def signal_and_hang() -> None:
        ready.write_text("stopped\n")
        time.sleep(600)

    if stop == "staged":
        dataset_commit.StagedCommit.commit = lambda self: signal_and_hang()
    elif stop == "renaming":
        apply = dataset_commit.apply_moves

        def half(root_path, listing):
            apply(root_path, listing[: len(listing) // 2])
            signal_and_hang()

        dataset_commit.apply_moves = half
    else:
        ready.write_text("running\n")


def main(root: str, version: str, committed: str, stop: str) -> None:
    writer = lerobot.open_writer(
        root, 15, "synthetic_arm", CAMERAS, NAMES, NAMES, version=version, video_codec="h264_lossless"
    )
    episode = 0
    while True:
        if episode == int(committed):
            arrange_stop(stop, Path(root).parent / "ready")
        a = episode_arrays(episode, length(episode))
        writer.add_episode(a["frames"], a["state"], a["action"], a["timestamps"], a["task"])
        episode += 1


if __name__ == "__main__":
    main(*sys.argv[1:5])
