"""The simulation experiment end to end, reduced: 2 scripted demos through the recorder node (the
first seed's fails: a third seed is recorded in its place), the converter, the trainer (fast_wam
and no_cotrain side by side in subprocesses, tiny preset via overrides), first failing (a bad
learning rate), then re-run cleanly with the recording and dataset kept, a random-init baseline,
one closed-loop episode per model through the policy node, the report; then a re-run that skips
every stage. Demos recorded on a busy machine (bounded busy loops) convert. Real processes and
nodes, no mocks. The robot and training configs are written here so the test does not depend on
the shipped experiment configs' tuning."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

pytest.importorskip("rclpy", reason="rclpy is not installed")
pytest.importorskip("fastwam_msgs.srv", reason="fastwam_msgs is not built (scripts/bootstrap.sh)")
pytest.importorskip("fastwam_training", reason="training/ is not on PYTHONPATH (source scripts/env.sh)")
pytest.importorskip("matplotlib", reason="matplotlib is not installed (scripts/bootstrap.sh)")

from fastwam.checkpoint import load_checkpoint
from fastwam.data.lerobot import LeRobotDataset
from fastwam.robot_config import load_robot_config
from fastwam_experiments import sim_towel_fold as sim_experiment
from fastwam_training.tracking import read_metrics

pytestmark = pytest.mark.ros
CONFIG_DIR = Path(__file__).resolve().parents[2] / "fastwam_policy" / "config"
SMALL_LAYOUT = """
extends: r1_lite.yaml
cameras:
  rows:
    - [{key: head, height: 128, width: 160}]
    - [{key: wrist_left, height: 64, width: 80}, {key: wrist_right, height: 64, width: 80}]
"""
TRAIN_CONFIG = """
name: sim_experiment_test
seed: 0
robot_config: {robot_config}
model: {{preset: small, variant: fast_wam}}
data:
  cameras: {{head: observation.images.head, wrist_left: observation.images.wrist_left, wrist_right: observation.images.wrist_right}}
  video_stride: 4
  val_episodes: 0
  normalization: {{action: quantile, state: quantile}}
  num_workers: 0
cache: {{text: true, latents: true, latent_stride: 4, batch_size: 8}}
train: {{max_steps: 1000, batch_size: 4, lr: 1.0e-3, warmup_steps: 5}}
checkpoint: {{every: 1000, keep_last: 1, resume: latest}}
logging: {{every: 10, tensorboard: false, progress: true}}
validation: {{every: 0}}
"""
STEPS = 30


def _configs(tmp_path: Path, failing_seed_0: bool = False) -> tuple[Path, Path]:
    robot = tmp_path / "configs" / "r1_lite_sim_test.yaml"
    robot.parent.mkdir()
    shutil.copy(CONFIG_DIR / "r1_lite.yaml", robot.parent / "r1_lite.yaml")
    text = SMALL_LAYOUT
    if failing_seed_0:
        # The left elbow (joint 3) stopped at -1.2 rad: the towel pose of seed 0 needs -0.98 to
        # reach its corner, so the scripted fold of seed 0 fails; seeds 1 and 2 need at most -1.09
        # and -1.41 and fold (fastwam_sim.demos.scripted_demo, ROS-free, gives the same).
        spec = yaml.safe_load((CONFIG_DIR / "r1_lite.yaml").read_text())["robot"]
        spec["groups"][0]["upper"][2] = -1.2
        text += yaml.safe_dump({"robot": spec})
    robot.write_text(text)
    train = tmp_path / "configs" / "train.yaml"
    train.write_text(TRAIN_CONFIG.format(robot_config=robot))
    return robot, train


def _run(argv: list[str]) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2")}
    command = [sys.executable, "-m", "fastwam_experiments.sim_towel_fold", *argv]
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)


@pytest.mark.slow
def test_reduced_pipeline_writes_every_stage_and_a_rerun_skips_them(tmp_path):
    robot, train = _configs(tmp_path, failing_seed_0=True)
    out = tmp_path / "experiment"
    argv = [
        "--out", str(out), "--robot-config", str(robot), "--train-config", str(train),
        "--demos", "2", "--train-seed", "0", "--variants", "fast_wam", "no_cotrain", "--steps", str(STEPS),
        "--train-override", "model.preset=tiny", "--train-override", "model.overrides={action_horizon: 32}",
        "--eval-episodes", "1", "--eval-seed", "1000", "--eval-timeout-s", "2",
    ]  # fmt: skip
    # A stage that fails (training with a negative learning rate: the trainer's optimizer refuses it
    # while the caches are built) ends the run with an error naming it; the stages before it are kept.
    failed = _run([*argv, "--train-override", "train.lr=-1"])
    assert failed.returncode == 1, (failed.stdout + failed.stderr)[-6000:]
    assert "error: building the training caches failed" in failed.stderr, failed.stderr[-3000:]
    assert "Invalid learning rate: -1.0" in failed.stderr
    assert {p.name for p in (out / "stages").iterdir()} == {"record.json", "convert.json"}
    # The re-run with good settings does the failed stage and the rest cleanly, the rest skipped.
    first = _run(argv)
    log = first.stdout + first.stderr
    assert first.returncode == 0, log[-6000:]
    for stage in range(1, 7):
        assert f"== [{stage}/6]" in first.stdout, first.stdout
    log += failed.stdout + failed.stderr  # the recording's messages are the failed run's

    # record: one bag per demo, labelled; seed 0 failed, is kept, and seed 2 was recorded instead
    bags = sorted(p for p in (out / "bags").iterdir() if p.is_dir())
    assert len(bags) == 3 and all(list(b.glob("*.mcap")) for b in bags), bags
    labels = [json.loads((b / "episode.json").read_text())["task_success"] for b in bags]
    assert labels == [False, True, True]
    record = json.loads((out / "stages" / "record.json").read_text())
    assert [(e["seed"], e["used"]) for e in record["episodes"]] == [(0, False), (1, True), (2, True)]
    assert record["episodes"][0]["reason"] == "no success"
    assert "demo of seed 0 not used (no success); recording another seed" in log

    # convert: both demos as episodes, cameras at the layout size, converted (and their latents
    # cached) by the follower process while the recording went on
    dataset = LeRobotDataset(out / "dataset")
    convert = json.loads((out / "stages" / "convert.json").read_text())
    assert convert["converted_during_recording"] == 2, convert
    latents = list((out / "cache").glob("*/latents/episode_*.safetensors"))
    # Both episodes under the failed run's cache key (the follower's, during its recording) and
    # under the re-run's (its overrides differ, so its caches are its own).
    by_key = {
        key: [p for p in latents if p.parents[1].name == key] for key in {p.parents[1].name for p in latents}
    }
    assert sorted(len(v) for v in by_key.values()) == [2, 2], latents
    assert dataset.episode_indices == [0, 1]
    assert dataset.total_frames > 2 * 100  # ~10 s demos at 15 Hz
    assert dataset.feature("observation.images.head")["shape"][:2] == [128, 160]

    # train: the caches built once, then both variants side by side (their logs and metrics)
    assert "[caches]" in first.stdout and "side by side" in first.stdout
    for variant in ("fast_wam", "no_cotrain"):
        assert f"done: step {STEPS}" in (out / "train" / f"{variant}.log").read_text()
        rows = read_metrics(out / "train" / variant / "logs" / "metrics.jsonl")
        assert rows[-1]["step"] == STEPS and rows[0]["train/cpu_threads"] == 1
    # train + random: checkpoints load strictly, for this robot config, with the dataset's statistics
    config = load_robot_config(robot)
    trained = sim_experiment.trained_checkpoint(out, "fast_wam")
    assert trained is not None and trained.parent.name == f"step_{STEPS:07d}"
    assert sim_experiment.trained_checkpoint(out, "no_cotrain").parent.name == f"step_{STEPS:07d}"
    loaded = {name: load_checkpoint(path) for name, path in [("fast_wam", trained), ("random_init", out / "random_init" / "model")]}  # fmt: skip
    for checkpoint in loaded.values():
        assert checkpoint.camera_layout == config.cameras
        checkpoint.robot.check_matches(config.robot)
        assert checkpoint.action_horizon == 32
    assert loaded["fast_wam"].stats.to_dict() == loaded["random_init"].stats.to_dict()
    assert loaded["fast_wam"].extra["step"] == STEPS and loaded["random_init"].extra["step"] == 0
    trained_weights = loaded["fast_wam"].model.state_dict()
    random_weights = loaded["random_init"].model.state_dict()
    assert trained_weights.keys() == random_weights.keys()
    assert any(not (trained_weights[k] == random_weights[k]).all() for k in trained_weights)

    # eval + report: one held-out episode per model, in results.json, report.md and the plot
    results = json.loads((out / "results.json").read_text())
    assert [m["model"] for m in results["models"]] == ["fast_wam", "no_cotrain", "random_init"]
    assert [(r["model"], r["seed"]) for r in results["episodes"]] == [
        ("fast_wam", 1000),
        ("no_cotrain", 1000),
        ("random_init", 1000),
    ]
    for row in results["episodes"]:
        assert 0.0 < row["duration_s"] <= 2.5 and 0.0 <= row["progress"] <= 1.0
        assert isinstance(row["chunk_latencies_ms"], list) and row["commands"] >= 0
        assert row["sampler_seed"] == row["seed"]  # read back from the policy node
    assert set(results["stage_timings"]) == {"record", "convert", "train", "random", "eval"}
    statuses = {stage: t["status"] for stage, t in results["stage_timings"].items()}
    assert statuses == {
        "record": "skipped",
        "convert": "skipped",
        "train": "ran",
        "random": "ran",
        "eval": "ran",
    }
    report = (out / "report.md").read_text()
    assert f"| fast_wam | {STEPS} | " in report and f"| no_cotrain | {STEPS} | " in report, report
    assert "| random_init | 0 | " in report, report
    assert "| **total** |" in report
    assert (out / "success_vs_time.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # the runner's default checkpoint is this experiment's fast_wam model
    from fastwam_bringup.run import resolve_checkpoint
    from fastwam_experiments.run import experiment_checkpoint, parse_args

    args = parse_args(["--robot-config", str(robot), "--experiment-dir", str(out)])
    assert resolve_checkpoint(args, config, str(tmp_path), experiment_checkpoint) == str(trained)

    # a re-run with the same settings redoes nothing
    bag_files = {p: p.stat().st_mtime_ns for p in (out / "bags").rglob("*") if p.is_file()}
    second = _run(argv)
    assert second.returncode == 0, (second.stdout + second.stderr)[-6000:]
    assert second.stdout.count("skipped") >= 4, second.stdout  # record, convert, train, random
    rerun = json.loads((out / "results.json").read_text())
    assert all(t["status"] == "skipped" for t in rerun["stage_timings"].values()), rerun["stage_timings"]
    assert rerun["episodes"] == results["episodes"]
    assert {p: p.stat().st_mtime_ns for p in (out / "bags").rglob("*") if p.is_file()} == bag_files


def test_overlapping_evaluation_seeds_are_refused(tmp_path):
    robot, train = _configs(tmp_path)
    settings = sim_experiment.parse_args(
        ["--out", str(tmp_path / "x"), "--robot-config", str(robot), "--train-config", str(train),
         "--demos", "5", "--eval-seed", "3"]
    )  # fmt: skip
    with pytest.raises(
        ValueError,
        match=r"evaluation seeds 3\.\.12 overlap the training seeds 0\.\.6 \(the demos' and up to 2 replacements'",
    ):
        settings.check()
    assert not (tmp_path / "x").exists()


def test_training_config_for_other_cameras_is_refused(tmp_path):
    robot, train = _configs(tmp_path)
    settings = sim_experiment.parse_args(
        ["--out", str(tmp_path / "x"), "--robot-config", str(CONFIG_DIR / "r1_lite.yaml"),
         "--train-config", str(train)]
    )  # fmt: skip
    with pytest.raises(ValueError, match="trains for cameras"):
        sim_experiment.preflight(settings)


def test_a_checkpoint_of_an_earlier_format_is_not_taken_as_trained(tmp_path):
    """A run trained before checkpoint format 2 (the pre-authors action expert) is retrained: the
    runner's default checkpoint lookup passes over it instead of handing the node a refused file."""
    from fastwam.checkpoint import FORMAT_VERSION

    step = tmp_path / "train" / "fast_wam" / "checkpoints" / "step_000100"
    (step / "model").mkdir(parents=True)
    (step / "trainer_state.json").write_text("{}")
    (step / "model" / "checkpoint.json").write_text(json.dumps({"format_version": 1}))
    assert sim_experiment.trained_checkpoint(tmp_path, "fast_wam") is None
    (step / "model" / "checkpoint.json").write_text(json.dumps({"format_version": FORMAT_VERSION}))
    assert sim_experiment.trained_checkpoint(tmp_path, "fast_wam") == step / "model"


@contextlib.contextmanager
def busy_cores(seconds: float, count: int = 2):
    """`count` processes spinning a core each (a laptop doing other work), for at most `seconds`
    (they end themselves), always killed on the way out."""
    spin = f"import time\nend = time.monotonic() + {seconds}\nwhile time.monotonic() < end:\n    pass\n"
    processes = [subprocess.Popen([sys.executable, "-c", spin]) for _ in range(count)]
    try:
        yield processes
    finally:
        for process in processes:
            process.kill()
            process.wait()


@pytest.mark.slow
def test_demos_recorded_on_a_busy_machine_convert(tmp_path):
    """Two scripted demos recorded at the experiment's 3x with both cores busy, then converted:
    every demo converts (the issue's busy run died here on commands that began late), trimmed only
    where nothing was commanded, and the verdicts say so."""
    from fastwam.data.bag import convert_bags, find_bags
    from fastwam_bringup.sim_episodes import record_scripted_episodes

    robot = CONFIG_DIR / "r1_lite_sim.yaml"
    config = load_robot_config(robot)
    verdicts: list[dict] = []
    with busy_cores(240.0) as load:
        results = record_scripted_episodes(robot, tmp_path / "bags", seed=0, episodes=2, time_scale=3.0)
        added = convert_bags(
            find_bags([tmp_path / "bags"]), tmp_path / "dataset", config, resize_to_layout=True,
            log=print, verdicts=verdicts,
        )  # fmt: skip
        assert all(p.poll() is None for p in load)  # the load lasted the whole test
    assert [r.success and bool(r.recorded) for r in results] == [True, True], results
    assert [v["verdict"] for v in verdicts] == ["converted", "converted"], verdicts
    assert added == [0, 1]
    for v in verdicts:  # the operator commands from the recording's start: nothing idle to trim
        assert v["idle_head_s"] < 0.5 and v["frames"] > 140, v


def _running(pid: int) -> bool:
    """Alive and not a zombie (a reparented child that exited may wait unreaped in a container)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"


@pytest.mark.slow
def test_the_follower_stops_when_the_experiment_process_is_killed(tmp_path):
    """A SIGKILLed experiment (no atexit, so daemon=True does nothing) does not leave its recording
    follower converting into a directory that the next run deletes and rewrites."""
    robot, train = _configs(tmp_path)
    out = tmp_path / "experiment"
    (out / "bags").mkdir(parents=True)
    script = (
        "import time\nfrom pathlib import Path\nfrom fastwam_experiments import sim_towel_fold as sim_experiment\n"
        f"s = sim_experiment.Settings(out=Path({str(out)!r}), robot_config=Path({str(robot)!r}), "
        f"train_config=Path({str(train)!r}))\n"
        "follower = sim_experiment.RecordingFollower(s).__enter__()\n"
        "print(follower.process.pid, flush=True)\ntime.sleep(600)\n"
    )
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    child = None
    try:
        child = int(parent.stdout.readline())
        assert _running(child)
        parent.kill()
        parent.wait()
        # It notices at its next poll (0.5 s), after building its encoders (seconds; more under load).
        deadline = time.monotonic() + 180.0
        while _running(child) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not _running(child), "the follower outlived the killed experiment process"
    finally:
        parent.kill()
        if child is not None and _running(child):
            os.kill(child, signal.SIGKILL)


def test_experiment_record_time_scale_and_eval_timeout(tmp_path):
    base = ["--out", str(tmp_path / "x"), "--robot-config", str(CONFIG_DIR / "r1_lite_sim.yaml")]
    settings = sim_experiment.parse_args(base)
    assert settings.eval_timeout_s == 12.0
    assert settings.record_time_scale == sim_experiment.RECORD_TIME_SCALE
    settings.check()  # the defaults are valid (the training config is found in the repository)
    settings = sim_experiment.parse_args([*base, "--record-time-scale", "0"])
    with pytest.raises(ValueError, match="--record-time-scale must be positive, got 0"):
        settings.check()
    assert not (tmp_path / "x").exists()
