"""Normalization statistics and the mapping between physical units and the model's units.

Statistics are computed once per dataset (a streaming pass through `StatsAccumulator`), saved as
JSON, and copied into every checkpoint; the policy node unnormalizes with exactly the numbers the
model was trained with. Features are named; "action" and "state" are the two the model uses.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

MODES = ("mean_std", "min_max", "quantile", "identity")
# Dimensions that never move (a locked joint) have zero spread; dividing by it would blow up.
_MIN_SPREAD = 1e-6
_FIELDS = ("mean", "std", "min", "max", "q01", "q99")


@dataclass
class FeatureStats:
    """Per-dimension statistics of one feature, float64 [D] each."""

    mean: np.ndarray
    std: np.ndarray
    min: np.ndarray
    max: np.ndarray
    q01: np.ndarray
    q99: np.ndarray
    count: int

    def __post_init__(self) -> None:
        shapes = {np.shape(getattr(self, f)) for f in _FIELDS}
        if len(shapes) != 1 or len(next(iter(shapes))) != 1:
            raise ValueError(f"feature stats need equal 1-D arrays, got shapes {sorted(shapes)}")
        for f in _FIELDS:
            value = np.asarray(getattr(self, f), dtype=np.float64)
            if not np.isfinite(value).all():
                raise ValueError(f"feature stats field {f!r} is not finite: {value}")
            setattr(self, f, value)

    @property
    def dim(self) -> int:
        return int(self.mean.shape[0])

    def to_dict(self) -> dict[str, Any]:
        return {**{f: getattr(self, f).tolist() for f in _FIELDS}, "count": int(self.count)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> FeatureStats:
        expected = {*_FIELDS, "count"}
        if set(data) != expected:
            raise ValueError(
                f"feature stats: missing {sorted(expected - set(data))}, unknown {sorted(set(data) - expected)}"
            )
        return cls(**{f: np.asarray(data[f], dtype=np.float64) for f in _FIELDS}, count=int(data["count"]))


class StatsAccumulator:
    """Streaming statistics of [N, D] batches with exact percentiles.

    Mean and variance are merged batch by batch (Chan et al.), so no precision is lost over hours of
    data. Percentiles must be exact (quantile normalization depends on them), so the values are kept;
    for joint data that is small (60 h at 30 Hz x 14 dims is ~50 MB in float32).
    """

    def __init__(self) -> None:
        self._count = 0
        self._mean: np.ndarray | None = None
        self._m2: np.ndarray | None = None
        self._chunks: list[np.ndarray] = []

    def update(self, batch: np.ndarray) -> None:
        batch = np.asarray(batch, dtype=np.float64)
        if batch.ndim != 2:
            raise ValueError(f"statistics expect [N, D] batches, got shape {batch.shape}")
        if self._mean is not None and batch.shape[1] != self._mean.shape[0]:
            raise ValueError(f"batch has {batch.shape[1]} dims, earlier batches {self._mean.shape[0]}")
        if not np.isfinite(batch).all():
            rows = np.unique(np.nonzero(~np.isfinite(batch))[0])[:5]
            raise ValueError(f"non-finite values in statistics batch (rows {rows.tolist()} ...)")
        n = batch.shape[0]
        if n == 0:
            return
        mean = batch.mean(axis=0)
        m2 = ((batch - mean) ** 2).sum(axis=0)
        if self._mean is None:
            self._count, self._mean, self._m2 = n, mean, m2
        else:
            total = self._count + n
            delta = mean - self._mean
            self._mean = self._mean + delta * n / total
            self._m2 = self._m2 + m2 + delta**2 * self._count * n / total
            self._count = total
        self._chunks.append(batch.astype(np.float32))

    def finalize(self) -> FeatureStats:
        if self._mean is None or self._m2 is None:
            raise ValueError("no data was given to the statistics accumulator")
        values = np.concatenate(self._chunks, axis=0)
        q01, q99 = np.percentile(values, [1.0, 99.0], axis=0)
        return FeatureStats(
            mean=self._mean,
            std=np.sqrt(self._m2 / self._count),
            min=values.min(axis=0).astype(np.float64),
            max=values.max(axis=0).astype(np.float64),
            q01=q01.astype(np.float64),
            q99=q99.astype(np.float64),
            count=self._count,
        )


@dataclass
class NormalizationStats:
    """Statistics per named feature, as saved next to a dataset and inside checkpoints."""

    features: dict[str, FeatureStats]

    def __getitem__(self, feature: str) -> FeatureStats:
        try:
            return self.features[feature]
        except KeyError:
            raise KeyError(
                f"no normalization statistics for feature {feature!r}; have {sorted(self.features)}"
            ) from None

    def to_dict(self) -> dict[str, Any]:
        return {name: stats.to_dict() for name, stats in sorted(self.features.items())}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> NormalizationStats:
        return cls({str(name): FeatureStats.from_dict(stats) for name, stats in data.items()})

    def save(self, path: str | os.PathLike[str]) -> None:
        path = Path(path)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(self.to_dict(), indent=2))
        os.replace(tmp, path)  # never leave a half-written statistics file behind

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> NormalizationStats:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"normalization statistics file not found: {path}")
        try:
            return cls.from_dict(json.loads(path.read_text()))
        except (json.JSONDecodeError, ValueError) as error:
            raise ValueError(f"invalid normalization statistics file {path}: {error}") from error


class Normalizer:
    """Maps a feature between physical units and model units, per the mode chosen for it.

    mean_std: (x - mean) / std. min_max: [min, max] -> [-1, 1]. quantile: [q01, q99] -> [-1, 1]
    (robust to outliers; values outside map beyond +-1). identity: unchanged. Works on numpy arrays
    and torch tensors (any device), returning the input's type and dtype.
    """

    def __init__(self, stats: NormalizationStats | None, modes: Mapping[str, str]) -> None:
        self.stats = stats
        self.modes = dict(modes)
        for feature, mode in self.modes.items():
            if mode not in MODES:
                raise ValueError(f"normalization mode for {feature!r} must be one of {MODES}, got {mode!r}")
            if mode != "identity":
                if stats is None:
                    raise ValueError(f"normalization mode {mode!r} for {feature!r} needs statistics")
                stats[feature]  # raises a clear KeyError if the feature has no statistics

    def normalize(self, feature: str, x):
        offset, scale = self._affine(feature)
        if offset is None:
            return x
        return (x - _like(offset, x)) / _like(scale, x)

    def unnormalize(self, feature: str, x):
        offset, scale = self._affine(feature)
        if offset is None:
            return x
        return x * _like(scale, x) + _like(offset, x)

    def _affine(self, feature: str) -> tuple[np.ndarray | None, np.ndarray | None]:
        mode = self.modes.get(feature)
        if mode is None:
            raise KeyError(f"no normalization mode configured for feature {feature!r}")
        if mode == "identity":
            return None, None
        s = self.stats[feature]  # type: ignore[index]
        if mode == "mean_std":
            return s.mean, np.maximum(s.std, _MIN_SPREAD)
        low, high = (s.min, s.max) if mode == "min_max" else (s.q01, s.q99)
        return (low + high) / 2.0, np.maximum((high - low) / 2.0, _MIN_SPREAD)


def _like(values: np.ndarray, x):
    if isinstance(x, torch.Tensor):
        return torch.as_tensor(values, dtype=x.dtype, device=x.device)
    return values.astype(np.asarray(x).dtype if np.asarray(x).dtype.kind == "f" else np.float64)
