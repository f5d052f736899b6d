from __future__ import annotations

import numpy as np
import pytest
import torch

from fastwam.normalize import FeatureStats, NormalizationStats, Normalizer, StatsAccumulator


def test_streaming_stats_equal_whole_array_stats():
    rng = np.random.default_rng(0)
    data = rng.normal(3.0, 2.0, (5000, 4)) * [1, 10, 0.1, 1]
    data[:, 3] = 7.0  # a locked joint: zero spread
    acc = StatsAccumulator()
    for chunk in np.array_split(data, 13):
        acc.update(chunk)
    stats = acc.finalize()
    np.testing.assert_allclose(stats.mean, data.mean(0), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(stats.std, data.std(0), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(stats.q01, np.percentile(data, 1, axis=0), rtol=1e-5)
    np.testing.assert_allclose(stats.q99, np.percentile(data, 99, axis=0), rtol=1e-5)
    assert stats.count == 5000


def test_accumulator_rejects_bad_data():
    acc = StatsAccumulator()
    with pytest.raises(ValueError, match="non-finite"):
        acc.update(np.array([[1.0, np.nan]]))
    acc.update(np.zeros((2, 2)))
    with pytest.raises(ValueError, match="batch has 3 dims, earlier batches 2"):
        acc.update(np.zeros((2, 3)))
    with pytest.raises(ValueError, match="no data"):
        StatsAccumulator().finalize()


@pytest.mark.parametrize("mode", ["mean_std", "min_max", "quantile", "identity"])
def test_normalize_round_trip_numpy_and_torch(mode):
    rng = np.random.default_rng(1)
    data = rng.uniform(-2, 5, (1000, 3))
    acc = StatsAccumulator()
    acc.update(data)
    normalizer = Normalizer(NormalizationStats({"action": acc.finalize()}), {"action": mode})
    x = data[:10]
    y = normalizer.normalize("action", x)
    np.testing.assert_allclose(normalizer.unnormalize("action", y), x, atol=1e-9)
    t = torch.tensor(x, dtype=torch.float32)
    yt = normalizer.normalize("action", t)
    assert isinstance(yt, torch.Tensor) and yt.dtype == torch.float32
    np.testing.assert_allclose(yt.numpy(), y, atol=1e-5)
    if mode == "min_max":
        z = normalizer.normalize("action", data)
        assert z.min() == pytest.approx(-1.0) and z.max() == pytest.approx(1.0)


def test_zero_spread_dimension_stays_finite():
    stats = FeatureStats(*(np.ones(1),) * 2, np.ones(1), np.ones(1), np.ones(1), np.ones(1), count=3)
    stats.std = np.zeros(1)
    normalizer = Normalizer(NormalizationStats({"state": stats}), {"state": "mean_std"})
    assert np.isfinite(normalizer.normalize("state", np.array([1.0, 2.0]))).all()


def test_save_load_and_errors(tmp_path):
    acc = StatsAccumulator()
    acc.update(np.arange(12.0).reshape(4, 3))
    stats = NormalizationStats({"action": acc.finalize()})
    path = tmp_path / "stats.json"
    stats.save(path)
    loaded = NormalizationStats.load(path)
    np.testing.assert_array_equal(loaded["action"].q99, stats["action"].q99)
    with pytest.raises(KeyError, match="no normalization statistics for feature 'state'"):
        loaded["state"]
    with pytest.raises(ValueError, match="needs statistics"):
        Normalizer(None, {"action": "quantile"})
    with pytest.raises(ValueError, match="must be one of"):
        Normalizer(stats, {"action": "zscore"})
    path.write_text("{not json")
    with pytest.raises(ValueError, match="invalid normalization statistics file"):
        NormalizationStats.load(path)
    with pytest.raises(FileNotFoundError, match="missing.json"):
        NormalizationStats.load(tmp_path / "missing.json")
