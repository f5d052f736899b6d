"""Normalization statistics of a dataset: one streaming pass, saved as JSON, never silently redone.

The statistics cover every frame of every episode (a property of the dataset, shared by all runs
on it) and are stored as fastwam.normalize.NormalizationStats with features "action" and "state".
Their 1st/99th percentiles are exact; LeRobot's own statistics (meta/stats.json and the episodes'
stats, written by fastwam.data.lerobot) carry histogram approximations of them instead.
"""

from __future__ import annotations

import os
from pathlib import Path

from tqdm import tqdm

from fastwam.data.lerobot_reader import DatasetError, LeRobotDataset
from fastwam.data.windows import DatasetKeys
from fastwam.normalize import NormalizationStats, StatsAccumulator

STATS_FILENAME = "fastwam_stats.json"


def default_stats_path(dataset: LeRobotDataset) -> Path:
    return dataset.root / "meta" / STATS_FILENAME


def compute_stats(dataset: LeRobotDataset, keys: DatasetKeys, progress: bool = True) -> NormalizationStats:
    """Mean, std, min, max and exact 1st/99th percentiles of action and state over all frames."""
    accumulators = {"action": StatsAccumulator(), "state": StatsAccumulator()}
    for ep in tqdm(dataset.episode_indices, desc="dataset statistics", unit="episode", disable=not progress):
        data = dataset.read_episode(ep, [keys.state, keys.action])
        accumulators["action"].update(data.columns[keys.action])
        accumulators["state"].update(data.columns[keys.state])
    return NormalizationStats({name: acc.finalize() for name, acc in accumulators.items()})


def check_stats(
    stats: NormalizationStats, dataset: LeRobotDataset, keys: DatasetKeys, path: Path | str
) -> None:
    """Raise if saved statistics do not describe this dataset's action/state features."""
    expected = {
        "action": (dataset.feature_dim(keys.action), keys.action),
        "state": (dataset.feature_dim(keys.state), keys.state),
    }
    problems = []
    for name, (dim, key) in expected.items():
        if name not in stats.features:
            problems.append(f"no {name!r} statistics")
            continue
        if stats[name].dim != dim:
            problems.append(
                f"{name!r} statistics have {stats[name].dim} dims, dataset feature {key!r} has {dim}"
            )
        if stats[name].count != dataset.total_frames:
            problems.append(
                f"{name!r} statistics cover {stats[name].count} frames, the dataset has {dataset.total_frames}"
            )
    if problems:
        raise DatasetError(
            f"{path}: statistics do not match dataset {dataset.root}: "
            + "; ".join(problems)
            + " (recompute them explicitly: data.recompute_stats=true)"
        )


def load_or_compute_stats(
    dataset: LeRobotDataset,
    keys: DatasetKeys,
    path: str | os.PathLike[str] | None = None,
    recompute: bool = False,
    progress: bool = True,
) -> tuple[NormalizationStats, Path]:
    """Load the statistics file if present (checked against the dataset), else compute and save it.

    Recomputes an existing file only when `recompute` is set. Returns the stats and the file path.
    """
    path = Path(path) if path is not None else default_stats_path(dataset)
    if path.is_file() and not recompute:
        stats = NormalizationStats.load(path)
        check_stats(stats, dataset, keys, path)
        return stats, path
    stats = compute_stats(dataset, keys, progress=progress)
    path.parent.mkdir(parents=True, exist_ok=True)
    stats.save(path)
    return stats, path
