"""Round trip: episode bag -> LeRobot dataset -> training loader -> one training step (tiny preset)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fastwam.data.bag import CAMERA_FEATURE, convert_bags
from fastwam.data.episode_bag import EpisodeRecorder
from fastwam.robot_config import load_robot_config

from test_bag import CONFIG, episode_messages, record, teleop_messages, topic_specs

trainer_module = pytest.importorskip("fastwam_training.trainer", reason="training package not on PYTHONPATH")
from fastwam_training.config import from_dict  # noqa: E402
from fastwam_training.synthetic import experiment_dict  # noqa: E402


def test_recorded_episodes_train_one_step(tmp_path):
    config = load_robot_config(CONFIG)
    recorder = EpisodeRecorder(tmp_path / "episodes", topic_specs(config), flush_period_s=0.2)
    messages = episode_messages(config, seconds=1.5)
    record(recorder, messages, instruction="fold the towel")
    record(recorder, messages, instruction="fold the towel again", success=False)
    # Real teleoperation: the operator takes the controls 6 s after starting the recording.
    record(recorder, teleop_messages(config, 7.5, [(6.0, 7.5)]), instruction="fold the towel late")
    root = tmp_path / "dataset"
    verdicts: list[dict] = []
    bags = sorted((tmp_path / "episodes").iterdir())
    assert convert_bags(bags, root, config, log=lambda *_: None, verdicts=verdicts) == [0, 1, 2]
    assert verdicts[2]["verdict"] == "converted" and verdicts[2]["idle_head_s"] == pytest.approx(
        6.0, abs=0.02
    )
    assert verdicts[2]["frames"] == 22  # 1.5 s at 15 Hz: the idle 6 s trimmed

    # The R1 Lite robot spec and camera keys, with a small layout so the tiny model runs fast on CPU.
    experiment = experiment_dict(
        root,
        tmp_path / "run",
        name="bag_round_trip",
        robot=config.robot.to_dict(),
        cameras={
            "rows": [
                [{"key": "head", "height": 32, "width": 64}],
                [
                    {"key": "wrist_left", "height": 32, "width": 32},
                    {"key": "wrist_right", "height": 32, "width": 32},
                ],
            ]
        },
        data={"cameras": {key: CAMERA_FEATURE.format(key=key) for key in config.cameras.keys}},
        train={"max_steps": 1, "batch_size": 2, "warmup_steps": 1},
        logging={"every": 1},
    )
    trainer = trainer_module.Trainer(from_dict(experiment))
    sample = trainer.train_data[0]
    assert sample["action"].shape[-1] == config.robot.action_dim == 14
    assert sample["state"].shape[-1] == config.robot.state_dim
    history = trainer.train()
    assert len(history) == 1 and np.isfinite(history[0]["loss"])
    assert all(
        torch.isfinite(p).all() for p in trainer.accelerator.unwrap_model(trainer.loss_module).parameters()
    )
