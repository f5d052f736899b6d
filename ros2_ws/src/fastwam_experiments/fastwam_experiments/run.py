"""The main job (scripts/run.sh): the single-process runner with the simulation experiment's Fast-WAM.

    python -m fastwam_experiments.run                      # the experiment's fast_wam checkpoint
    python -m fastwam_experiments.run --checkpoint random  # every option of fastwam_bringup.run

It is `fastwam_bringup.run` with one addition: with no --checkpoint it runs the fast_wam checkpoint
of the simulation experiment (fastwam_experiments.sim_towel_fold) under --experiment-dir, and when
there is none yet, first produces it with the experiment's record, convert and train stages
(minutes on a CPU). The dependency points one way: the experiment uses bringup's composition, and
bringup's runner takes the experiment's checkpoint through its `default_checkpoint` hook.
"""

from __future__ import annotations

import argparse

from fastwam_bringup import run as runner
from fastwam_experiments import sim_towel_fold

DEFAULT_EXPERIMENT_DIR = sim_towel_fold.DEFAULT_OUT
PROG = "python -m fastwam_experiments.run"


def build_parser() -> argparse.ArgumentParser:
    parser = runner.build_parser(
        PROG,
        default_help="empty (default): the simulation experiment's fast_wam checkpoint under --experiment-dir, "
        "produced on first use",
    )
    parser.add_argument(
        "--experiment-dir",
        default=DEFAULT_EXPERIMENT_DIR,
        help="simulation experiment directory holding the default checkpoint (default %(default)s)",
    )
    return parser


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    return runner.parse_args(argv, build_parser())


def experiment_checkpoint(args: argparse.Namespace) -> str:
    """The runner's default checkpoint: the experiment's fast_wam model, produced when missing."""
    found = sim_towel_fold.trained_checkpoint(args.experiment_dir, "fast_wam")
    if found is not None:
        print(f"[run] checkpoint: {found} (the simulation experiment's fast_wam model)")
        return str(found)
    print(
        f"[run] no fast_wam checkpoint under {args.experiment_dir} yet: producing it with the simulation "
        "experiment's record, convert and train stages (python -m fastwam_experiments.sim_towel_fold)"
    )
    return str(sim_towel_fold.prepare_default_checkpoint(args.experiment_dir, args.robot_config))


def main(argv: list[str] | None = None) -> None:
    runner.main(argv, default_checkpoint=experiment_checkpoint, parser=build_parser())


if __name__ == "__main__":
    main()
