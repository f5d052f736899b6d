"""Training samples: one window per (episode, frame).

A window starting at frame t holds
    video        uint8 [V, H, W, 3]  composite frames t, t+s, ..., t+(V-1)s (V = 9, s = 4: the
                                     current frame plus 8 future frames over the 32-step chunk)
    frame_mask   bool [V]            False where t + k s is past the episode end (frame repeated)
    action       float32 [H, A]      actions t .. t+H-1 in physical units (H = 32)
    action_mask  bool [H]            False past the episode end (last action repeated)
    state        float32 [S]         state at t
    instruction  str                 task of frame t
Which dataset features are the cameras, state and action comes from the experiment config
(`DatasetKeys`), never from this code. Composites are made by fastwam.camera.CameraLayout.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from fastwam.camera import CameraLayout
from fastwam.data.lerobot_reader import DatasetError, EpisodeData, LeRobotDataset


@dataclass(frozen=True)
class WindowSpec:
    """Temporal shape of a sample. The Wan2.2 VAE encodes 1 + 4k frames: video_frames must be 1 mod 4."""

    action_horizon: int = 32
    video_frames: int = 9
    video_stride: int = 4

    def __post_init__(self) -> None:
        if self.action_horizon < 1 or self.video_frames < 1 or self.video_stride < 1:
            raise ValueError(f"window sizes must be positive: {self}")
        if (self.video_frames - 1) % 4:
            raise ValueError(
                f"video_frames must be 1 + 4k (the VAE's temporal grouping), got {self.video_frames}"
            )


@dataclass(frozen=True)
class DatasetKeys:
    """Which dataset features feed the model, as named by the experiment config.

    cameras: camera layout key -> dataset video feature (e.g. "head" -> "observation.images.head").
    state_names / action_names: the joint names the model expects; checked against the dataset's
    feature names when the dataset records them (dimension counts are always checked).
    """

    cameras: Mapping[str, str]
    state: str = "observation.state"
    action: str = "action"
    state_names: tuple[str, ...] | None = None
    action_names: tuple[str, ...] | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)

    def check(self, dataset: LeRobotDataset, layout: CameraLayout) -> None:
        """Raise DatasetError naming every configured feature the dataset lacks or disagrees on."""
        where = dataset.root / "meta" / "info.json"
        problems = []
        missing_cams = [k for k in layout.keys if k not in self.cameras]
        if missing_cams:
            raise ValueError(
                f"camera layout keys {missing_cams} have no dataset feature in the config's cameras map"
            )
        for cam, key in self.cameras.items():
            if cam not in layout.keys:
                problems.append(f"config camera {cam!r} is not in the camera layout {list(layout.keys)}")
            elif key not in dataset.features:
                problems.append(f"camera feature {key!r} (for {cam!r}) missing")
            elif dataset.features[key].get("dtype") != "video":
                problems.append(
                    f"camera feature {key!r} is {dataset.features[key].get('dtype')!r}, not video"
                )
        for role, key, names in (
            ("state", self.state, self.state_names),
            ("action", self.action, self.action_names),
        ):
            if key not in dataset.features:
                problems.append(f"{role} feature {key!r} missing")
                continue
            dim = dataset.feature_dim(key)
            if names is not None and dim != len(names):
                problems.append(
                    f"{role} feature {key!r} has {dim} dims, the config names {len(names)} joints"
                )
            have = dataset.feature_names(key)
            if names is not None and have is not None and list(names) != have:
                problems.append(
                    f"{role} feature {key!r} joint names {have} differ from the config's {list(names)}"
                )
        if problems:
            raise DatasetError(
                f"{where}: " + "; ".join(problems) + f" (dataset features: {sorted(dataset.features)})"
            )


class WindowDataset(Dataset):
    """Windows over the chosen episodes of a LeRobot dataset, as a torch Dataset.

    Numeric columns of all episodes are loaded and validated up front (bad data fails at start-up,
    naming episode and file); video frames are decoded per sample. With `load_video=False` the
    sample carries no pixels (training from cached VAE latents).
    """

    def __init__(
        self,
        dataset: LeRobotDataset,
        layout: CameraLayout,
        keys: DatasetKeys,
        spec: WindowSpec = WindowSpec(),
        episodes: Sequence[int] | None = None,
        load_video: bool = True,
        check_videos: bool = True,
        start_stride: int = 1,
    ) -> None:
        keys.check(dataset, layout)
        self.dataset = dataset
        self.layout = layout
        self.keys = keys
        self.spec = spec
        self.load_video = load_video
        self.episode_indices = list(episodes) if episodes is not None else dataset.episode_indices
        if not self.episode_indices:
            raise ValueError(f"{dataset.root}: no episodes selected")
        self.episodes: dict[int, EpisodeData] = {
            ep: dataset.read_episode(ep, [keys.state, keys.action]) for ep in self.episode_indices
        }
        if load_video and check_videos:
            dataset.check_videos(self.episode_indices)
        # (episode, start frame) of every sample; start_stride > 1 thins them (latent caches).
        self.index = np.array(
            [
                (ep, t)
                for ep in self.episode_indices
                for t in range(0, self.episodes[ep].length, start_stride)
            ],
            dtype=np.int64,
        ).reshape(-1, 2)

    def __len__(self) -> int:
        return len(self.index)

    def window_indices(self, length: int, t: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Clamped frame indices and validity masks for the actions and video frames of window t."""
        steps = t + np.arange(self.spec.action_horizon)
        frames = t + self.spec.video_stride * np.arange(self.spec.video_frames)
        return np.minimum(steps, length - 1), steps < length, np.minimum(frames, length - 1), frames < length

    def __getitem__(self, i: int) -> dict[str, Any]:
        ep, t = (int(v) for v in self.index[i])
        data = self.episodes[ep]
        steps, action_mask, frames, frame_mask = self.window_indices(data.length, t)
        task_index = int(data.task_index[t])
        sample: dict[str, Any] = {
            "action": torch.from_numpy(data.columns[self.keys.action][steps]),
            "action_mask": torch.from_numpy(action_mask),
            "state": torch.from_numpy(data.columns[self.keys.state][t].copy()),
            "frame_mask": torch.from_numpy(frame_mask),
            "instruction": self.dataset.tasks[task_index],
            "episode_index": ep,
            "frame_index": t,
        }
        if self.load_video:
            sample["video"] = torch.from_numpy(self.composite(ep, frames))
        return sample

    def composite(self, ep: int, frames: np.ndarray) -> np.ndarray:
        """uint8 [N, H, W, 3] composites of episode frames (each distinct frame decoded once)."""
        data = self.episodes[ep]
        unique, inverse = np.unique(frames, return_inverse=True)
        images = {
            cam: self.dataset.read_frames(ep, key, data.timestamps[unique])[inverse]
            for cam, key in self.keys.cameras.items()
        }
        return self.layout.compose(images)


def split_episodes(
    episodes: Sequence[int], val_episodes: int | Sequence[int], seed: int = 0
) -> tuple[list[int], list[int]]:
    """Train / held-out episode lists: an explicit list, or that many picked at random (seeded)."""
    episodes = sorted(episodes)
    if isinstance(val_episodes, int):
        if val_episodes <= 0:
            return episodes, []
        if val_episodes >= len(episodes):
            raise ValueError(f"cannot hold out {val_episodes} of {len(episodes)} episodes")
        rng = np.random.default_rng(seed)
        held = sorted(int(e) for e in rng.choice(episodes, size=val_episodes, replace=False))
    else:
        held = sorted(int(e) for e in val_episodes)
        unknown = sorted(set(held) - set(episodes))
        if unknown:
            raise ValueError(f"held-out episodes {unknown} are not in the dataset")
    return [e for e in episodes if e not in held], held
