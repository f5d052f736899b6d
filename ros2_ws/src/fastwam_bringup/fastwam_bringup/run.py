"""Single-process runner: the simulated R1 Lite, the policy node (and a recorder) in one executor.

For machines without `ros2 launch` (the README's scripts/run.sh calls this). The nodes are the
same classes the launch files start, composed in one process through one executor and
configured from the same robot config YAML. It prints what happens (chunks, latency, commands,
task progress) and exits with a summary when its episodes have ended (or after --duration seconds).
A policy run tries 3 held-out towel poses by default, each from a freshly composed policy and
robot, ending at success or after 12 s of simulated time (the simulation experiment's eval).

    python -m fastwam_bringup.run                       # the simulation experiment's Fast-WAM
    python -m fastwam_bringup.run --checkpoint random   # random-init tiny model (no success expected)
    python -m fastwam_bringup.run --checkpoint ckpt/    # any trained checkpoint
    python -m fastwam_bringup.run --scripted-teleop --episodes 20 --record ~/fastwam_episodes

With no --checkpoint it runs the fast_wam checkpoint of the simulation experiment
(fastwam_bringup.sim_experiment) under --experiment-dir; when there is none yet, it first produces
it with the experiment's record, convert and train stages (minutes on a CPU).

The composition is also a library: `record_scripted_episodes` records scripted demonstrations
through the recorder node and `run_policy_episode` runs one closed-loop episode through the policy
node (the simulation experiment uses both).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import rclpy
import rclpy.logging
from rclpy.executors import SingleThreadedExecutor
from rclpy.logging import LoggingSeverity
from rclpy.parameter import Parameter
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import JointState

from fastwam.robot_config import load_robot_config
from fastwam.sim.env import EVAL_SEED, SIM_IMAGE_SIZE, image_size_arg

SIM_CONFIG = "r1_lite_sim.yaml"  # the simulation experiment's robot config (192x160 composite)
DEFAULT_EXPERIMENT_DIR = "runs/sim_towel_fold"
RANDOM_CHECKPOINT = "random"
POLICY_EPISODES = 3  # held-out poses a policy run tries by default
POLICY_EPISODE_TIMEOUT_S = 12.0  # the simulation experiment's eval timeout
QUIET_LOGGERS = ("fastwam_policy", "sim_robot", "recorder", "fastwam_run_monitor")  # node names
_STATE_NAMES = ("STARTING", "DRY_RUN", "EXECUTING", "HOLDING", "ESTOP", "ERROR")


def default_config_path(name: str = SIM_CONFIG) -> str:
    """A robot config shipped in fastwam_bringup/config (installed share directory or source tree)."""
    try:
        from ament_index_python.packages import get_package_share_directory

        installed = Path(get_package_share_directory("fastwam_bringup")) / "config" / name
        if installed.is_file():
            return str(installed)
    except Exception:
        pass
    return str(Path(__file__).resolve().parents[1] / "config" / name)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m fastwam_bringup.run", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--robot-config", default=default_config_path(), help="robot config YAML")
    parser.add_argument(
        "--checkpoint",
        default="",
        help="policy checkpoint directory; empty (default): the simulation experiment's fast_wam checkpoint "
        "under --experiment-dir, produced on first use; 'random': a random-init tiny model (it does not "
        "fold the towel)",
    )
    parser.add_argument(
        "--experiment-dir",
        default=DEFAULT_EXPERIMENT_DIR,
        help="simulation experiment directory holding the default checkpoint",
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
    parser.add_argument(
        "--image-size",
        type=image_size_arg,
        default=SIM_IMAGE_SIZE,
        help="rendered camera size HEIGHTxWIDTH of the simulated robot (default %(default)s)",
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


class Monitor:
    """Counts the commands on the robot's command topics and collects the policy's chunks."""

    def __init__(self, node, config) -> None:
        self.commands = dict.fromkeys(config.robot.action_groups, 0)
        qos = QoSProfile(depth=50, reliability=ReliabilityPolicy.BEST_EFFORT)
        for group in config.robot.action_groups:
            node.create_subscription(
                JointState, config.topics.command[group], lambda _m, g=group: self._count(g), qos
            )
        self.chunks: list[float] = []  # total latency (ms) of each chunk
        self.policy_state = ""  # from the policy node's PolicyStatus
        self.state_name = ""  # the PolicyStatus state alone (STARTING, ..., ERROR)
        self.reason = ""
        self.chunks_predicted = 0
        try:
            from fastwam_msgs.msg import ActionChunk, PolicyStatus

            node.create_subscription(
                ActionChunk, "/fastwam_policy/action_chunk", lambda m: self.chunks.append(m.total_ms), 10
            )
            node.create_subscription(PolicyStatus, "/fastwam_policy/status", self._on_status, 10)
        except ImportError:  # fastwam_msgs not built: no chunk monitoring
            pass

    def _on_status(self, msg) -> None:
        state = _STATE_NAMES[msg.state] if msg.state < len(_STATE_NAMES) else str(msg.state)
        self.state_name, self.reason = state, msg.reason
        self.policy_state = f"{state}: {msg.reason}" if msg.reason else state
        self.chunks_predicted = int(msg.chunks_predicted)

    def _count(self, group: str) -> None:
        self.commands[group] += 1


class Composition:
    """One rclpy context, one SingleThreadedExecutor and the nodes added to it; close() tears down.

    One executor thread: inference runs on the policy node's own worker thread, so callbacks stay
    short. rclpy's MultiThreadedExecutor was measured spinning a core at 100 % here, slowing
    inference 3-5x and leaving the policy holding on stale frames.
    """

    def __init__(self, quiet: bool = False) -> None:
        self.context = rclpy.Context()
        rclpy.init(context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.nodes: list = []
        if quiet:  # the nodes log errors only (set before they are created: their start-up lines too)
            for name in QUIET_LOGGERS:
                rclpy.logging.set_logger_level(name, LoggingSeverity.ERROR)

    def add(self, node):
        self.nodes.append(node)
        self.executor.add_node(node)
        return node

    def spin_once(self, timeout_s: float = 0.05) -> None:
        self.executor.spin_once(timeout_sec=timeout_s)

    def spin_until(self, done: Callable[[], bool], timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while not done():
            if time.monotonic() >= deadline or not rclpy.ok(context=self.context):
                return False
            self.spin_once()
        return True

    def close(self) -> None:
        self.executor.shutdown()
        # spin_once hands callbacks to the executor's thread pool without waiting for them, and
        # shutdown() does not wait either: let in-flight ones (a camera frame) finish first.
        time.sleep(0.3)
        for node in self.nodes:
            self.executor.remove_node(node)
        for node in self.nodes:
            if hasattr(node, "recorder"):  # the recorder node's writer: saves a running episode
                node.recorder.shutdown()
            node.destroy_node()
        rclpy.shutdown(context=self.context)

    def __enter__(self) -> Composition:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# -- nodes ------------------------------------------------------------------------------------------
def add_recorder(comp: Composition, robot_config: str, output_dir: str | Path, instruction: str):
    from fastwam_policy.recorder_node import RecorderNode

    return comp.add(
        RecorderNode(
            context=comp.context,
            parameter_overrides=[
                Parameter("robot_config", value=str(robot_config)),
                Parameter("output_dir", value=str(Path(output_dir).expanduser())),
                Parameter("default_instruction", value=instruction),
            ],
        )
    )


def add_sim(
    comp: Composition,
    robot_config: str,
    *,
    seed: int,
    scripted: bool,
    episodes: int = 1,
    recorder: str = "",
    instruction: str = "fold the towel",
    image_size: tuple[int, int] = SIM_IMAGE_SIZE,
    episode_timeout_s: float = 0.0,
    time_scale: float = 1.0,
):
    from fastwam_policy.sim_robot_node import SimRobotNode

    return comp.add(
        SimRobotNode(
            context=comp.context,
            parameter_overrides=[
                Parameter("robot_config", value=str(robot_config)),
                Parameter("seed", value=int(seed)),
                Parameter("scripted_teleop", value=scripted),
                Parameter("episodes", value=int(episodes)),
                Parameter("recorder", value=recorder),
                Parameter("instruction", value=instruction),
                Parameter("episode_timeout_s", value=float(episode_timeout_s)),
                Parameter("image_height", value=int(image_size[0])),
                Parameter("image_width", value=int(image_size[1])),
                Parameter("time_scale", value=float(time_scale)),
            ],
        )
    )


def add_policy(
    comp: Composition,
    robot_config: str,
    checkpoint: str | Path,
    *,
    instruction: str,
    motion_enabled: bool,
    device: str = "cpu",
    dtype: str = "float32",
    sampler_seed: int | None = None,
    execution: str = "blend",
):
    try:
        from fastwam_policy.policy_node import FastWAMPolicyNode
    except ImportError as error:
        raise SystemExit(
            f"the policy node is not available ({error}); run with --scripted-teleop for the simulated "
            "robot and its scripted teleoperator alone"
        ) from error
    overrides = [
        Parameter("checkpoint", value=str(checkpoint)),
        Parameter("robot_config", value=str(robot_config)),
        Parameter("instruction", value=instruction),
        Parameter("motion_enabled", value=motion_enabled),
        Parameter("device", value=device),
        Parameter("dtype", value=dtype),
        Parameter("execution", value=execution),
    ]
    if sampler_seed is not None:
        overrides.append(Parameter("seed", value=int(sampler_seed)))
    return comp.add(FastWAMPolicyNode(context=comp.context, parameter_overrides=overrides))


def add_monitor(comp: Composition, config) -> Monitor:
    node = comp.add(rclpy.create_node("fastwam_run_monitor", context=comp.context))
    return Monitor(node, config)


def wait_for_policy(comp: Composition, monitor: Monitor, checkpoint, timeout_s: float = 600.0) -> None:
    """Spin until the policy node has loaded its model and warmed up (it reports a state past
    STARTING); raises RuntimeError naming the checkpoint when it fails or takes too long."""
    ready = comp.spin_until(lambda: monitor.state_name not in ("", "STARTING"), timeout_s)
    if monitor.state_name == "ERROR":
        raise RuntimeError(f"policy node failed to start with checkpoint {checkpoint}: {monitor.reason}")
    if not ready:
        raise RuntimeError(
            f"policy node not ready after {timeout_s:.0f} s with checkpoint {checkpoint} "
            f"(state {monitor.policy_state or 'unknown'})"
        )


def _random_checkpoint(config, directory: str) -> str:
    from fastwam.checkpoint import create_random_checkpoint

    path = Path(directory) / "random_tiny"
    # Horizon 32 as on the robot (the tiny preset has 4): a chunk must outlast one inference.
    create_random_checkpoint(path, "tiny", config.cameras, config.robot, seed=0, action_horizon=32)
    return str(path)


# -- library: scripted recording and one policy episode ---------------------------------------------
def record_scripted_episodes(
    robot_config: str | Path,
    output_dir: str | Path,
    *,
    seed: int,
    episodes: int,
    instruction: str = "fold the towel",
    image_size: tuple[int, int] = SIM_IMAGE_SIZE,
    on_episode: Callable[[object], None] | None = None,
    quiet: bool = True,
    time_scale: float = 1.0,
) -> list:
    """Record `episodes` scripted demonstrations (seeds seed .. seed + episodes - 1) through the
    recorder node into output_dir, the simulated robot running time_scale times faster than real
    time (the bags hold the same frames and header stamps as at 1x). Returns the sim's EpisodeResult per episode
    (success label, `recorded` = the recorder's episode name); on_episode is called after each."""
    from fastwam.sim import ScriptedFolder, TowelFoldEnv

    if episodes < 1:
        raise ValueError(f"episodes must be at least 1, got {episodes}")
    if not time_scale > 0:
        raise ValueError(f"time_scale must be positive, got {time_scale}")
    config = load_robot_config(robot_config)
    folder = ScriptedFolder(TowelFoldEnv(config.robot, config.cameras.keys))
    # Generous: each episode lasts ~folder.duration + 1.5 s of sim time, which a loaded machine
    # stretches (physics steps are capped at 0.1 s of wall time).
    timeout_s = episodes * (3.0 * folder.duration / time_scale + 20.0) + 30.0
    with Composition(quiet=quiet) as comp:
        add_recorder(comp, str(robot_config), output_dir, instruction)
        sim = add_sim(
            comp,
            str(robot_config),
            seed=seed,
            scripted=True,
            episodes=episodes,
            recorder="/recorder",
            instruction=instruction,
            image_size=image_size,
            time_scale=time_scale,
        )
        reported = 0

        def finished() -> bool:
            nonlocal reported
            while on_episode is not None and reported < len(sim.results):
                on_episode(sim.results[reported])
                reported += 1
            return sim.finished

        if not comp.spin_until(finished, timeout_s):
            raise RuntimeError(
                f"scripted recording into {output_dir} did not finish in {timeout_s:.0f} s: "
                f"{len(sim.results)}/{episodes} episodes done"
            )
        # The recorder answers the last stop (save + success label) after the episode ended.
        comp.spin_until(lambda: not sim.recording_episode, 15.0)
        return list(sim.results)


@dataclass
class PolicyEpisodeResult:
    """One closed-loop episode. Times are simulated seconds since the episode started."""

    seed: int
    success: bool
    completion_time_s: float | None  # sim time of the first success
    progress: float  # fold progress at the end (0 flat .. 1 folded)
    duration_s: float  # sim time the episode ran
    chunk_latencies_ms: list[float] = field(default_factory=list)  # ActionChunk.total_ms, in order
    chunks_predicted: int = 0  # PolicyStatus.chunks_predicted (including discarded ones)
    commands: int = 0  # JointState commands on the robot's command topics, all groups
    policy_state: str = ""  # the policy node's last reported state
    wall_s: float = 0.0
    sampler_seed: int | None = None  # the policy node's `seed` parameter in this episode

    def to_dict(self) -> dict:
        return asdict(self)


def run_policy_episode(
    robot_config: str | Path,
    checkpoint: str | Path,
    seed: int,
    *,
    timeout_s: float = 15.0,
    instruction: str = "fold the towel",
    image_size: tuple[int, int] = SIM_IMAGE_SIZE,
    device: str = "cpu",
    dtype: str = "float32",
    startup_timeout_s: float = 600.0,
    quiet: bool = True,
    execution: str = "blend",
) -> PolicyEpisodeResult:
    """One policy-driven episode on towel seed `seed`, motion enabled, ending at the first success
    or after `timeout_s` of simulated time. The policy node loads and warms up its model before the
    simulated robot exists, so model loading is not part of the episode.

    The policy node's sampler noise is seeded with the pose seed. Every episode starts a new node,
    so one fixed seed would give every episode the same noise: their outcomes would be correlated
    (one draw of the noise sequence, not M), and the success rate that of that draw."""
    if timeout_s <= 0:
        raise ValueError(f"timeout_s must be positive, got {timeout_s}")
    config = load_robot_config(robot_config)
    with Composition(quiet=quiet) as comp:
        monitor = add_monitor(comp, config)
        policy = add_policy(comp, str(robot_config), checkpoint, instruction=instruction,
                            motion_enabled=True, device=device, dtype=dtype, sampler_seed=seed,
                            execution=execution)  # fmt: skip
        wait_for_policy(comp, monitor, checkpoint, startup_timeout_s)
        sim = add_sim(
            comp,
            str(robot_config),
            seed=seed,
            scripted=False,
            instruction=instruction,
            image_size=image_size,
            episode_timeout_s=timeout_s,
        )
        # Counted from the episode's start (nothing can have been commanded before: no inputs).
        monitor.chunks.clear()
        monitor.commands = dict.fromkeys(monitor.commands, 0)
        started = time.monotonic()
        # Sim time never runs ahead of wall time; the wall limit only guards against a stalled sim.
        ended = comp.spin_until(
            lambda: sim.finished or sim.first_success_s is not None, 10.0 * timeout_s + 60.0
        )
        if not sim.finished:
            sim.end_episode()  # success reached (or stalled): score the episode now
        wall_s = time.monotonic() - started
        result = sim.results[-1]
        if not ended:
            result.notes.append(f"wall-clock limit hit after {wall_s:.0f} s")
        return PolicyEpisodeResult(
            seed=result.seed,
            success=result.success,
            completion_time_s=result.first_success_s,
            progress=float(result.progress),
            duration_s=float(result.duration_s),
            chunk_latencies_ms=[float(v) for v in monitor.chunks],
            chunks_predicted=monitor.chunks_predicted,
            commands=sum(monitor.commands.values()),
            policy_state=monitor.policy_state,
            wall_s=wall_s,
            sampler_seed=int(policy.get_parameter("seed").value),
        )


# -- CLI --------------------------------------------------------------------------------------------
def resolve_checkpoint(args: argparse.Namespace, config, tmp: str) -> str:
    """--checkpoint as given; 'random': a random tiny model; empty: the experiment's fast_wam
    checkpoint, produced by the experiment's stages when it does not exist yet."""
    if args.checkpoint == RANDOM_CHECKPOINT:
        print("[run] --checkpoint random: creating a random-init tiny model (it will not fold the towel)")
        return _random_checkpoint(config, tmp)
    if args.checkpoint:
        return args.checkpoint
    from fastwam_bringup import sim_experiment

    found = sim_experiment.trained_checkpoint(args.experiment_dir, "fast_wam")
    if found is not None:
        print(f"[run] checkpoint: {found} (the simulation experiment's fast_wam model)")
        return str(found)
    print(
        f"[run] no fast_wam checkpoint under {args.experiment_dir} yet: producing it with the simulation "
        "experiment's record, convert and train stages (python -m fastwam_bringup.sim_experiment)"
    )
    return str(sim_experiment.prepare_default_checkpoint(args.experiment_dir, args.robot_config))


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

    def add(self, sim, monitor: Monitor) -> None:
        self.results.extend(sim.results)
        self.chunk_latencies_ms.extend(monitor.chunks)
        self.chunks_predicted += monitor.chunks_predicted
        self.policy_state = monitor.policy_state or self.policy_state
        for group, n in sim.commands_received.items():
            self.commands_received[group] = self.commands_received.get(group, 0) + n
        self.commands_rejected += sim.commands_rejected
        self.commands_on_topics += sum(monitor.commands.values())


def run(args: argparse.Namespace) -> int:
    config = load_robot_config(args.robot_config)
    if args.seed is None:
        args.seed = 0 if args.scripted_teleop else EVAL_SEED
    if args.episodes is None:
        args.episodes = 1 if args.scripted_teleop else POLICY_EPISODES
    tmp = tempfile.TemporaryDirectory(prefix="fastwam_run_")
    try:
        checkpoint = None if args.scripted_teleop else resolve_checkpoint(args, config, tmp.name)
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
            scripted=args.scripted_teleop,
            episodes=episodes,
            recorder="/recorder" if recorder is not None else "",
            instruction=args.instruction,
            image_size=args.image_size,
            time_scale=args.time_scale,
            episode_timeout_s=0.0 if args.scripted_teleop else args.episode_timeout,
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
            if sim.finished:
                break
            if checkpoint is not None and sim.first_success_s is not None:
                break  # policy-driven: the episode ends at success
            if deadline is not None and now >= deadline:
                break
        if not sim.finished:  # close the running episode so it is scored (and recorded)
            sim.end_episode()
        # Let the recorder answer the stop (save + label).
        comp.spin_until(lambda: recorder is None or not sim.recording_episode, 5.0)
        totals.add(sim, monitor)


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
        when = f" at {r.first_success_s:.1f} s" if r.first_success_s is not None else ""
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


def private_ros_domain() -> int:
    """The ROS domain of a run that must hear only itself: the caller's ROS_DOMAIN_ID when set, else
    one derived from this process id (1..101), set in the environment before any ROS context exists
    (the nodes and the processes this run starts inherit it).

    Two runs on one machine in the default domain hear each other over shared memory / localhost
    DDS: one run's simulated joints and cameras reach the other's policy node (seen: a hold for joint
    states 195 s from the head frame while another simulation ran). Printed, so that another shell
    can watch with the same ROS_DOMAIN_ID."""
    if os.environ.get("ROS_DOMAIN_ID"):
        return int(os.environ["ROS_DOMAIN_ID"])
    domain = 1 + os.getpid() % 101
    os.environ["ROS_DOMAIN_ID"] = str(domain)
    print(f"[ros] ROS_DOMAIN_ID={domain} (this run's own; export it in another shell to watch its topics)")
    return domain


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    private_ros_domain()
    sys.exit(run(args))


if __name__ == "__main__":
    main()
