"""ROS-free closed-loop rollouts of a towel-fold policy in the simulated R1 Lite.

The simulation experiment's eval (``fastwam_experiments.sim_towel_fold``) is the reference: the policy
node drives the simulated robot node over DDS in real time, 12 s per failed episode. This runs the
same policy and simulator in one process, as fast as the policy predicts, to compare checkpoints on
many held-out poses in minutes: every ``--replan`` control steps it predicts a chunk from the
current observation and commands that chunk's first ``--replan`` targets open-loop (no inference
latency, no blending with the previous chunk, no velocity limiting: the node's execution layer is
what it leaves out). Each episode's sampler noise is seeded by its pose seed, so a run repeats.

    python -m fastwam_training.sim_rollout CHECKPOINT [--episodes 40] [--seed 100000] [--workers 2]

Prints one line per episode (pose seed, success, completion time, final progress) and the totals.
"""

from __future__ import annotations

import argparse
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from fastwam_sim.env import EVAL_SEED, SIM_IMAGE_SIZE, add_image_size_argument


@dataclass(frozen=True)
class Rollout:
    seed: int  # the towel pose's seed
    success: bool
    completion_s: float | None  # simulated seconds to the first success
    progress: float  # fold progress at the end (0 flat, 1 folded exactly)
    chunks: int  # predictions made


def rollout(
    policy, env, seed: int, instruction: str = "fold the towel", replan: int = 16, timeout_s: float = 12.0
) -> Rollout:
    """One episode: ``env`` reset to pose ``seed``, ``policy`` (``predict(images, state,
    instruction, generator)`` -> ``.actions`` [H, A] at ``policy.fps``) in the loop until the first
    success or ``timeout_s`` simulated seconds."""
    import torch

    horizon = int(policy.action_horizon)
    if not 1 <= replan <= horizon:
        raise ValueError(f"replan must be in 1..{horizon} (the chunk length), got {replan}")
    env.reset(seed)
    generator = torch.Generator(device=policy.device).manual_seed(seed)
    dt = 1.0 / float(policy.fps)
    chunk, chunks, k = None, 0, 0
    while env.time < timeout_s - 1e-9:
        if k % replan == 0:
            chunk = np.asarray(
                policy.predict(env.render(), env.state(), instruction, generator=generator).actions
            )
            chunks += 1
        env.command_action(chunk[k % replan])
        env.step(dt)
        k += 1
        if env.success:
            return Rollout(seed, True, float(env.time), float(env.progress), chunks)
    return Rollout(seed, False, None, float(env.progress), chunks)


def summary(rollouts: Sequence[Rollout]) -> str:
    done = [r.completion_s for r in rollouts if r.success]
    mean_time = f"{statistics.mean(done):.1f} s" if done else "-"
    return (
        f"success {len(done)}/{len(rollouts)} ({100 * len(done) / max(len(rollouts), 1):.0f} %), "
        f"mean completion time {mean_time}, median final progress "
        f"{statistics.median(r.progress for r in rollouts):.2f}"
    )


# -- worker processes (each loads the checkpoint once) -------------------------------------------
_worker: dict = {}


def load_in_sim(checkpoint: str, image_size: tuple[int, int], action_samples: int | None = None):
    """(``FastWAMPolicy`` of ``checkpoint``, ``TowelFoldEnv`` for its robot and cameras rendering
    image_size = (H, W)); ``action_samples``: sampler draws averaged per chunk (None: the
    checkpoint's)."""
    from fastwam.policy import FastWAMPolicy
    from fastwam_sim.env import SimParams, TowelFoldEnv

    policy = FastWAMPolicy.from_pretrained(checkpoint)
    if action_samples is not None:  # FastWAM.infer refuses a count below 1
        policy.num_action_samples = action_samples
    params = SimParams(image_height=image_size[0], image_width=image_size[1])
    return policy, TowelFoldEnv(policy.robot, policy.camera_layout.keys, params)


def _init_worker(checkpoint: str, image_size: tuple[int, int], action_samples: int | None) -> None:
    import torch

    torch.set_num_threads(1)
    _worker["policy"], _worker["env"] = load_in_sim(checkpoint, image_size, action_samples)


def _run_one(seed: int, instruction: str, replan: int, timeout_s: float) -> Rollout:
    return rollout(_worker["policy"], _worker["env"], seed, instruction, replan, timeout_s)


def run_rollouts(
    checkpoint: str,
    seeds: Iterable[int],
    workers: int = 1,
    image_size: tuple[int, int] = SIM_IMAGE_SIZE,
    instruction: str = "fold the towel",
    replan: int = 16,
    timeout_s: float = 12.0,
    on_result=None,
    action_samples: int | None = None,
) -> list[Rollout]:
    """Rollouts of ``checkpoint`` over ``seeds``, in ``workers`` processes of one thread each
    (or in this process for workers=1, with torch's threads as they are); in seed order."""
    seeds = list(seeds)
    if workers <= 1:
        policy, env = load_in_sim(checkpoint, image_size, action_samples)
        results = []
        for seed in seeds:
            results.append(rollout(policy, env, seed, instruction, replan, timeout_s))
            if on_result:
                on_result(results[-1])
        return results
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    ctx = multiprocessing.get_context("spawn")  # no forked torch thread pools
    with ProcessPoolExecutor(workers, ctx, _init_worker, (checkpoint, image_size, action_samples)) as pool:
        futures = [pool.submit(_run_one, s, instruction, replan, timeout_s) for s in seeds]
        results = []
        for f in futures:
            results.append(f.result())
            if on_result:
                on_result(results[-1])
        return results


def main(argv: list[str] | None = None) -> list[Rollout]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("checkpoint", help="checkpoint directory (checkpoint.json + model.safetensors)")
    ap.add_argument("--episodes", type=int, default=40)
    ap.add_argument(
        "--seed", type=int, default=EVAL_SEED, help="first pose seed (the experiment's held-out seeds)"
    )
    ap.add_argument("--replan", type=int, default=16, help="control steps executed per predicted chunk")
    ap.add_argument("--timeout", type=float, default=12.0, help="simulated seconds per episode")
    ap.add_argument("--workers", type=int, default=1, help="processes, one torch thread each")
    add_image_size_argument(ap, help="simulated camera HxW (as the experiment)")
    ap.add_argument("--instruction", default="fold the towel")
    ap.add_argument(
        "--action-samples",
        type=int,
        default=None,
        help="sampler draws averaged per chunk (default: the checkpoint's num_action_samples)",
    )
    args = ap.parse_args(argv)
    if args.episodes < 1:
        ap.error("--episodes must be at least 1")
    if args.action_samples is not None and args.action_samples < 1:
        ap.error("--action-samples must be at least 1")

    def show(r: Rollout) -> None:
        time = f"{r.completion_s:.1f} s" if r.success else "-"
        print(
            f"pose {r.seed}: {'success' if r.success else 'fail'} {time} progress {r.progress:.2f}",
            flush=True,
        )

    results = run_rollouts(
        args.checkpoint,
        range(args.seed, args.seed + args.episodes),
        workers=args.workers,
        image_size=args.image_size,
        instruction=args.instruction,
        replan=args.replan,
        timeout_s=args.timeout,
        on_result=show,
        action_samples=args.action_samples,
    )
    print(summary(results))
    return results


if __name__ == "__main__":
    main()
