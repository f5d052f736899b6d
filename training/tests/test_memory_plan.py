"""The memory plan's activation model against a real forward's memory on this CPU."""

from __future__ import annotations

import pytest

from fastwam_training import memory_plan


@pytest.mark.slow
def test_traced_activations_match_measured_rss_of_the_small_preset():
    rows = {r["checkpointing"]: r for r in memory_plan.check([4], repeats=3)}
    # Without checkpointing the forward's peak is the saved activations: measured 0.99 of traced.
    assert 0.9 < rows[False]["ratio"] < 1.15, rows[False]
    # With it the activations are ~18 MB, and the RSS growth of that forward depends on the
    # environment (0.82-0.86 of traced here, 1.33-1.49 in CI's fresh clones, the least of 3
    # processes): too small a figure to compare to a band in a test. `python -m
    # fastwam_training.memory_plan --check` prints it; here, checkpointing's effect itself.
    assert rows[True]["measured"] < 0.3 * rows[False]["measured"]
    assert rows[True]["predicted"] < 0.3 * rows[False]["predicted"]


def test_full_size_plan_at_the_r1_lite_layout():
    cfg, layout = memory_plan.r1_lite_config()
    counts = memory_plan.ParameterCounts.of(cfg)
    assert 5.5e9 < counts.total < 6.5e9  # ~5 B video DiT + ~1 B action expert
    trace = memory_plan.trace_activations(cfg, layout, batch=1)
    assert len(trace.layers) == cfg.video.num_layers
    assert trace.checkpointed < trace.plain / 5
    rows = memory_plan.plan_rows(counts, trace, [8, 64])
    by = {(r["gpus"], r["checkpointing"]): r for r in rows}
    # Sharded state shrinks with the GPU count; the gathered working set and activations do not.
    assert by[(64, False)]["optimizer"] * 8 == by[(8, False)]["optimizer"]
    assert by[(64, True)]["gathered"] == by[(8, True)]["gathered"]
    assert all(r["total"] < 80 * memory_plan.GIB for r in rows)
