"""Execution modes side by side in the simulated R1 Lite under injected inference latency.

No blending (each new chunk replaces the plan, aligned to the present), linear blending (the
policy node's `blend`, the robot config's blend_steps) and real-time chunking (`rtc`: the chunk
sampled as a continuation of the plan, `fastwam.model.rtc`) run the same checkpoint on the same
held-out towel poses, each with the latencies given (default 0, 0.3 and 0.6 s from an observation
to its chunk). ROS-free and in simulated time: the world waits while the model computes, then a
chunk lands exactly ``latency`` after its observation, so the numbers do not depend on this
machine's speed or load. The control loop is the policy node's: `ChunkExecutor` (alignment,
limits, max_velocity per second), a new chunk requested when the plan is down to the robot
config's replan_steps_left, the RTC delay estimated from the measured latencies as the node does.

Per mode and latency it prints the success rate, the mean completion time, and the smoothness of
the commanded arm trajectory (joint acceleration and jerk from finite differences at the control
rate, rad/s^2 and rad/s^3): the largest and the mean within two steps of a chunk boundary, and the
mean over the whole episode; plus the model time per chunk (plain sampling against RTC's guided
eager sampling). Writes results.json and rtc_eval.png (bars per latency) to --out.

    source scripts/env.sh && python benchmarks/rtc_eval.py --checkpoint runs/sim_towel_fold/... \
        --episodes 5 --latencies 0 0.3 0.6
    python benchmarks/rtc_eval.py --checkpoint random --episodes 2   # everything runs, nothing folds
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from collections import deque
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "ros2_ws/src/fastwam_policy/config/r1_lite_sim.yaml"
EXPERIMENT = ROOT / "runs/sim_towel_fold"
MODES = ("none", "blend", "rtc")
BOUNDARY_STEPS = 2  # steps either side of a merge counted as "at a chunk boundary"


@dataclass
class Episode:
    mode: str
    latency_s: float
    seed: int
    success: bool
    completion_s: float | None
    progress: float
    chunks: int
    model_ms: list[float] = field(default_factory=list)  # per chunk, wall clock
    accel_boundary_max: float = 0.0
    accel_boundary_mean: float = 0.0
    jerk_boundary_max: float = 0.0
    jerk_boundary_mean: float = 0.0
    accel_mean: float = 0.0
    jerk_mean: float = 0.0
    hold_steps: int = 0  # control steps with no command (plan exhausted)
    # At each merge: the new chunk's step due now against the old plan's target for now (max over
    # arm joints, rad): raw = the chunk as sampled (what RTC guides), plan = after blending.
    gap_raw: list[float] = field(default_factory=list)
    gap_plan: list[float] = field(default_factory=list)


def smoothness(commands: np.ndarray, merges: list[int], rate: float) -> dict[str, float]:
    """Acceleration / jerk magnitudes (largest over arm joints) of commands [T, J] at rate."""
    if len(commands) < 4:
        return {}
    acc = np.abs(np.diff(commands, 2, axis=0)).max(axis=1) * rate**2  # at step k + 1
    jerk = np.abs(np.diff(commands, 3, axis=0)).max(axis=1) * rate**3  # at step k + 1.5
    near = np.zeros(len(commands), bool)
    for m in merges:
        near[max(0, m - BOUNDARY_STEPS) : m + BOUNDARY_STEPS + 1] = True
    acc_b, jerk_b = acc[near[1:-1]], jerk[near[1:-2] | near[2:-1]]
    return {
        "accel_boundary_max": float(acc_b.max()) if len(acc_b) else 0.0,
        "accel_boundary_mean": float(acc_b.mean()) if len(acc_b) else 0.0,
        "jerk_boundary_max": float(jerk_b.max()) if len(jerk_b) else 0.0,
        "jerk_boundary_mean": float(jerk_b.mean()) if len(jerk_b) else 0.0,
        "accel_mean": float(acc.mean()),
        "jerk_mean": float(jerk.mean()),
    }


def run_episode(policy, env, config, mode: str, latency: float, seed: int, args) -> Episode:
    import torch

    from fastwam.execution import ChunkExecutor, JointLimits
    from fastwam.model.rtc import ChunkGuide, delay_steps

    robot, control = config.robot, config.control
    rate, dt = control.rate_hz, 1.0 / control.rate_hz
    executor = ChunkExecutor(
        JointLimits.from_robot(robot, rate),
        rate,
        control.blend_steps if mode == "blend" else 0,
        control.replan_steps_left,
    )
    env.reset(seed)
    generator = torch.Generator().manual_seed(seed)  # the same noise sequence in every mode
    executor.reset(env.spec.join({g: env.positions(g) for g in robot.action_groups}, robot.action_groups))
    arm_dims = np.concatenate([_dims(robot, g) for g in robot.action_groups if robot.group(g).unit == "rad"])
    horizon = policy.action_horizon
    delays: deque[float] = deque(maxlen=10)
    pending = None  # (lands_at, stamp, actions)
    commands, merges, model_ms, chunks, holds = [], [], [], 0, 0
    gaps: tuple[list[float], list[float]] = ([], [])
    step = 0
    completion = None
    while step * dt < args.timeout - 1e-9:
        now = step * dt
        if pending is not None and now >= pending[0] - 1e-9:
            _, stamp, actions = pending
            pending = None
            delays.append(now - stamp)
            old = executor.targets_at(np.array([now]))
            result = executor.merge(actions, stamp, now)
            if result.accepted:
                merges.append(step)
                if old is not None and len(old):
                    gaps[0].append(float(np.abs(actions[result.steps_skipped] - old[0])[arm_dims].max()))
                    gaps[1].append(float(np.abs(executor.plan[0] - old[0])[arm_dims].max()))
        if pending is None and executor.needs_chunk:
            guide = None
            if mode == "rtc":
                targets = executor.targets_at(now + np.arange(horizon) / rate)
                if targets is not None and len(targets):
                    d = delay_steps(list(delays), rate, horizon)
                    guide = ChunkGuide.for_plan(targets, d, 0, horizon, args.rtc_schedule, args.rtc_beta)
            t0 = time.perf_counter()
            out = policy.predict(
                env.render(), env.state(), args.instruction, generator=generator, guide=guide
            )
            model_ms.append((time.perf_counter() - t0) * 1e3)
            chunks += 1
            # The chunk lands `latency` after its observation, at a control tick (0: this one).
            pending = (now + latency, now, out.actions)
            if latency <= 0:
                continue  # merge and command it on this same tick
        command = executor.step(now)
        if command is None:
            holds += executor.exhausted  # the plan ran out before the next chunk (not the start)
            command = executor.last_command
        else:
            env.command_action(command)
        commands.append(command[arm_dims])
        env.step(dt)
        step += 1
        if env.success and completion is None:
            completion = env.time
            break
    ep = Episode(mode, latency, seed, completion is not None, completion, float(env.progress), chunks)
    ep.model_ms, ep.hold_steps = model_ms, holds
    ep.gap_raw, ep.gap_plan = gaps
    for key, value in smoothness(np.array(commands), merges, rate).items():
        setattr(ep, key, value)
    return ep


def _dims(robot, group: str) -> np.ndarray:
    """Indices of a group's joints in the action vector."""
    start = 0
    for g in robot.action_groups:
        n = len(robot.group(g).joints)
        if g == group:
            return np.arange(start, start + n)
        start += n
    raise KeyError(group)


def cost_per_chunk(policy, env, args, n: int) -> dict[str, float]:
    """Model time per chunk, plain sampling (the static loop) against RTC (eager, guided), the two
    alternating on one observation; the guide is a previous chunk with a 5-step delay."""
    import torch

    from fastwam.model.rtc import ChunkGuide

    env.reset(EVAL_SEED_COST)
    images, state = env.render(), env.state()
    g = torch.Generator().manual_seed(0)
    previous = policy.predict(images, state, args.instruction, generator=g).actions
    guide = ChunkGuide.for_plan(previous[10:], 5, 0, policy.action_horizon, args.rtc_schedule, args.rtc_beta)
    for _ in range(2):  # warm-up: allocations, the static loop's buffers
        policy.predict(images, state, args.instruction, generator=g)
        policy.predict(images, state, args.instruction, generator=g, guide=guide)
    times: dict[str, list[float]] = {"plain": [], "rtc": []}
    for _ in range(n):
        for name, kw in (("plain", {}), ("rtc", {"guide": guide})):
            t0 = time.perf_counter()
            out = policy.predict(images, state, args.instruction, generator=g, **kw)
            times[name].append((time.perf_counter() - t0) * 1e3)
            times.setdefault(f"{name}_action", []).append(out.timings_ms["action"])
    return {k: statistics.median(v) for k, v in times.items()}


EVAL_SEED_COST = 123


def _mean(values: list[float]) -> float:
    return statistics.mean(values) if values else float("nan")


def table(episodes: list[Episode], latencies, modes) -> list[dict]:
    rows = []
    for latency in latencies:
        for mode in modes:
            eps = [e for e in episodes if e.mode == mode and e.latency_s == latency]
            done = [e.completion_s for e in eps if e.success]
            rows.append(
                {
                    "latency_s": latency,
                    "mode": mode,
                    "success": f"{len(done)}/{len(eps)}",
                    "success_rate": len(done) / max(len(eps), 1),
                    "completion_s": statistics.mean(done) if done else None,
                    "accel_boundary_max": max(e.accel_boundary_max for e in eps),
                    "accel_boundary_mean": statistics.mean(e.accel_boundary_mean for e in eps),
                    "jerk_boundary_max": max(e.jerk_boundary_max for e in eps),
                    "jerk_boundary_mean": statistics.mean(e.jerk_boundary_mean for e in eps),
                    "accel_mean": statistics.mean(e.accel_mean for e in eps),
                    "jerk_mean": statistics.mean(e.jerk_mean for e in eps),
                    "hold_steps": sum(e.hold_steps for e in eps),
                    "gap_raw_mean": _mean([g for e in eps for g in e.gap_raw]),
                    "gap_plan_mean": _mean([g for e in eps for g in e.gap_plan]),
                    "model_ms_median": statistics.median(m for e in eps for m in e.model_ms),
                }
            )
    return rows


def print_table(rows: list[dict]) -> None:
    head = (
        f"{'latency':>7} {'mode':>5} {'success':>7} {'t_done':>6} | {'acc@b max':>9} {'mean':>7} | "
        f"{'jerk@b max':>10} {'mean':>8} | {'acc mean':>8} {'jerk mean':>9} | {'gap raw':>7} {'plan':>6} | "
        f"{'holds':>5} {'ms/chunk':>8}"
    )
    print(head)
    print("-" * len(head))
    for r in rows:
        done = f"{r['completion_s']:.1f}" if r["completion_s"] is not None else "-"
        print(
            f"{r['latency_s']:>7.2f} {r['mode']:>5} {r['success']:>7} {done:>6} | "
            f"{r['accel_boundary_max']:>9.2f} {r['accel_boundary_mean']:>7.2f} | "
            f"{r['jerk_boundary_max']:>10.1f} {r['jerk_boundary_mean']:>8.1f} | "
            f"{r['accel_mean']:>8.2f} {r['jerk_mean']:>9.1f} | {r['gap_raw_mean']:>7.3f} "
            f"{r['gap_plan_mean']:>6.3f} | {r['hold_steps']:>5} {r['model_ms_median']:>8.0f}"
        )


def plot(rows: list[dict], latencies, modes, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [
        ("success_rate", "success rate"),
        ("accel_boundary_max", "max joint accel at boundaries (rad/s²)"),
        ("jerk_boundary_max", "max joint jerk at boundaries (rad/s³)"),
        ("jerk_boundary_mean", "mean joint jerk at boundaries (rad/s³)"),
        ("gap_raw_mean", "new chunk vs old plan at the merge (rad)"),
    ]
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.6))
    width = 0.8 / len(modes)
    x = np.arange(len(latencies))
    for ax, (key, label) in zip(axes, panels):
        for i, mode in enumerate(modes):
            values = [
                next(r[key] for r in rows if r["mode"] == mode and r["latency_s"] == lat) for lat in latencies
            ]
            ax.bar(x + (i - (len(modes) - 1) / 2) * width, values, width, label=mode)
        ax.set_xticks(x, [f"{lat:g} s" for lat in latencies])
        ax.set_xlabel("inference latency")
        ax.set_title(label, fontsize=9)
        if key == "success_rate":
            ax.set_ylim(0, 1)
    axes[0].legend(fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def resolve_checkpoint(arg: str, config, tmp: str) -> str:
    """'random' (tiny model), 'random:PRESET' (e.g. random:sim: the experiment's model size and
    sampler settings, random weights: right for timing), a directory, or empty: the experiment's."""
    if arg == "random" or arg.startswith("random:"):
        from fastwam.checkpoint import create_random_checkpoint

        preset = arg.partition(":")[2] or "tiny"
        extra = {"num_action_samples": 4} if preset == "sim" else {}
        return str(
            create_random_checkpoint(
                Path(tmp) / f"random_{preset}", preset, config.cameras, config.robot, seed=0,
                action_horizon=32, num_inference_steps=10, **extra,
            )
        )  # fmt: skip
    if arg:
        return arg
    from fastwam_experiments.sim_towel_fold import trained_checkpoint

    found = trained_checkpoint(EXPERIMENT, "fast_wam")
    if found is None:
        raise SystemExit(
            f"no trained fast_wam checkpoint under {EXPERIMENT}; pass --checkpoint DIR or random"
        )
    return str(found)


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--checkpoint",
        default="",
        help="checkpoint dir; empty: the simulation experiment's fast_wam; 'random'",
    )
    parser.add_argument("--robot-config", default=str(CONFIG))
    parser.add_argument("--episodes", type=int, default=3, help="held-out poses per mode and latency")
    parser.add_argument("--seed", type=int, default=None, help="first pose seed (default: EVAL_SEED + 300)")
    parser.add_argument("--latencies", type=float, nargs="+", default=[0.0, 0.3, 0.6])
    parser.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES))
    parser.add_argument("--timeout", type=float, default=12.0, help="simulated seconds per episode")
    parser.add_argument("--rtc-schedule", default="exp")
    parser.add_argument("--rtc-beta", type=float, default=5.0)
    parser.add_argument("--action-samples", type=int, default=None, help="sampler draws per chunk")
    parser.add_argument("--instruction", default="fold the towel")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--out", default=str(ROOT / "runs/rtc_eval"))
    parser.add_argument(
        "--cost", type=int, default=0, help="only time N chunks plain vs RTC (median ms) and exit"
    )
    args = parser.parse_args(argv)

    import torch

    from fastwam.policy import FastWAMPolicy
    from fastwam.robot_config import load_robot_config
    from fastwam_sim.env import EVAL_SEED, SimParams, TowelFoldEnv

    torch.set_num_threads(args.threads)
    config = load_robot_config(args.robot_config)
    seed0 = EVAL_SEED + 300 if args.seed is None else args.seed  # not the experiment's eval poses
    out = Path(args.out)
    with tempfile.TemporaryDirectory(prefix="rtc_eval_") as tmp:
        checkpoint = resolve_checkpoint(args.checkpoint, config, tmp)
        policy = FastWAMPolicy.from_pretrained(checkpoint)
        if args.action_samples:
            policy.num_action_samples = args.action_samples
        env = TowelFoldEnv(policy.robot, policy.camera_layout.keys, SimParams())
        if args.cost:
            cost = cost_per_chunk(policy, env, args, args.cost)
            print(
                f"{checkpoint}: {policy.num_action_samples} draw(s), {policy.num_inference_steps} steps, "
                f"torch threads {torch.get_num_threads()}, median of {args.cost} chunks:"
            )
            print(
                f"  plain {cost['plain']:.0f} ms per chunk (action loop {cost['plain_action']:.0f} ms); "
                f"rtc {cost['rtc']:.0f} ms (guided loop {cost['rtc_action']:.0f} ms): "
                f"x{cost['rtc'] / cost['plain']:.2f} per chunk, x{cost['rtc_action'] / cost['plain_action']:.2f} "
                "for the action loop"
            )
            return [cost]
        print(
            f"checkpoint {checkpoint}; {args.episodes} poses from seed {seed0}; latencies {args.latencies}; "
            f"modes {args.modes}; {policy.num_action_samples} draw(s), {policy.num_inference_steps} steps per chunk"
        )
        episodes = []
        for latency in args.latencies:
            for mode in args.modes:
                for i in range(args.episodes):
                    t0 = time.perf_counter()
                    ep = run_episode(policy, env, config, mode, latency, seed0 + i, args)
                    episodes.append(ep)
                    print(
                        f"  latency {latency:.2f} {mode:>5} seed {ep.seed}: "
                        f"{f'SUCCESS at {ep.completion_s:.1f} s' if ep.success else 'no success'}, "
                        f"progress {ep.progress:.2f}, {ep.chunks} chunks, jerk@b max {ep.jerk_boundary_max:.0f}, "
                        f"{time.perf_counter() - t0:.0f} s",
                        flush=True,
                    )
    rows = table(episodes, args.latencies, args.modes)
    out.mkdir(parents=True, exist_ok=True)
    print_table(rows)
    (out / "results.json").write_text(
        json.dumps(
            {"checkpoint": checkpoint, "rows": rows, "episodes": [asdict(e) for e in episodes]}, indent=1
        )
    )
    plot(
        rows,
        args.latencies,
        args.modes,
        out / "rtc_eval.png",
        f"{'/'.join(Path(checkpoint).parts[-4:])}: {args.episodes} held-out poses",
    )
    print(f"wrote {out / 'results.json'} and {out / 'rtc_eval.png'}")
    return rows


if __name__ == "__main__":
    main()
