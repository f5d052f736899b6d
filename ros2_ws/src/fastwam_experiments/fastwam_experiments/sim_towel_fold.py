"""End to end in simulation: record demos, train Fast-WAM and its ablations, evaluate closed-loop, report.

    python -m fastwam_experiments.sim_towel_fold --out runs/sim_towel_fold     (scripts/sim_experiment.sh)

Stages, each idempotent (skipped when its outputs exist for the same settings; --force redoes all):
    record   N scripted demonstrations through the recorder node in the simulated R1 Lite (at
             --record-time-scale x real time: the same frames and stamps as a real-time recording),
             seeds --train-seed .. + N - 1; a demo that fails, goes unrecorded or that the
             converter would reject is kept (not used) and the next seed recorded in its place,
             up to --extra-demos more                                              -> <out>/bags
    convert  bags -> LeRobot v3.0 dataset (fastwam.data.bag, cameras resized to the layout)
                                                                                  -> <out>/dataset
    train    per --variants: python -m fastwam_training.train --config <train-config> (subprocesses;
             the text and VAE latent caches in <out>/cache are built first and shared; on CPU the
             variants train side by side, a core each, a finished one's core going to the others)
                                                                                  -> <out>/train/<v>
    random   the same model, random-initialised, with the dataset's normalization -> <out>/random_init
    eval     M closed-loop episodes per model through the policy node, motion enabled, on held-out
             seeds --eval-seed .. + M - 1, each ending at the first success or the timeout
             (--eval-timeout-s, 12 s of simulated time: the scripted fold succeeds at ~6.4 s)
                                                                                  -> <out>/eval/<m>.json
    report   <out>/results.json, <out>/report.md and <out>/success_vs_time.png (success rate vs mean
             completion time per model, as the Fast-WAM paper's Figure 4)

Each stage's settings and wall time are kept in <out>/stages/<stage>.json; a stage whose inputs
changed is redone, and so is everything downstream of it.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm import tqdm

from fastwam.inference_device import CPU_THREADS
from fastwam.robot_config import load_robot_config
from fastwam.shipped_configs import SIM_CONFIG, shipped_config
from fastwam_bringup.composition import private_ros_domain
from fastwam_bringup.run import POLICY_EPISODE_TIMEOUT_S, percentile
from fastwam_sim.env import EVAL_SEED, SIM_IMAGE_SIZE

DEFAULT_OUT = "runs/sim_towel_fold"
TRAIN_CONFIG = Path("training/configs/sim_towel_fold.yaml")  # in the repository
VARIANTS = ("fast_wam", "no_cotrain", "joint", "idm")
RANDOM_INIT = "random_init"
STAGES = ("record", "convert", "train", "random", "eval", "report")
# Scripted episodes in the recorder (simulated seconds, divided by the time scale), with the
# conversion and VAE latent cache that RecordingFollower does meanwhile (60 demos: 234 s, then 2 s of
# convert stage); and training, per sample of the sim preset on 2 CPU cores, one variant at a time
# (the variants with future video ~2x no_cotrain): for the time estimate printed before the runner
# trains its default checkpoint.
RECORD_SECONDS_PER_DEMO = 11.7
CONVERT_SECONDS_PER_DEMO = 0.1
# The simulated robot's speed while recording: the largest of 2, 3, 4 measured loss-free on 2 busy
# CPU cores (benchmarks/sim_time_scale.py: no camera frame missing or late, dataset frames per
# episode as at 1x, within the 1x runs' own +-1). 4x kept every frame but its episodes converted to
# 1-3 frames fewer (a shorter span covered by every topic).
RECORD_TIME_SCALE = 3.0
# Training (fused AdamW), one at a time on both cores: fast_wam ~0.27 s and no_cotrain ~0.15 s per
# step of 16 (2026-11-24); joint and idm as measured before the fused optimizer. Side by side (the
# experiment's two variants) 2900 steps of both took 1035 s, fast_wam being the last to finish.
SECONDS_PER_TRAIN_SAMPLE = {"fast_wam": 0.018, "no_cotrain": 0.010, "joint": 0.020, "idm": 0.025}


def default_train_config() -> Path:
    """training/configs/sim_towel_fold.yaml under the working directory (the scripts run from the
    repository root), else beside the fastwam_training package this experiment trains with (a
    checkout's training/, where env.sh and pip -e put the package)."""
    if TRAIN_CONFIG.is_file():
        return TRAIN_CONFIG
    import fastwam_training

    beside = Path(fastwam_training.__file__).resolve().parents[1] / "configs" / TRAIN_CONFIG.name
    return beside if beside.is_file() else TRAIN_CONFIG


@dataclass
class Settings:
    out: Path
    robot_config: Path
    train_config: Path
    demos: int = 60
    train_seed: int = 0
    extra_demos: int | None = None  # seeds recorded in place of unusable demos; None: max(2, demos // 10)
    variants: tuple[str, ...] = ("fast_wam", "no_cotrain")
    steps: int | None = None  # train.max_steps override
    train_overrides: tuple[str, ...] = ()
    eval_episodes: int = 10
    eval_seed: int = EVAL_SEED
    eval_timeout_s: float = POLICY_EPISODE_TIMEOUT_S
    record_time_scale: float = RECORD_TIME_SCALE
    instruction: str = "fold the towel"
    image_size: tuple[int, int] = SIM_IMAGE_SIZE
    device: str = "cpu"
    force: bool = False
    stage_seconds: dict[str, float] = field(default_factory=dict)  # this run's wall time per stage
    stage_status: dict[str, str] = field(default_factory=dict)  # ran | skipped

    def check(self) -> None:
        """Refuse bad settings before anything runs, naming the option."""
        if not self.robot_config.is_file():
            raise ValueError(f"--robot-config {self.robot_config}: no such file")
        if not self.train_config.is_file():
            raise ValueError(
                f"--train-config {self.train_config}: no such file (run from the repository root or pass it)"
            )
        if self.demos < 1:
            raise ValueError(f"--demos must be at least 1, got {self.demos}")
        if self.extra_demos is not None and self.extra_demos < 0:
            raise ValueError(f"--extra-demos must be >= 0, got {self.extra_demos}")
        if self.eval_episodes < 0:
            raise ValueError(f"--eval-episodes must be >= 0, got {self.eval_episodes}")
        if not self.record_time_scale > 0:
            raise ValueError(f"--record-time-scale must be positive, got {self.record_time_scale}")
        if self.eval_timeout_s <= 0:
            raise ValueError(f"--eval-timeout-s must be positive, got {self.eval_timeout_s}")
        if self.steps is not None and self.steps < 1:
            raise ValueError(f"--steps must be at least 1, got {self.steps}")
        unknown = [v for v in self.variants if v not in VARIANTS]
        if unknown or len(set(self.variants)) != len(self.variants):
            raise ValueError(f"--variants {list(self.variants)}: each once, from {list(VARIANTS)}")
        for item in self.train_overrides:
            if "=" not in item:
                raise ValueError(f"--train-override {item!r} must look like section.key=value")
        train = range(self.train_seed, self.train_seed + self.demos + self.max_extra_demos)
        held_out = range(self.eval_seed, self.eval_seed + self.eval_episodes)
        overlap = sorted(set(train) & set(held_out))
        if overlap:
            raise ValueError(
                f"evaluation seeds {held_out.start}..{held_out.stop - 1} overlap the training seeds "
                f"{train.start}..{train.stop - 1} (the demos' and up to {self.max_extra_demos} replacements', "
                f"e.g. {overlap[0]}): choose another --eval-seed"
            )

    @property
    def max_extra_demos(self) -> int:
        return max(2, self.demos // 10) if self.extra_demos is None else self.extra_demos

    @property
    def train_seeds(self) -> list[int]:
        return list(range(self.train_seed, self.train_seed + self.demos))

    @property
    def eval_seeds(self) -> list[int]:
        return list(range(self.eval_seed, self.eval_seed + self.eval_episodes))

    def trainer_overrides(self, variant: str) -> list[str]:
        """The key=value overrides every training run (and the random baseline's model) gets."""
        out = self.out.resolve()
        # Variants of one model configuration share the text and VAE latent caches; another
        # configuration (preset, encoders) gets its own, as the trainer refuses a foreign cache.
        cache_key = _digest([_file_digest(self.train_config), sorted(self.train_overrides)])
        overrides = [
            f"data.root={out / 'dataset'}",
            f"output_dir={out / 'train' / variant}",
            f"model.variant={variant}",
            f"cache.dir={out / 'cache' / cache_key}",
        ]
        if self.steps is not None:
            overrides.append(f"train.max_steps={self.steps}")
        return overrides + list(self.train_overrides)


# -- stage bookkeeping ------------------------------------------------------------------------------
def _digest(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _file_digest(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]


def _manifest_path(out: Path, stage: str) -> Path:
    return out / "stages" / f"{stage}.json"


def _finished(out: Path, stage: str, settings: dict[str, Any]) -> dict[str, Any] | None:
    """The stage's manifest when it finished with exactly these settings, else None."""
    path = _manifest_path(out, stage)
    if not path.is_file():
        return None
    manifest = json.loads(path.read_text())
    return manifest if manifest.get("settings") == settings else None


def _mark_finished(out: Path, stage: str, settings: dict[str, Any], seconds: float, **extra: Any) -> dict:
    path = _manifest_path(out, stage)
    path.parent.mkdir(parents=True, exist_ok=True)
    manifest = {"settings": settings, "seconds": round(seconds, 2), **extra}
    _write_json(path, manifest)
    return manifest


def _write_json(path: Path, data: Any) -> None:
    """Write through a temporary file: a killed run leaves the old file or the new one, never half."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2))
    os.replace(tmp, path)


def _header(index: int, stage: str, text: str) -> None:
    print(f"\n== [{index}/{len(STAGES)}] {stage}: {text}", flush=True)


def _robot_fingerprint(robot_config: Path) -> str:
    """What the experiment uses from the robot config (extends resolved): spec, cameras, control."""
    config = load_robot_config(robot_config)
    return _digest(
        {
            "robot": config.robot.to_dict(),
            "cameras": config.cameras.to_dict(),
            "topics": repr(config.topics),
            "control": repr(config.control),
        }
    )


# -- stages -----------------------------------------------------------------------------------------
def stage_record(s: Settings) -> dict[str, Any]:
    from fastwam_bringup.sim_episodes import record_scripted_episodes

    bags = s.out / "bags"
    settings = {
        "demos": s.demos,
        "train_seed": s.train_seed,
        "robot": _robot_fingerprint(s.robot_config),
        "image_size": list(s.image_size),
        "instruction": s.instruction,
        # Only when faster: recordings made before the option existed were real-time ones.
        **({"time_scale": s.record_time_scale} if s.record_time_scale != 1.0 else {}),
    }
    _header(
        1,
        "record",
        f"{s.demos} scripted demos (seeds {s.train_seed}..{s.train_seed + s.demos - 1}) -> {bags}",
    )
    done = None if s.force else _finished(s.out, "record", settings)
    if done is not None and bags.is_dir():
        print(f"skipped: {len(done['episodes'])} demos recorded earlier ({done['seconds']:.0f} s)")
        s.stage_status["record"] = "skipped"
        return done
    # A new recording makes the dataset and the caches built from the old one stale.
    for stale in (bags, s.out / "dataset", s.out / "cache"):
        shutil.rmtree(stale, ignore_errors=True)
    started = time.monotonic()
    config = load_robot_config(s.robot_config)
    episodes: list[dict[str, Any]] = []
    seed, last_seed = s.train_seed, s.train_seed + s.demos + s.max_extra_demos - 1
    with RecordingFollower(s), tqdm(total=s.demos, desc="record", unit="demo") as bar:
        successes = 0

        def on_episode(result) -> None:
            nonlocal successes
            successes += bool(result.success)
            bar.update(1)
            bar.set_postfix(success=f"{successes}/{bar.n}")

        while (usable := sum(e["used"] for e in episodes)) < s.demos:
            count = s.demos - usable
            if seed + count - 1 > last_seed:
                unused = "; ".join(f"seed {e['seed']}: {e['reason']}" for e in episodes if not e["used"])
                raise RuntimeError(
                    f"only {usable} of {s.demos} demos usable after recording seeds {s.train_seed}..{seed - 1} "
                    f"(--extra-demos {s.max_extra_demos}) into {bags}: {unused}"
                )
            if episodes:
                bar.total += count
                bar.refresh()
            results = record_scripted_episodes(
                s.robot_config,
                bags,
                seed=seed,
                episodes=count,
                instruction=s.instruction,
                image_size=s.image_size,
                on_episode=on_episode,
                time_scale=s.record_time_scale,
            )
            seed += count
            for r in results:
                reason = _unusable(r, bags, config)
                episodes.append(
                    {
                        "seed": r.seed,
                        "success": r.success,
                        "recorded": r.recorded,
                        "completion_s": r.completion_s,
                        "used": not reason,
                        **({"reason": reason} if reason else {}),
                    }
                )
                if reason:
                    tqdm.write(
                        f"  demo of seed {r.seed} not used ({reason}); recording another seed in its place"
                    )
    seconds = time.monotonic() - started
    s.stage_status["record"] = "ran"
    return _mark_finished(s.out, "record", settings, seconds, episodes=episodes)


def _unusable(result, bags: Path, config) -> str:
    """Why a recorded scripted demo cannot train (no success, not recorded, or the converter's
    rejection of its bag), or "" when it can. The bag is kept either way."""
    from fastwam.data.bag import check_bag

    if not result.recorded:
        return "not recorded"
    if not result.success:
        return "no success"
    return check_bag(bags / result.recorded, config)


class RecordingFollower:
    """Converts and caches the demos while the record stage is still recording them.

    The recording (simulated robot, recorder, DDS in one Python process) keeps about one of two CPU
    cores busy; a spawned process uses the other to convert each bag as soon as the recorder has
    saved it and to encode its VAE latents into the training cache (one torch thread). The convert
    stage and the trainers' ``--prepare`` then find those episodes done. It only saves time: the
    stages that follow skip what it finished and do whatever it did not, and if it fails, what it
    wrote is removed and they do everything.
    """

    def __init__(self, s: Settings) -> None:
        self.s = s
        self.process = None

    def __enter__(self) -> RecordingFollower:
        import multiprocessing

        s = self.s
        ctx = multiprocessing.get_context("spawn")  # no forked rclpy / torch state
        self.stop = ctx.Event()
        overrides = s.trainer_overrides(s.variants[0])
        args = (
            s.out / "bags", s.out / "dataset", s.robot_config, s.train_config, overrides, self.stop, os.getpid()
        )  # fmt: skip
        self.process = ctx.Process(
            target=_follow_recording, args=args, name="recording-follower", daemon=True
        )
        self.process.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        # The last bags: a few seconds of conversion and encoding (much more only on a stalled disk).
        wait_s = 300.0 if exc[0] is None else 10.0
        self.process.join(wait_s)
        behind = self.process.is_alive()
        if behind:
            self.process.terminate()
            self.process.join()
        if self.process.exitcode != 0:
            what = (
                f"was still converting {wait_s:.0f} s after the recording ended (a busy machine) and was stopped"
                if behind
                else f"failed (exit code {self.process.exitcode})"
            )
            tqdm.write(
                f"warning: converting during the recording {what}; the convert and train stages do it all"
            )
            for partial in (self.s.out / "dataset", self.s.out / "cache"):
                shutil.rmtree(partial, ignore_errors=True)


def _saved_bags(bags: Path, seen: set[str]) -> list[Path]:
    """Bags under `bags` the recorder has finished saving (episode.json status "saved"), new ones only."""
    from fastwam.data.episode_bag import SAVED, read_episode_json

    if not bags.is_dir():
        return []
    found = []
    for bag in sorted(p for p in bags.iterdir() if p.is_dir() and p.name not in seen):
        try:
            episode = read_episode_json(bag)
        except (OSError, ValueError):  # being rewritten: next time
            continue
        if episode is not None and episode.get("status") == SAVED:
            found.append(bag)
    return found


def _follow_recording(
    bags: Path, dataset: Path, robot_config: Path, train_config: Path, overrides, stop, parent: int
) -> None:
    """RecordingFollower's process: convert saved bags in recording order and cache their latents,
    until `stop` is set and every saved bag is done, or until the experiment process is gone.

    ``daemon=True`` ends it only when the parent exits normally; a parent killed by a signal (Ctrl-C
    on a busy machine, ``kill``, the OOM killer) would leave it converting into a directory the next
    run deletes and rewrites, so it also stops once it is no longer the parent's child."""
    import torch

    from fastwam.data.bag import convert_bags
    from fastwam_training.config import load_config
    from fastwam_training.trainer import CachePreparer

    torch.set_num_threads(1)  # the other core is the recording's
    config = load_robot_config(robot_config)
    prepare_caches = CachePreparer(load_config(train_config, overrides))  # the encoders, built once
    seen: set[str] = set()
    while os.getppid() == parent:  # reparented: the experiment process died without stopping us
        stopping = stop.is_set()  # read first: bags saved before the stop are then all found
        ready = _saved_bags(bags, seen)
        if ready:
            convert_bags(
                ready, dataset, config, only_success=True, resize_to_layout=True,
                update_stats=False, log=lambda *_: None,
            )  # fmt: skip
            seen.update(bag.name for bag in ready)
            if (dataset / "meta" / "info.json").is_file():
                prepare_caches(progress=False, text=False)
        elif stopping:
            return
        else:
            stop.wait(0.5)


def _log_conversion(line: str) -> None:
    if not (line.startswith("skipped ") and ": already in " in line):  # the follower's: counted above
        tqdm.write(f"  {line}")


def stage_convert(s: Settings, record: dict[str, Any]) -> dict[str, Any]:
    from fastwam.data.bag import convert_bags, find_bags, update_dataset_stats

    dataset = s.out / "dataset"
    settings = {"record": _digest(record["settings"]), "resize_to_layout": True, "only_success": True}
    _header(2, "convert", f"{s.out / 'bags'} -> LeRobot dataset {dataset}")
    done = None if s.force else _finished(s.out, "convert", settings)
    if done is not None and (dataset / "meta" / "info.json").is_file():
        print(f"skipped: {done['episodes']} episodes, {done['frames']} frames converted earlier")
        s.stage_status["convert"] = "skipped"
        return done
    if s.stage_status.get("record") != "ran":
        # Converting anew (the recording is older): the trainers' latent cache names the dataset by
        # path only, so a new dataset invalidates it too. After a recording in this run, the
        # follower's episodes are this recording's: converting skips them.
        shutil.rmtree(dataset, ignore_errors=True)
        shutil.rmtree(s.out / "cache", ignore_errors=True)
    started = time.monotonic()
    from fastwam.data.lerobot import LeRobotDataset

    early = len(LeRobotDataset(dataset).episode_indices) if (dataset / "meta" / "info.json").is_file() else 0
    if early:
        print(f"{early} episodes converted while recording")
    config = load_robot_config(s.robot_config)
    bags = find_bags([s.out / "bags"])
    verdicts: list[dict[str, Any]] = []
    for bag in tqdm(bags, desc="convert", unit="episode"):
        # A rejected bag is reported (printed, <dataset>/meta/fastwam_conversion.jsonl) and left out.
        convert_bags(
            [bag],
            dataset,
            config,
            only_success=True,
            resize_to_layout=True,
            update_stats=False,
            log=_log_conversion,
            verdicts=verdicts,
        )
    if not (dataset / "meta" / "info.json").is_file():
        raise RuntimeError(f"no demo in {s.out / 'bags'} could be converted (verdicts: {dataset}/meta)")
    update_dataset_stats(dataset, config)
    data = LeRobotDataset(dataset)
    rejected = {Path(v["bag"]).name: v["reason"] for v in verdicts if v["verdict"] == "rejected"}
    if len(data.episode_indices) < s.demos:
        tqdm.write(f"warning: {len(data.episode_indices)} of {s.demos} demos converted; rejected: {rejected}")
    s.stage_status["convert"] = "ran"
    return _mark_finished(
        s.out,
        "convert",
        settings,
        time.monotonic() - started,
        episodes=len(data.episode_indices),
        frames=data.total_frames,
        converted_during_recording=early,
        rejected=rejected,
    )


def _checkpoint_format() -> int:
    from fastwam.checkpoint import FORMAT_VERSION  # imports the model (torch, diffusers): only when needed

    return FORMAT_VERSION


def trained_checkpoint(out: str | os.PathLike[str], variant: str) -> Path | None:
    """The last complete checkpoint's model directory of a variant's training run, or None."""
    root = Path(out) / "train" / variant / "checkpoints"
    done = sorted(p for p in root.glob("step_*") if (p / "trainer_state.json").is_file())
    if not done or not (done[-1] / "model" / "checkpoint.json").is_file():
        return None
    # A checkpoint of an earlier format (e.g. 1, the pre-authors action expert) is not this model's:
    # None, so that the runner and the train stage produce a new one instead of failing to load it.
    meta = json.loads((done[-1] / "model" / "checkpoint.json").read_text())
    return done[-1] / "model" if meta.get("format_version") == _checkpoint_format() else None


def _train_settings(s: Settings, convert: dict[str, Any], variant: str) -> dict[str, Any]:
    return {
        "dataset": _digest(convert["settings"]),
        "train_config": _file_digest(s.train_config),
        "overrides": s.trainer_overrides(variant),
        "checkpoint_format": _checkpoint_format(),
    }


def stage_train(s: Settings, convert: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Train the variants not trained earlier: the caches first (``--prepare``), then the runs, side
    by side on one CPU core each on CPU (``fastwam_training.side_by_side``), else one by one."""
    from fastwam_training.config import load_config

    _header(3, "train", f"variants {', '.join(s.variants)} with {s.train_config}")
    results, todo = {}, []
    for variant in s.variants:
        done = None if s.force else _finished(s.out, f"train_{variant}", _train_settings(s, convert, variant))
        if done is not None and trained_checkpoint(s.out, variant) is not None:
            print(f"[{variant}] skipped: {done['checkpoint']} trained earlier ({done['seconds']:.0f} s)")
            results[variant] = done
        else:
            todo.append(variant)
    if not todo:
        s.stage_status["train"] = "skipped"
        s.stage_seconds["train"] = 0.0
        return results
    started = time.monotonic()
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}

    def command(variant: str, *extra: str) -> list[str]:
        return [
            sys.executable, "-m", "fastwam_training.train", "--config", str(s.train_config), *extra,
            *s.trainer_overrides(variant),
        ]  # fmt: skip

    for variant in todo:
        shutil.rmtree(s.out / "train" / variant, ignore_errors=True)
    # The text and VAE latent caches, built once for every variant (their progress bars show here).
    prepare = command(todo[0], "--prepare")
    print("[caches] " + " ".join(prepare), flush=True)
    if subprocess.call(prepare, env=env) != 0:
        raise RuntimeError(f"building the training caches failed; command: {' '.join(prepare)}")
    seconds: dict[str, float] = {}
    if s.device == "cpu" and len(todo) > 1:
        from fastwam_training.side_by_side import Run, run_side_by_side

        runs = []
        for variant in todo:
            run_dir = s.out / "train" / variant
            steps = load_config(s.train_config, s.trainer_overrides(variant)).train.max_steps
            runs.append(
                Run(
                    variant,
                    command(variant, "logging.progress=false"),
                    log=s.out / "train" / f"{variant}.log",
                    metrics=run_dir / "logs" / "metrics.jsonl",
                    max_steps=steps,
                )
            )
        print(
            f"[train] {', '.join(todo)} side by side, one CPU core each to start (logs: "
            f"{', '.join(str(r.log) for r in runs)})",
            flush=True,
        )
        bars = {
            r.name: tqdm(total=r.max_steps, desc=f"train {r.name}", unit="step", position=i)
            for i, r in enumerate(runs)
        }

        def progress(run, step: int) -> None:
            bar = bars[run.name]
            bar.update(step - bar.n)
            bar.set_postfix(threads=run.threads)

        try:
            run_side_by_side(runs, env=env, on_progress=progress)
        finally:
            for bar in bars.values():
                bar.close()
        seconds = {r.name: r.seconds for r in runs}
    else:
        for i, variant in enumerate(todo, 1):
            cmd = command(variant)
            print(f"[{variant}] ({i}/{len(todo)}) " + " ".join(cmd), flush=True)
            t0 = time.monotonic()
            code = subprocess.call(cmd, env=env)  # the trainer's own progress bar shows here
            seconds[variant] = time.monotonic() - t0
            if code != 0:
                raise RuntimeError(
                    f"training variant {variant!r} failed (exit code {code}); command: {' '.join(cmd)}"
                )
    for variant in todo:
        checkpoint = trained_checkpoint(s.out, variant)
        if checkpoint is None:
            raise RuntimeError(
                f"training variant {variant!r} left no checkpoint under {s.out / 'train' / variant}"
            )
        step = json.loads((checkpoint.parent / "trainer_state.json").read_text())["step"]
        results[variant] = _mark_finished(
            s.out,
            f"train_{variant}",
            _train_settings(s, convert, variant),
            seconds[variant],
            checkpoint=str(checkpoint),
            steps=int(step),
        )
    s.stage_status["train"] = "ran"
    s.stage_seconds["train"] = time.monotonic() - started
    return {v: results[v] for v in s.variants}


def stage_random(s: Settings, convert: dict[str, Any]) -> dict[str, Any]:
    """A random-initialised model built exactly as the trainer builds its starting point, saved
    with the dataset's normalization statistics (so its actions lie in the robot's range)."""
    path = s.out / RANDOM_INIT / "model"
    settings = {**_train_settings(s, convert, "fast_wam"), "model": "random_init"}
    _header(4, "random", f"random-initialised baseline -> {path}")
    done = None if s.force else _finished(s.out, "random", settings)
    if done is not None and (path / "checkpoint.json").is_file():
        print("skipped: created earlier")
        s.stage_status["random"] = "skipped"
        return done
    import torch

    from fastwam.data.lerobot import LeRobotDataset
    from fastwam.data.stats import default_stats_path
    from fastwam.normalize import NormalizationStats
    from fastwam_training import modeling
    from fastwam_training.config import load_config

    started = time.monotonic()
    shutil.rmtree(path.parent, ignore_errors=True)
    with tqdm(total=2, desc="random", unit="step") as bar:
        config = load_config(s.train_config, s.trainer_overrides("fast_wam"))
        robot, layout = config.robot_and_cameras()
        dataset = LeRobotDataset(s.out / "dataset")
        stats = NormalizationStats.load(default_stats_path(dataset))
        model, components = modeling.build(config, robot, layout)
        bar.update(1)
        modeling.save(
            path,
            {k: v.detach().to(torch.float32) for k, v in model.state_dict().items()},
            model.config,
            config,
            robot,
            layout,
            stats,
            components,
            control_fps=load_robot_config(s.robot_config).control.rate_hz,
            dataset_fps=dataset.fps,
            extra={"experiment": config.name, "step": 0, "random_init": True, "dataset": str(dataset.root)},
        )
        bar.update(1)
    s.stage_status["random"] = "ran"
    return _mark_finished(
        s.out, "random", settings, time.monotonic() - started, checkpoint=str(path), steps=0
    )


def stage_eval(s: Settings, models: dict[str, dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    from fastwam_bringup.sim_episodes import run_policy_episode

    _header(
        5,
        "eval",
        f"{s.eval_episodes} closed-loop episodes per model on held-out seeds "
        f"{s.eval_seed}..{s.eval_seed + s.eval_episodes - 1}, timeout {s.eval_timeout_s:g} s",
    )
    rows_by_model, seconds, ran = {}, 0.0, False
    robot = _robot_fingerprint(s.robot_config)
    for name, trained in models.items():
        checkpoint = Path(trained["checkpoint"])
        settings = {
            "checkpoint": str(checkpoint),
            "checkpoint_json": _file_digest(checkpoint / "checkpoint.json"),
            "weights": _file_digest(checkpoint / "model.safetensors"),
            "robot": robot,
            "image_size": list(s.image_size),
            "timeout_s": s.eval_timeout_s,
            "instruction": s.instruction,
            "device": s.device,
            "sampler_seed": "pose",  # the policy node's noise seeded per episode (run_policy_episode)
            "cpu_threads": CPU_THREADS,  # the policy node's inference threads (latency depends on them)
        }
        path = s.out / "eval" / f"{name}.json"
        rows: list[dict[str, Any]] = []
        if path.is_file() and not s.force:
            saved = json.loads(path.read_text())
            if saved.get("settings") == settings:  # episodes done earlier are kept (seed by seed)
                rows = [r for r in saved["episodes"] if r["seed"] in s.eval_seeds]
        todo = [seed for seed in s.eval_seeds if seed not in {r["seed"] for r in rows}]
        bar = tqdm(
            total=len(s.eval_seeds), initial=len(s.eval_seeds) - len(todo), desc=f"eval {name}", unit="ep"
        )
        bar.set_postfix(success=f"{sum(r['success'] for r in rows)}/{len(rows)}")
        for seed in todo:
            started = time.monotonic()
            result = run_policy_episode(
                s.robot_config,
                checkpoint,
                seed,
                timeout_s=s.eval_timeout_s,
                instruction=s.instruction,
                image_size=s.image_size,
                device=s.device,
            )
            seconds += time.monotonic() - started
            ran = True
            rows.append(result.to_dict())
            path.parent.mkdir(parents=True, exist_ok=True)
            _write_json(path, {"settings": settings, "episodes": rows})
            bar.update(1)
            bar.set_postfix(success=f"{sum(r['success'] for r in rows)}/{len(rows)}")
        bar.close()
        rows_by_model[name] = sorted(rows, key=lambda r: r["seed"])
    s.stage_status["eval"] = "ran" if ran else "skipped"
    s.stage_seconds["eval"] = seconds
    return rows_by_model


def summarize(name: str, model: dict[str, Any], rows: list[dict[str, Any]]) -> dict[str, Any]:
    successes = [r for r in rows if r["success"]]
    latencies = [v for r in rows for v in r["chunk_latencies_ms"]]
    times = [r["completion_s"] for r in successes]
    return {
        "model": name,
        "checkpoint": model["checkpoint"],
        "training_steps": model.get("steps", 0),
        "episodes": len(rows),
        "successes": len(successes),
        "success_rate": len(successes) / len(rows) if rows else None,
        "mean_completion_s": statistics.fmean(times) if times else None,
        "latency_median_ms": statistics.median(latencies) if latencies else None,
        "latency_p95_ms": percentile(latencies, 0.95),
        # Latencies are of the chunks the policy node applied; a chunk that arrived too late to
        # use is discarded unpublished, counted only in chunks_predicted.
        "chunks_applied": len(latencies),
        "chunks_predicted": sum(r["chunks_predicted"] for r in rows),
    }


def _fmt(value: float | None, spec: str, unit: str = "") -> str:
    return "-" if value is None else f"{value:{spec}}{unit}"


def report_table(summaries: list[dict[str, Any]]) -> str:
    lines = [
        "| variant | training steps | success | success % | mean completion time (s) | latency median (ms) "
        "| latency p95 (ms) | chunks applied / predicted |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for m in summaries:
        rate = None if m["success_rate"] is None else 100.0 * m["success_rate"]
        lines.append(
            f"| {m['model']} | {m['training_steps']} | {m['successes']}/{m['episodes']} | {_fmt(rate, '.0f', ' %')} "
            f"| {_fmt(m['mean_completion_s'], '.1f')} | {_fmt(m['latency_median_ms'], '.0f')} "
            f"| {_fmt(m['latency_p95_ms'], '.0f')} | {m['chunks_applied']} / {m['chunks_predicted']} |"
        )
    return "\n".join(lines)


def plot_success_vs_time(summaries: list[dict[str, Any]], path: Path, timeout_s: float) -> None:
    """Success rate against mean completion time of the successful episodes, one point per model
    (the Fast-WAM paper's Figure 4). Models without a success sit at the timeout."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.0, 4.5), dpi=120)
    placed: dict[tuple[float, float], int] = {}  # labels of models on the same point are stacked
    for m in summaries:
        x = m["mean_completion_s"] if m["mean_completion_s"] is not None else timeout_s
        y = 100.0 * (m["success_rate"] or 0.0)
        marker = "x" if m["model"] == RANDOM_INIT else "o"
        ax.scatter([x], [y], s=70, marker=marker, zorder=3, label=m["model"])
        above = placed.get((round(x, 2), round(y, 1)), 0)
        placed[(round(x, 2), round(y, 1))] = above + 1
        ax.annotate(m["model"], (x, y), textcoords="offset points", xytext=(-6, 8 + 13 * above), ha="right")
    ax.set_xlabel("mean completion time of successful episodes (s, simulated)")
    ax.set_ylabel("success rate (%)")
    ax.set_ylim(-5, 105)
    ax.set_xlim(0, timeout_s * 1.05)
    ax.grid(True, alpha=0.3)
    ax.set_title("Simulated R1 Lite towel fold: success vs completion time")
    ax.legend(loc="lower left", fontsize="small")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png")
    plt.close(fig)


def stage_report(
    s: Settings, models: dict[str, dict[str, Any]], rows: dict[str, list[dict[str, Any]]], total_s: float
) -> list[dict[str, Any]]:
    _header(6, "report", f"{s.out / 'results.json'}, report.md, success_vs_time.png")
    summaries = [summarize(name, models[name], rows[name]) for name in models]
    timings = {
        stage: {
            "status": s.stage_status.get(stage, "ran"),
            "seconds": round(s.stage_seconds.get(stage, 0.0), 2),
        }
        for stage in STAGES
        if stage != "report"
    }
    results = {
        "settings": {
            "robot_config": str(s.robot_config),
            "train_config": str(s.train_config),
            "demos": s.demos,
            "train_seeds": [s.train_seed, s.train_seed + s.demos - 1],
            "variants": list(s.variants),
            "steps": s.steps,
            "train_overrides": list(s.train_overrides),
            "eval_episodes": s.eval_episodes,
            "eval_seeds": [s.eval_seed, s.eval_seed + s.eval_episodes - 1],
            "eval_timeout_s": s.eval_timeout_s,
            "image_size": list(s.image_size),
            "instruction": s.instruction,
            "device": s.device,
        },
        "stage_timings": timings,
        "total_seconds": round(total_s, 2),
        "models": summaries,
        "episodes": [{"model": name, **row} for name in models for row in rows[name]],
    }
    (s.out / "results.json").write_text(json.dumps(results, indent=2))
    table = report_table(summaries)
    stage_lines = ["| stage | this run | wall time (s) |", "|---|---|---:|"]
    for stage, t in timings.items():
        stage_lines.append(f"| {stage} | {t['status']} | {t['seconds']:.1f} |")
    stage_lines.append(f"| **total** | | {total_s:.1f} |")
    report = "\n".join(
        [
            "# Simulated R1 Lite towel fold: Fast-WAM end to end",
            "",
            f"{s.demos} scripted demos (seeds {s.train_seed}..{s.train_seed + s.demos - 1}), "
            f"{s.eval_episodes} closed-loop episodes per model on held-out seeds "
            f"{s.eval_seed}..{s.eval_seed + s.eval_episodes - 1}, timeout {s.eval_timeout_s:g} s of simulated time. "
            f"Robot config `{s.robot_config}`, training config `{s.train_config}`"
            + (f", overrides `{' '.join(s.train_overrides)}`" if s.train_overrides else "")
            + ". Completion time: simulated seconds to the first success (successful episodes only). "
            "Latency: the policy node's per-chunk total (preprocessing to actions).",
            "",
            table,
            "",
            "![success vs completion time](success_vs_time.png)",
            "",
            "## Wall time per stage (skipped: done by an earlier run)",
            "",
            *stage_lines,
            "",
        ]
    )
    (s.out / "report.md").write_text(report)
    plot_success_vs_time(summaries, s.out / "success_vs_time.png", s.eval_timeout_s)
    print(table)
    return summaries


def _timed(s: Settings, stage: str, fn, *args):
    started = time.monotonic()
    result = fn(s, *args)
    s.stage_seconds.setdefault(stage, time.monotonic() - started)
    return result


def preflight(s: Settings) -> None:
    """The training config's robot and cameras must be the experiment robot config's (the policy
    node refuses a checkpoint whose layout differs from its robot config)."""
    from fastwam_training.config import load_config

    s.check()
    config = load_config(s.train_config, s.trainer_overrides(s.variants[0] if s.variants else "fast_wam"))
    robot, layout = config.robot_and_cameras()
    expected = load_robot_config(s.robot_config)
    from fastwam.robot_config_match import check_fits

    try:
        check_fits(
            robot,
            layout,
            expected.robot,
            expected.cameras,
            subject=f"--train-config {s.train_config}",
            target=f"--robot-config {s.robot_config}",
            setting="--robot-config",
        )
    except ValueError as error:
        # The node would refuse the trained checkpoint with this robot config: say so before training.
        raise ValueError(
            f"{error} (the training config trains for cameras and joints: they must be the robot config's)"
        ) from None


def run_pipeline(s: Settings, evaluate: bool = True) -> list[dict[str, Any]]:
    """All stages (evaluate=False: record, convert and train only). Returns the report's rows."""
    started = time.monotonic()
    preflight(s)
    s.out.mkdir(parents=True, exist_ok=True)
    record = _timed(s, "record", stage_record)
    convert = _timed(s, "convert", stage_convert, record)
    trained = _timed(s, "train", stage_train, convert)
    if not evaluate:
        return []
    models = dict(trained)
    models[RANDOM_INIT] = _timed(s, "random", stage_random, convert)
    rows = _timed(s, "eval", stage_eval, models)
    return stage_report(s, models, rows, time.monotonic() - started)


def estimate_minutes(s: Settings) -> float:
    from fastwam_training.config import load_config

    train = load_config(s.train_config, s.trainer_overrides("fast_wam")).train
    samples = (s.steps or train.max_steps) * train.batch_size * train.grad_accum
    per_demo = RECORD_SECONDS_PER_DEMO / s.record_time_scale + CONVERT_SECONDS_PER_DEMO
    return (s.demos * per_demo + sum(samples * SECONDS_PER_TRAIN_SAMPLE[v] for v in s.variants)) / 60.0


def prepare_default_checkpoint(out: str | os.PathLike[str], robot_config: str | os.PathLike[str]) -> Path:
    """The runner's default: the fast_wam checkpoint of this experiment with default settings,
    produced by the record, convert and train stages when missing."""
    s = Settings(
        out=Path(out),
        robot_config=Path(robot_config),
        train_config=default_train_config(),
        variants=("fast_wam",),
    )
    s.check()
    print(
        f"[run] this takes about {estimate_minutes(s):.0f} minutes on 2 CPU cores: {s.demos} scripted demos "
        f"at {s.record_time_scale:g}x real time, conversion, then training {s.train_config} (progress bars below)",
        flush=True,
    )
    run_pipeline(s, evaluate=False)
    checkpoint = trained_checkpoint(s.out, "fast_wam")
    assert checkpoint is not None
    return checkpoint


def parse_args(argv: Sequence[str] | None = None) -> Settings:
    parser = argparse.ArgumentParser(
        prog="python -m fastwam_experiments.sim_towel_fold",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--out", default=DEFAULT_OUT, help="experiment directory (default %(default)s)")
    parser.add_argument(
        "--robot-config",
        default=str(shipped_config(SIM_CONFIG)),
        help="robot config YAML (default %(default)s)",
    )
    parser.add_argument(
        "--train-config",
        default=str(default_train_config()),
        help="training config YAML (default %(default)s)",
    )
    parser.add_argument("--demos", type=int, default=60, help="scripted demonstrations to record")
    parser.add_argument("--train-seed", type=int, default=0, help="first demo seed (towel start pose)")
    parser.add_argument(
        "--extra-demos",
        type=int,
        help="seeds recorded in place of failed or rejected demos, at most (default: max(2, demos / 10))",
    )
    parser.add_argument(
        "--variants", nargs="+", default=["fast_wam", "no_cotrain"], choices=VARIANTS, help="models to train"
    )
    parser.add_argument("--steps", type=int, help="train.max_steps for every variant (default: the config's)")
    parser.add_argument(
        "--train-override",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra trainer override, repeatable (e.g. model.preset=tiny)",
    )
    parser.add_argument("--eval-episodes", type=int, default=10, help="closed-loop episodes per model")
    parser.add_argument("--eval-seed", type=int, default=EVAL_SEED, help="first held-out evaluation seed")
    parser.add_argument(
        "--eval-timeout-s",
        type=float,
        default=POLICY_EPISODE_TIMEOUT_S,
        help="episode timeout in simulated s (the scripted fold succeeds at ~6.4 s; default %(default)s)",
    )
    parser.add_argument(
        "--record-time-scale",
        type=float,
        default=RECORD_TIME_SCALE,
        help="the simulated robot's speed while recording demos, x real time (default %(default)s: "
        "measured loss-free on 2 busy CPU cores, benchmarks/sim_time_scale.py)",
    )
    parser.add_argument("--instruction", default="fold the towel")
    parser.add_argument("--device", default="cpu", help="policy node device for evaluation")
    parser.add_argument("--force", action="store_true", help="redo every stage")
    args = parser.parse_args(argv)
    return Settings(
        out=Path(args.out),
        robot_config=Path(args.robot_config),
        train_config=Path(args.train_config),
        demos=args.demos,
        train_seed=args.train_seed,
        extra_demos=args.extra_demos,
        variants=tuple(args.variants),
        steps=args.steps,
        train_overrides=tuple(args.train_override),
        eval_episodes=args.eval_episodes,
        eval_seed=args.eval_seed,
        eval_timeout_s=args.eval_timeout_s,
        record_time_scale=args.record_time_scale,
        instruction=args.instruction,
        device=args.device,
        force=args.force,
    )


def main(argv: Sequence[str] | None = None) -> int:
    try:
        settings = parse_args(argv)
        private_ros_domain()  # recording and evaluation over DDS: never another run's messages
        run_pipeline(settings)
    except (ValueError, FileNotFoundError, RuntimeError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
