"""Open-loop grasp probe for a towel-fold policy in the simulated R1 Lite.

Closed-loop success mixes perception, timing and compounding errors. This probe isolates the first
one: from the start observation of a pose, where does the first predicted chunk put each fingertip
at the moment the scripted teleoperator is about to pinch (``FoldTiming.descend``)? Compared with
the script's own target over many poses it gives

* the tip error (cm) against the error of always reaching for the average pose, and
* per axis, the slope and correlation of the predicted offset (from each arm's average) against
  the true one: slope 1 tracks the towel fully, slope 0 ignores it; high correlation with a low
  slope means the policy sees the towel but is shrunk toward the average pose.

    python -m fastwam_training.grasp_probe CHECKPOINT [--train-seeds 0:20] [--held-seeds 100000:100020]

ROS-free: it runs the policy and the simulator directly (``fastwam.policy``, ``fastwam_sim``).
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass

import numpy as np

from fastwam_sim.env import ARMS, EVAL_SEED, add_image_size_argument
from fastwam_training.sim_rollout import load_in_sim


@dataclass(frozen=True)
class ProbeStats:
    """Tip targets of n poses x 2 arms, compared (all distances in cm)."""

    tip_error_mean: float
    tip_error_median: float
    within_3cm: float  # share of (pose, arm) tips within 3 cm of the script's target
    average_pose_error: float  # the error of always reaching for each arm's average target
    slope: tuple[float, float]  # x, y: least-squares slope of predicted on true offsets
    correlation: tuple[float, float]


def probe_stats(predicted: np.ndarray, target: np.ndarray) -> ProbeStats:
    """predicted, target: [n, 2 arms, 2 (x, y)] fingertip positions in metres."""
    predicted = np.asarray(predicted, dtype=np.float64)
    target = np.asarray(target, dtype=np.float64)
    if predicted.shape != target.shape or predicted.ndim != 3 or predicted.shape[1:] != (2, 2):
        raise ValueError(f"expected two [n, 2, 2] arrays, got {predicted.shape} and {target.shape}")
    if predicted.shape[0] < 2:
        raise ValueError("the probe needs at least two poses")
    error = np.linalg.norm(predicted - target, axis=-1).ravel() * 100
    # Offsets from each arm's average: the left/right separation would otherwise dominate y.
    t = (target - target.mean(0)).reshape(-1, 2)
    p = (predicted - predicted.mean(0)).reshape(-1, 2)
    slope = tuple(float(t[:, i] @ p[:, i] / (t[:, i] @ t[:, i])) for i in range(2))
    with np.errstate(invalid="ignore", divide="ignore"):  # constant predictions: nan, said as nan
        corr = tuple(float(np.corrcoef(t[:, i], p[:, i])[0, 1]) for i in range(2))
    return ProbeStats(
        tip_error_mean=float(error.mean()),
        tip_error_median=float(np.median(error)),
        within_3cm=float(np.mean(error < 3.0)),
        average_pose_error=float(np.linalg.norm(t, axis=-1).mean() * 100),
        slope=slope,
        correlation=corr,
    )


def probe_policy(policy, env, seeds, instruction: str = "fold the towel", seed: int = 0) -> ProbeStats:
    """Run the probe for ``policy`` (a ``FastWAMPolicy``) in ``env`` (a ``TowelFoldEnv`` for its
    robot and cameras) over the towel poses of ``seeds``; every prediction starts from the same
    noise (``seed``), so poses differ only in what the policy sees."""
    import torch

    from fastwam_sim.teleop import ScriptedFolder

    spec = policy.robot
    predicted, target = [], []
    for pose in seeds:
        env.reset(pose)
        script = ScriptedFolder(env)
        # Chunk step k is the command for k / fps seconds after the observation (as recorded).
        step = min(int(round(script.timing.descend * policy.fps)), policy.action_horizon - 1)
        generator = torch.Generator(device=policy.device).manual_seed(seed)
        chunk = policy.predict(env.render(), env.state(), instruction, generator=generator).actions
        groups = spec.split(np.asarray(chunk[step], dtype=np.float64), spec.action_groups)
        predicted.append([env.kinematics[arm].tip(groups[f"arm_{arm}"])[:2] for arm in ARMS])
        target.append([script.tip_target(arm, step / policy.fps)[:2] for arm in ARMS])
    return probe_stats(np.array(predicted), np.array(target))


def format_stats(name: str, s: ProbeStats) -> str:
    return (
        f"{name}: tip error {s.tip_error_mean:.2f} cm (median {s.tip_error_median:.2f}, "
        f"{100 * s.within_3cm:.0f} % within 3 cm; average-pose policy {s.average_pose_error:.2f} cm) | "
        f"slope x {s.slope[0]:.2f} y {s.slope[1]:.2f} | correlation x {s.correlation[0]:.2f} "
        f"y {s.correlation[1]:.2f}"
    )


def _seed_range(text: str) -> range:
    start, stop = (int(v) for v in text.split(":"))
    if stop <= start:
        raise argparse.ArgumentTypeError(f"empty seed range {text!r}")
    return range(start, stop)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("checkpoint", help="checkpoint directory (checkpoint.json + model.safetensors)")
    ap.add_argument("--train-seeds", type=_seed_range, default=range(0, 20), help="start:stop")
    ap.add_argument(
        "--held-seeds", type=_seed_range, default=range(EVAL_SEED, EVAL_SEED + 20), help="start:stop"
    )
    add_image_size_argument(ap, help="simulated camera HxW (as the experiment)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the sampler's noise")
    args = ap.parse_args(argv)

    policy, env = load_in_sim(args.checkpoint, args.image_size)
    for name, seeds in (("training poses", args.train_seeds), ("held-out poses", args.held_seeds)):
        print(format_stats(name, probe_policy(policy, env, seeds, seed=args.seed)))


if __name__ == "__main__":
    main()
