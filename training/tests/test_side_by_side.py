"""Training runs side by side: the thread count file, the metrics log, real trainer processes
sharing the CPUs (a finished run's core handed to the one still training) and a failing run."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
import yaml

from fastwam_training.cpu_threads import CpuThreads, ThreadProbe, write_thread_count
from fastwam_training.side_by_side import Run, run_side_by_side, share
from fastwam_training.synthetic import experiment_dict, make_v21_dataset
from fastwam_training.tracking import read_metrics


@pytest.fixture
def restore_threads():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return make_v21_dataset(tmp_path_factory.mktemp("data") / "ds", (12, 10))


def test_threads_follow_their_file(tmp_path, restore_threads, caplog):
    path = tmp_path / "threads"
    threads = CpuThreads(1, path)
    assert threads.update() == 1 and torch.get_num_threads() == 1  # no file yet: the configured count
    write_thread_count(path, 2)
    assert threads.update() == 2 and torch.get_num_threads() == 2
    path.write_text("two\n")
    assert threads.update() == 2  # unreadable: kept, with one warning naming the file
    assert "not a positive integer" in caplog.text and str(path) in caplog.text
    write_thread_count(path, 1)
    assert threads.update() == 1 and torch.get_num_threads() == 1
    with pytest.raises(ValueError, match="cpu_threads"):
        CpuThreads(0)


def test_cpus_are_shared_out_evenly():
    assert share(2, 2) == [1, 1]
    assert share(5, 2) == [3, 2]
    assert share(4, 3) == [2, 1, 1]


def _run(dataset, tmp_path, name: str, steps: int, **sections) -> Run:
    out = tmp_path / name
    config = tmp_path / f"{name}.yaml"
    cache = {"text": True, "latents": True, "dir": str(tmp_path / "cache")}
    train = {"max_steps": steps, "batch_size": 2}
    config.write_text(yaml.safe_dump(experiment_dict(dataset, out, cache=cache, train=train, **sections)))
    command = [sys.executable, "-m", "fastwam_training.train", "--config", str(config)]
    return Run(name, command, tmp_path / f"{name}.log", out / "logs" / "metrics.jsonl", steps)


@pytest.mark.slow
def test_a_finished_run_hands_its_core_to_the_run_still_training(dataset, tmp_path):
    """Asserted on what the scheduler and the trainer record, not on when things happen: on a busy
    machine the short run may end before the long one logs a step, so no row is required before the
    hand-over; only 400 steps against 2 must keep the long one training past it."""
    long = _run(dataset, tmp_path, "long", 400)
    short = _run(dataset, tmp_path, "short", 2, model={"preset": "tiny", "variant": "no_cotrain"})
    # The caches first, once for both (as fastwam_experiments.sim_towel_fold does).
    prepared = subprocess.run([*long.command, "--prepare"], capture_output=True, text=True, timeout=300)
    assert prepared.returncode == 0, prepared.stderr[-3000:]
    assert "prepared:" in prepared.stdout
    seen: list[tuple[str, int, int]] = []  # (run, step, the long run's CPU share at that moment)
    run_side_by_side(
        [long, short],
        on_progress=lambda r, step: seen.append((r.name, step, long.threads)),
        poll_s=0.1,
        cpus=2,
    )

    assert long.returncode == 0 and short.returncode == 0
    assert long.seconds > short.seconds > 0
    # When the short run ended, the long one had one core; then it got both.
    assert ("short", 2, 1) in seen and seen[-1][:2] == ("long", 400), seen
    assert long.threads_file.read_text().strip() == "2"
    handed_over = long.threads_file.stat().st_mtime  # the last write: 1 -> 2
    rows = read_metrics(long.metrics)
    assert rows[-1]["step"] == 400
    # The trainer used what the file said: one thread in every row before the hand-over, two at the end.
    before = [r["train/cpu_threads"] for r in rows if r["time"] < handed_over]
    assert before == [1] * len(before), rows
    assert rows[-1]["train/cpu_threads"] == 2, rows
    assert read_metrics(short.metrics)[-1]["train/cpu_threads"] == 1
    assert "done: step 400" in long.log.read_text()


@pytest.mark.slow
def test_a_failing_run_is_reported_and_stops_the_others(dataset, tmp_path):
    long = _run(dataset, tmp_path, "long", 100_000)
    bad = _run(dataset, tmp_path, "bad", 5, data={"root": str(tmp_path / "missing")})
    with pytest.raises(RuntimeError, match=r"training run 'bad' failed .*bad\.log") as error:
        run_side_by_side([long, bad], poll_s=0.1, cpus=2)
    assert "missing" in str(error.value)  # the log's tail names the cause
    assert long._process.poll() is not None  # stopped, not left training


def run_probe(probe: ThreadProbe, seconds_per_step: dict[int, float], steps: int) -> list[int]:
    """Feed the probe the step times a machine with these per-count speeds would give."""
    counts, count, elapsed = [], probe.current, None
    for _ in range(steps):
        count = probe.step(elapsed)
        counts.append(count)
        elapsed = seconds_per_step[count]
    return counts


def test_adaptive_threads_leave_a_busy_machines_second_core():
    # The loaded 2-core machine's figures: 1 thread 20.4 samples/s, 2 threads 7.6.
    probe = ThreadProbe(max_threads=2, current=2)
    counts = run_probe(probe, {1: 0.8, 2: 2.1}, 40)
    assert probe.current == 1
    assert counts[-1] == 1 and counts[: ThreadProbe.FIRST_PROBE] == [2] * ThreadProbe.FIRST_PROBE
    # Probing takes (1 untimed + PROBE_STEPS timed) steps per candidate, then settles.
    probing = 2 * (1 + ThreadProbe.PROBE_STEPS)
    assert counts[ThreadProbe.FIRST_PROBE + probing :] == [1] * (40 - ThreadProbe.FIRST_PROBE - probing)


def test_adaptive_threads_keep_the_current_count_unless_another_is_clearly_faster():
    probe = ThreadProbe(max_threads=2, current=2)
    run_probe(probe, {1: 0.40, 2: 0.27}, 40)  # unloaded: 2 threads win
    assert probe.current == 2
    probe = ThreadProbe(max_threads=2, current=2)
    run_probe(probe, {1: 0.26, 2: 0.27}, 40)  # 4 % faster: within the margin, no change
    assert probe.current == 2


def test_adaptive_threads_probe_again_when_the_load_goes():
    probe = ThreadProbe(max_threads=2, current=2)
    run_probe(probe, {1: 0.8, 2: 2.1}, 30)
    assert probe.current == 1
    run_probe(probe, {1: 0.40, 2: 0.27}, ThreadProbe.PROBE_EVERY + 20)
    assert probe.current == 2


def test_adaptive_threads_are_a_config_choice_that_applies_to_torch():
    threads = torch.get_num_threads()
    try:
        setting = CpuThreads("adaptive")
        assert setting.probe is not None and setting.update() == torch.get_num_threads()
        with pytest.raises(ValueError, match="choose one"):
            CpuThreads("adaptive", "/tmp/threads")
        with pytest.raises(ValueError, match="adaptive"):
            CpuThreads("fast")
    finally:
        torch.set_num_threads(threads)
