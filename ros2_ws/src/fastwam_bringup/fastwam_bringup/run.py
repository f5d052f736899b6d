"""Single-process runner: the simulated R1 Lite, the policy node (and a recorder) in one executor.

For machines without `ros2 launch`. The nodes are the same classes the launch files start,
composed in one process on one executor thread (fastwam_bringup.composition) and configured from
the same robot config YAML. It prints what happens (chunks, latency, commands, task progress) and
exits with a summary when its episodes have ended (or after --duration seconds). A policy run
tries 3 held-out towel poses by default, each from a freshly composed policy and robot, ending at
success or after 12 s of simulated time (the simulation experiment's eval).

    python -m fastwam_bringup.run --checkpoint ckpt/    # any trained checkpoint
    python -m fastwam_bringup.run --checkpoint random   # random-init tiny model (no success expected)
    python -m fastwam_bringup.run --scripted-teleop --episodes 20 --record ~/fastwam_episodes

Bringup knows no experiment: with no --checkpoint it runs the checkpoint its caller's
`default_checkpoint` hook gives. `python -m fastwam_experiments.run` (scripts/run.sh) is this
runner with the simulation experiment's Fast-WAM as that default, produced on first use.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import rclpy

from fastwam.robot_config import load_robot_config
from fastwam.shipped_configs import SIM_CONFIG, shipped_config
from fastwam_bringup.composition import (
    Composition,
    Monitor,
    add_monitor,
    add_policy,
    add_recorder,
    add_scripted_teleop,
    add_sim,
    private_ros_domain,
    wait_for_policy,
)
from fastwam_policy.recorder_client import RecorderClient
from fastwam_sim.env import EVAL_SEED, add_image_size_argument

RANDOM_CHECKPOINT = "random"
POLICY_EPISODES = 3  # held-out poses a policy run tries by default
# Simulated seconds a closed-loop episode may take to fold (the scripted fold succeeds at ~6.4 s);
# the simulation experiment's eval uses the same.
POLICY_EPISODE_TIMEOUT_S = 12.0
# What a run without --checkpoint runs: the caller's hook, given the parsed arguments, returns a
# checkpoint directory (producing it when needed). Bringup has none of its own.
DefaultCheckpoint = Callable[[argparse.Namespace], str]


def build_parser(
    prog: str = "python -m fastwam_bringup.run", default_help: str = ""
) -> argparse.ArgumentParser:
    """The runner's options; a caller with a default checkpoint adds its own (e.g. where it lives)
    and says what that default is in `default_help`."""
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0])
    parser.add_argument("--robot-config", default=str(shipped_config(SIM_CONFIG)), help="robot config YAML")
    parser.add_argument(
        "--checkpoint",
        default="",
        help="policy checkpoint directory; 'random': a random-init tiny model (it does not fold the towel); "
        + (default_help or "required unless --scripted-teleop"),
    )
    parser.add_argument("--instruction", default="fold the towel")
    parser.add_argument(
        "--duration",
        type=float,
        default=0.0,
        help="wall-clock seconds before stopping (default 0: when the episodes have ended)",
    )
    parser.add_argument("--dry-run", action="store_true", help="policy predicts but does not command motion")
    parser.add_argument(
        "--scripted-teleop", action="store_true", help="the sim's scripted teleoperator drives; no policy"
    )
    parser.add_argument(
        "--episodes",
        type=int,
        default=None,
        help=f"episodes, seeds seed, seed + 1, ...; default 1 with --scripted-teleop, else {POLICY_EPISODES} "
        "(each policy episode ends at success or after --episode-timeout)",
    )
    parser.add_argument(
        "--episode-timeout",
        type=float,
        default=POLICY_EPISODE_TIMEOUT_S,
        help="simulated seconds a policy episode may take to fold (default %(default)g, the simulation "
        "experiment's)",
    )
    parser.add_argument(
        "--seed",
        type=int,
        default=None,
        help=f"towel start pose seed (episode i: seed + i); default 0 with --scripted-teleop (the "
        f"demonstrations' poses), else {EVAL_SEED} (held out from them)",
    )
    parser.add_argument("--record", default="", help="record episodes into this directory (recorder node)")
    parser.add_argument(
        "--time-scale",
        type=float,
        default=1.0,
        help="with --scripted-teleop: run the simulated robot this many times faster than real time "
        "(recordings hold the same frames and stamps; --duration stays wall-clock seconds)",
    )
    add_image_size_argument(
        parser, help="rendered camera size HEIGHTxWIDTH of the simulated robot (default %(default)s)"
    )
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument(
        "--execution",
        choices=("blend", "rtc"),
        default="blend",
        help="how the policy node joins a new chunk to the plan: blend (cross-fade) or rtc (real-time "
        "chunking: sampled as a continuation of the plan)",
    )
    parser.add_argument(
        "--require-success", action="store_true", help="exit 1 unless every episode reached success"
    )
    return parser


def parse_args(
    argv: list[str] | None = None, parser: argparse.ArgumentParser | None = None
) -> argparse.Namespace:
    parser = parser or build_parser()
    args = parser.parse_args(argv)
    if args.episodes is not None and args.episodes < 1:
        parser.error(f"--episodes must be at least 1, got {args.episodes}")
    if not args.episode_timeout > 0:
        parser.error(f"--episode-timeout must be positive, got {args.episode_timeout:g}")
    if not args.time_scale > 0:
        parser.error(f"--time-scale must be positive, got {args.time_scale:g}")
    if args.time_scale != 1.0 and not args.scripted_teleop:
        parser.error("--time-scale needs --scripted-teleop: policy episodes run in real time")
    return args


def _random_checkpoint(config, directory: str) -> str:
    from fastwam.checkpoint import create_random_checkpoint

    path = Path(directory) / "random_tiny"
    # Horizon 32 as on the robot (the tiny preset has 4): a chunk must outlast one inference.
    create_random_checkpoint(path, "tiny", config.cameras, config.robot, seed=0, action_horizon=32)
    return str(path)


def resolve_checkpoint(
    args: argparse.Namespace, config, tmp: str, default_checkpoint: DefaultCheckpoint | None = None
) -> str:
    """--checkpoint as given; 'random': a random tiny model; empty: the `default_checkpoint` hook's."""
    if args.checkpoint == RANDOM_CHECKPOINT:
        print("[run] --checkpoint random: creating a random-init tiny model (it will not fold the towel)")
        return _random_checkpoint(config, tmp)
    if args.checkpoint:
        return args.checkpoint
    if default_checkpoint is None:
        raise SystemExit(
            "[run] no --checkpoint given: name a checkpoint directory, 'random', or run "
            "`python -m fastwam_experiments.run` (scripts/run.sh) for the simulation experiment's Fast-WAM"
        )
    return default_checkpoint(args)


@dataclass
class RunTotals:
    """What a run's episodes add up to (a policy run composes its nodes anew for every episode)."""

    results: list = field(default_factory=list)  # the simulated robot's episode results, in order
    chunk_latencies_ms: list[float] = field(default_factory=list)
    chunks_predicted: int = 0
    policy_state: str = ""
    commands_received: dict[str, int] = field(default_factory=dict)  # by the robot, per group
    commands_rejected: int = 0
    commands_on_topics: int = 0

    def add(self, sim, monitor: Monitor, results: list) -> None:
        self.results.extend(results)
        self.chunk_latencies_ms.extend(monitor.chunks)
        self.chunks_predicted += monitor.chunks_predicted
        self.policy_state = monitor.policy_state or self.policy_state
        for group, n in sim.commands_received.items():
            self.commands_received[group] = self.commands_received.get(group, 0) + n
        self.commands_rejected += sim.commands_rejected
        self.commands_on_topics += sum(monitor.commands.values())


def run(args: argparse.Namespace, default_checkpoint: DefaultCheckpoint | None = None) -> int:
    config = load_robot_config(args.robot_config)
    if args.seed is None:
        args.seed = 0 if args.scripted_teleop else EVAL_SEED
    if args.episodes is None:
        args.episodes = 1 if args.scripted_teleop else POLICY_EPISODES
    tmp = tempfile.TemporaryDirectory(prefix="fastwam_run_")
    try:
        checkpoint = (
            None if args.scripted_teleop else resolve_checkpoint(args, config, tmp.name, default_checkpoint)
        )
        totals = RunTotals()
        start = time.monotonic()
        deadline = start + args.duration if args.duration > 0 else None
        if checkpoint is None:  # the scripted operator runs every episode in one simulated robot
            _run_composition(args, config, None, args.seed, args.episodes, deadline, start, totals)
        else:
            # One episode per composition, as the simulation experiment's eval runs them: every
            # episode starts from a freshly loaded policy (no plan or state left from the last).
            for i in range(args.episodes):
                if deadline is not None and time.monotonic() >= deadline:
                    break
                _run_composition(args, config, checkpoint, args.seed + i, 1, deadline, start, totals)
        return _summary(args, totals, time.monotonic() - start)
    finally:
        tmp.cleanup()


def _run_composition(
    args: argparse.Namespace,
    config,
    checkpoint: str | None,
    seed: int,
    episodes: int,
    deadline: float | None,
    start: float,
    totals: RunTotals,
) -> None:
    """The nodes composed and spun until their episodes end or the deadline passes; their counts
    are added to `totals`."""
    with Composition() as comp:
        monitor = add_monitor(comp, config)
        if checkpoint is not None:
            # Created first: the model loads and warms up before the robot's episode starts.
            add_policy(comp, args.robot_config, checkpoint, instruction=args.instruction,
                       motion_enabled=not args.dry_run, device=args.device, dtype=args.dtype,
                       execution=args.execution, sampler_seed=seed)  # fmt: skip
            print(f"[run] loading {checkpoint}")
            wait_for_policy(comp, monitor, checkpoint)
        recorder = None
        if args.record:
            recorder = add_recorder(comp, args.robot_config, args.record, args.instruction)
        sim = add_sim(
            comp,
            args.robot_config,
            seed=seed,
            image_size=args.image_size,
            time_scale=args.time_scale,
            episode_timeout_s=0.0 if args.scripted_teleop else args.episode_timeout,
        )
        # Who operates the robot and the recorder: the scripted teleoperator, or (a policy run) this
        # runner, which records the policy's episode as the keyboard helper would.
        operator = None
        if args.scripted_teleop:
            operator = add_scripted_teleop(
                comp,
                args.robot_config,
                seed=seed,
                episodes=episodes,
                recorder="/recorder" if recorder is not None else "",
                instruction=args.instruction,
            )
        else:
            operator = (
                PolicyEpisodeRecording(monitor.node, args.instruction) if recorder is not None else None
            )
        if args.scripted_teleop:
            mode = f"scripted teleop, {episodes} episode(s)"
        else:
            mode = "policy, dry run" if args.dry_run else "policy"
            mode += f", execution {args.execution}, episode {len(totals.results) + 1}/{args.episodes}"
            mode += f" (up to {args.episode_timeout:g} s simulated)"
        print(f"[run] {config.robot.name} simulated, {mode}, seed {seed}, config {args.robot_config}")
        next_report = time.monotonic() + 1.0
        while rclpy.ok(context=comp.context):
            comp.spin_once()
            now = time.monotonic()
            if now >= next_report:
                next_report += 1.0
                print(
                    f"[run] t={now - start:5.1f}s commands {sum(monitor.commands.values()):5d} "
                    f"chunks {len(monitor.chunks):3d} progress {sim.env.progress:.2f} "
                    f"success {'yes' if sim.env.success else 'no'}"
                    + (f" policy {monitor.policy_state}" if monitor.policy_state else ""),
                    flush=True,
                )
            if args.scripted_teleop and operator.finished:
                break
            if checkpoint is not None and (sim.finished or sim.completion_s is not None):
                break  # policy-driven: the episode ends at success or its timeout
            if deadline is not None and now >= deadline:
                break
        # Close the running episode so it is scored (and recorded, labelled).
        if args.scripted_teleop:
            operator.end_episode()
        else:
            sim.end_episode()
            if operator is not None:
                operator.stop(sim.results[-1])
        # Let the recorder answer the stop (save + label).
        comp.spin_until(lambda: operator is None or not operator.recording_episode, 5.0)
        totals.add(sim, monitor, operator.results if args.scripted_teleop else sim.results)


class PolicyEpisodeRecording:
    """A policy run's episode recorded through the recorder's services (the one recorder client),
    started now and stopped with the simulated robot's success label."""

    def __init__(self, node, instruction: str) -> None:
        self.recording_episode = ""
        self.client = RecorderClient(node, "/recorder", wait_s=60.0)
        self.client.start(instruction, self._on_started)

    def _on_started(self, response) -> None:
        if response is not None and response.success:
            self.recording_episode = response.episode

    def stop(self, result) -> None:
        if not self.recording_episode:
            return

        def stopped(response) -> None:
            if response is not None and response.success:
                result.recorded = response.episode
            self.recording_episode = ""

        self.client.stop(True, result.success, stopped)


def percentile(values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile (q in [0, 1]); None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    return float(ordered[min(len(ordered) - 1, int(q * len(ordered)))])


def _summary(args, totals: RunTotals, elapsed: float) -> int:
    results = totals.results
    print(f"[run] summary after {elapsed:.1f} s")
    print(
        "[run]   commands received by the robot: "
        + ", ".join(f"{g} {n}" for g, n in totals.commands_received.items())
    )
    print(
        f"[run]   commands rejected: {totals.commands_rejected}; on the topics: {totals.commands_on_topics}"
    )
    latencies = totals.chunk_latencies_ms
    if latencies:
        print(
            f"[run]   chunks {len(latencies)}, latency median {statistics.median(latencies):.0f} ms, "
            f"p95 {percentile(latencies, 0.95):.0f} ms"
        )
    elif not args.scripted_teleop:
        print("[run]   chunks 0 (no action chunk was published)")
    if not args.scripted_teleop:
        print(
            f"[run]   policy: {totals.chunks_predicted} chunks predicted, last state {totals.policy_state or 'none'}"
        )
    for i, r in enumerate(results):
        when = f" at {r.completion_s:.1f} s" if r.completion_s is not None else ""
        rec = f", recorded {r.recorded}" if r.recorded else ""
        print(
            f"[run]   episode {i} seed {r.seed}: {'SUCCESS' + when if r.success else 'no success'}, "
            f"progress {r.progress:.2f}{rec}"
        )
    successes = sum(r.success for r in results)
    print(f"[run]   success {successes}/{len(results)}")
    if args.require_success and successes < len(results):
        return 1
    return 0


def main(
    argv: list[str] | None = None,
    default_checkpoint: DefaultCheckpoint | None = None,
    parser: argparse.ArgumentParser | None = None,
) -> None:
    args = parse_args(argv, parser)
    private_ros_domain()
    sys.exit(run(args, default_checkpoint))


if __name__ == "__main__":
    main()
