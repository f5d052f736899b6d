"""Episodes in the simulated robot, composed in one process: scripted recording and closed loop.

`record_scripted_episodes` records scripted demonstrations through the recorder node;
`run_policy_episode` runs one closed-loop episode through the policy node. The simulation
experiment (fastwam_experiments.sim_towel_fold) and the benchmarks use both.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from fastwam.robot_config import load_robot_config
from fastwam_bringup.composition import (
    Composition,
    add_monitor,
    add_policy,
    add_recorder,
    add_scripted_teleop,
    add_sim,
    wait_for_policy,
)
from fastwam_sim import ScriptedFolder, TowelFoldEnv
from fastwam_sim.env import SIM_IMAGE_SIZE


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
        add_sim(comp, str(robot_config), seed=seed, image_size=image_size, time_scale=time_scale)
        teleop = add_scripted_teleop(
            comp,
            str(robot_config),
            seed=seed,
            episodes=episodes,
            recorder="/recorder",
            instruction=instruction,
        )
        reported = 0

        def finished() -> bool:
            nonlocal reported
            while on_episode is not None and reported < len(teleop.results):
                on_episode(teleop.results[reported])
                reported += 1
            return teleop.finished

        if not comp.spin_until(finished, timeout_s):
            raise RuntimeError(
                f"scripted recording into {output_dir} did not finish in {timeout_s:.0f} s: "
                f"{len(teleop.results)}/{episodes} episodes done"
            )
        # The recorder answers the last stop (save + success label) after the episode ended.
        comp.spin_until(lambda: not teleop.recording_episode, 15.0)
        return list(teleop.results)


@dataclass
class PolicyEpisodeResult:
    """One closed-loop episode. Times are simulated seconds since the episode started."""

    seed: int
    success: bool
    completion_s: float | None  # sim time of the first success
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
        sim = add_sim(comp, str(robot_config), seed=seed, image_size=image_size, episode_timeout_s=timeout_s)
        # Counted from the episode's start (nothing can have been commanded before: no inputs).
        monitor.chunks.clear()
        monitor.commands = dict.fromkeys(monitor.commands, 0)
        started = time.monotonic()
        # Sim time never runs ahead of wall time; the wall limit only guards against a stalled sim.
        ended = comp.spin_until(lambda: sim.finished or sim.completion_s is not None, 10.0 * timeout_s + 60.0)
        if not sim.finished:
            sim.end_episode()  # success reached (or stalled): score the episode now
        wall_s = time.monotonic() - started
        result = sim.results[-1]
        if not ended:
            result.notes.append(f"wall-clock limit hit after {wall_s:.0f} s")
        return PolicyEpisodeResult(
            seed=result.seed,
            success=result.success,
            completion_s=result.completion_s,
            progress=float(result.progress),
            duration_s=float(result.duration_s),
            chunk_latencies_ms=[float(v) for v in monitor.chunks],
            chunks_predicted=monitor.chunks_predicted,
            commands=sum(monitor.commands.values()),
            policy_state=monitor.policy_state,
            wall_s=wall_s,
            sampler_seed=int(policy.get_parameter("seed").value),
        )
