"""Per-episode feature statistics computed the way LeRobot computes them, and their aggregation.

LeRobot stores, for every feature of every episode, min / max / mean / std / count (v2.1:
meta/episodes_stats.jsonl; v3.0: `stats/<feature>/<stat>` columns of meta/episodes/*.parquet, and the
aggregate in meta/stats.json). Computing them by LeRobot's recipe means a dataset has the same
statistics whichever tool wrote it. The recipe (lerobot src/lerobot/datasets/compute_stats.py, v3.0
era, `estimate_num_samples`, `sample_indices`, `auto_downsample_height_width`, `compute_episode_stats`,
`RunningQuantileStats`, `aggregate_feature_stats`):

- vectors [T, D] (and scalar columns [T]) use every frame; images use a sample of frames spread
  evenly over the episode (100 for episodes of 100..~460 frames, T**0.75 above, all of them below
  100), each downsampled by an integer stride when its larger side is 300 px or more (to ~150 px);
- image statistics are per channel in [0, 1], shaped [3, 1, 1], and their count is the number of
  sampled frames;
- v3.0 adds the quantiles q01 q10 q50 q90 q99 from a 5000-bin histogram between the episode's min
  and max, interpolated inside the bin; the dataset-level quantiles are count-weighted means of the
  episodes' (an approximation LeRobot makes; our exact 1st/99th percentiles for normalization live
  in meta/fastwam_stats.json, fastwam.data.stats).

Two deliberate differences, both numerically negligible: std comes from float64 sums (LeRobot's
v3.0-era code squares uint8 pixels in uint8, which wraps, before later versions promoted them), and
image histograms come from 256-level pixel counts (identical bins, no float copy of the frames).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

QUANTILES = (0.01, 0.10, 0.50, 0.90, 0.99)
QUANTILE_KEYS = tuple(f"q{int(round(q * 100)):02d}" for q in QUANTILES)
QUANTILE_BINS = 5000
BASIC_KEYS = ("min", "max", "mean", "std", "count")


def num_image_samples(length: int, minimum: int = 100, maximum: int = 10_000, power: float = 0.75) -> int:
    """How many frames of a `length`-frame episode the image statistics use (estimate_num_samples)."""
    minimum = min(minimum, length)
    return max(minimum, min(int(length**power), maximum))


def image_sample_indices(length: int) -> np.ndarray:
    """Frame indices of the image sample: evenly spaced, rounded to the nearest (sample_indices)."""
    return np.round(np.linspace(0, length - 1, num_image_samples(length))).astype(int)


def downsample_stride(height: int, width: int, target: int = 150, threshold: int = 300) -> int:
    """Pixel stride applied to sampled frames before their statistics (auto_downsample_height_width)."""
    if max(height, width) < threshold:
        return 1
    return int(width / target) if width > height else int(height / target)


def vector_stats(values: np.ndarray, quantiles: bool = True) -> dict[str, np.ndarray]:
    """Statistics of a [T] or [T, D] column over all frames: shapes (1,) or (D,), count (1,)."""
    values = np.asarray(values)
    flat = values.reshape(len(values), -1)
    exact = flat.astype(np.float64)
    stats: dict[str, np.ndarray] = {
        # min/max keep the column's dtype (an int64 column gives int64 extremes, as in LeRobot).
        "min": flat.min(axis=0),
        "max": flat.max(axis=0),
        "mean": exact.mean(axis=0),
        "count": np.array([len(values)], dtype=np.int64),
    }
    if len(values) < 2:  # LeRobot: plain std, quantiles equal to the mean
        stats["std"] = exact.std(axis=0)
        if quantiles:
            stats.update({k: stats["mean"].copy() for k in QUANTILE_KEYS})
        return _ordered(stats)
    variance = (exact**2).mean(axis=0) - stats["mean"] ** 2
    stats["std"] = np.sqrt(np.maximum(variance, 0.0))
    if quantiles:
        per_dim = [_histogram_quantiles(exact[:, d], None) for d in range(exact.shape[1])]
        for i, key in enumerate(QUANTILE_KEYS):
            stats[key] = np.array([q[i] for q in per_dim])
    return _ordered(stats)


def image_stats(clip: np.ndarray, quantiles: bool = True) -> dict[str, np.ndarray]:
    """Per-channel statistics in [0, 1] of uint8 RGB frames [T, H, W, 3] -> shapes (3, 1, 1)."""
    clip = np.asarray(clip)
    if clip.dtype != np.uint8 or clip.ndim != 4 or clip.shape[-1] != 3 or not len(clip):
        raise ValueError(f"image statistics need uint8 [T>0, H, W, 3] frames, got {clip.dtype} {clip.shape}")
    stride = downsample_stride(clip.shape[1], clip.shape[2])
    sample = clip[image_sample_indices(len(clip))][:, ::stride, ::stride]
    pixels = np.ascontiguousarray(sample).reshape(-1, 3)
    levels = np.arange(256, dtype=np.float64)
    out: dict[str, list[float]] = {k: [] for k in ("min", "max", "mean", "std", *QUANTILE_KEYS)}
    for c in range(3):
        counts = np.bincount(pixels[:, c], minlength=256).astype(np.float64)
        present = np.flatnonzero(counts)
        total = counts.sum()
        mean = float(counts @ levels / total)
        out["min"].append(float(present[0]))
        out["max"].append(float(present[-1]))
        out["mean"].append(mean)
        if total < 2:
            out["std"].append(0.0)
            values = [mean] * len(QUANTILE_KEYS)
        else:
            out["std"].append(float(np.sqrt(max(counts @ levels**2 / total - mean**2, 0.0))))
            values = _histogram_quantiles(levels[present], counts[present])
        for key, value in zip(QUANTILE_KEYS, values, strict=True):
            out[key].append(value)
    stats = {k: (np.array(v) / 255.0).reshape(3, 1, 1) for k, v in out.items()}
    if not quantiles:
        stats = {k: v for k, v in stats.items() if k not in QUANTILE_KEYS}
    stats["count"] = np.array([len(sample)], dtype=np.int64)
    return _ordered(stats)


def aggregate_stats(
    episodes: Sequence[Mapping[str, Mapping[str, np.ndarray]]],
) -> dict[str, dict[str, np.ndarray]]:
    """Dataset statistics from per-episode ones (aggregate_stats / aggregate_feature_stats).

    min/max of the extremes, count-weighted mean, the parallel-algorithm variance, summed counts,
    and each quantile present in every episode as the count-weighted mean of the episodes'.
    """
    keys = list(dict.fromkeys(k for ep in episodes for k in ep))
    out: dict[str, dict[str, np.ndarray]] = {}
    for key in keys:
        items = [{s: np.asarray(v) for s, v in ep[key].items()} for ep in episodes if key in ep]
        counts = np.stack([it["count"] for it in items]).astype(np.float64)  # [N, 1]
        means = np.stack([it["mean"] for it in items]).astype(np.float64)
        total = counts.sum(axis=0)
        weights = counts.reshape(counts.shape + (1,) * (means.ndim - counts.ndim))
        mean = (means * weights).sum(axis=0) / total.reshape(total.shape + (1,) * (means.ndim - 2))
        variances = np.stack([it["std"] for it in items]).astype(np.float64) ** 2
        variance = ((variances + (means - mean) ** 2) * weights).sum(axis=0) / total.reshape(
            total.shape + (1,) * (means.ndim - 2)
        )
        agg = {
            "min": np.min(np.stack([it["min"] for it in items]), axis=0),
            "max": np.max(np.stack([it["max"] for it in items]), axis=0),
            "mean": mean,
            "std": np.sqrt(variance),
            "count": total.astype(np.int64),
        }
        for q in QUANTILE_KEYS:
            if all(q in it for it in items):
                values = np.stack([it[q] for it in items]).astype(np.float64)
                agg[q] = (values * weights).sum(axis=0) / total.reshape(total.shape + (1,) * (means.ndim - 2))
        out[key] = _ordered(agg)
    return out


def stats_to_lists(stats: Mapping[str, Mapping[str, np.ndarray]]) -> dict[str, dict[str, list]]:
    """JSON form: every statistic as a (nested) list, as LeRobot's serialize_dict writes them."""
    return {key: {s: np.asarray(v).tolist() for s, v in ft.items()} for key, ft in stats.items()}


def stats_from_lists(stats: Mapping[str, Mapping[str, object]]) -> dict[str, dict[str, np.ndarray]]:
    return {key: {s: np.asarray(v) for s, v in ft.items()} for key, ft in stats.items()}


def _histogram_quantiles(values: np.ndarray, weights: np.ndarray | None) -> list[float]:
    """LeRobot's histogram quantiles of one dimension (RunningQuantileStats after one update):
    QUANTILE_BINS bins from min - 1e-10 to max + 1e-10; for quantile q the target count q * N is
    located in the cumulative counts (first bin reaching it) and interpolated linearly inside that
    bin; before the first bin -> the lowest edge, past the last -> the highest, empty bin -> its
    left edge."""
    low, high = float(values.min()), float(values.max())
    edges = np.linspace(low - 1e-10, high + 1e-10, QUANTILE_BINS + 1)
    hist, _ = np.histogram(values, bins=edges, weights=weights)
    cumulative = np.cumsum(hist)
    total = float(weights.sum()) if weights is not None else float(len(values))
    out = []
    for q in QUANTILES:
        target = q * total
        i = int(np.searchsorted(cumulative, target))
        if i == 0:
            out.append(float(edges[0]))
        elif i >= len(cumulative):
            out.append(float(edges[-1]))
        else:
            before = cumulative[i - 1]
            inside = cumulative[i] - before
            if inside == 0:
                out.append(float(edges[i]))
            else:
                out.append(float(edges[i] + (target - before) / inside * (edges[i + 1] - edges[i])))
    return out


def _ordered(stats: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """LeRobot's key order: min max mean std count, then the quantiles."""
    return {k: stats[k] for k in (*BASIC_KEYS, *QUANTILE_KEYS) if k in stats}
