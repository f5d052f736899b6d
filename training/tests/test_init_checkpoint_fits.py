"""model.init_checkpoint must be for this run's robot and cameras: the trainer refuses another one
through the one check the policy node and the simulation experiment use
(`fastwam.robot_config_match.check_fits`), naming what differs."""

from __future__ import annotations

import pytest

from fastwam.camera import CameraLayout
from fastwam.checkpoint import create_random_checkpoint
from fastwam_training.config import from_dict
from fastwam_training.modeling import build
from fastwam_training.synthetic import experiment_dict


def _config(tmp_path, checkpoint):
    data = experiment_dict(
        tmp_path / "no_dataset", tmp_path / "run", model={"init_checkpoint": str(checkpoint)}
    )
    return from_dict(data)


def test_an_init_checkpoint_for_other_cameras_is_refused(tmp_path):
    config = _config(tmp_path, tmp_path / "ckpt")
    robot, layout = config.robot_and_cameras()
    other = CameraLayout.row(layout.keys, 64, 64)  # the synthetic run: 32x32 each
    create_random_checkpoint(tmp_path / "ckpt", "tiny", other, robot)
    with pytest.raises(ValueError) as caught:
        build(config, robot, layout)
    message = str(caught.value)
    assert message == (
        f"init checkpoint {tmp_path / 'ckpt'} has camera layout {other.to_dict()}, this run's config has "
        f"cameras {layout.to_dict()}"
    )


def test_an_init_checkpoint_for_this_run_is_loaded(tmp_path):
    config = _config(tmp_path, tmp_path / "ckpt")
    robot, layout = config.robot_and_cameras()
    create_random_checkpoint(tmp_path / "ckpt", "tiny", layout, robot)
    model, components = build(config, robot, layout)
    assert model.training and components is not None
