"""The shipped experiment configs parse and describe the robots and camera layouts they claim."""

from __future__ import annotations

from pathlib import Path

import pytest

from fastwam.model_config import preset
from fastwam_training.config import load_config
from fastwam_training.modeling import model_config

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


@pytest.mark.parametrize(
    ("name", "size", "action_dim", "state_dim", "steps"),
    [
        ("towel_fold", (384, 320), 14, 14, 30000),
        ("libero", (224, 448), 7, 8, 20000),
        ("robotwin", (384, 320), 14, 14, 30000),
        ("tiny_synthetic", (32, 64), 4, 4, 200),
    ],
)
def test_shipped_configs(name, size, action_dim, state_dim, steps):
    config = load_config(CONFIGS / f"{name}.yaml")
    robot, layout = config.robot_and_cameras()
    assert (layout.height, layout.width) == size
    assert (robot.action_dim, robot.state_dim) == (action_dim, state_dim)
    assert set(config.data.cameras) == set(layout.keys)
    assert config.train.max_steps == steps
    if name != "tiny_synthetic":  # the paper's optimizer settings
        assert (config.train.lr, config.train.weight_decay, config.train.grad_clip) == (1e-4, 0.01, 1.0)
        assert config.model.preset == "wan22-5b" and config.data.video_stride == 4
        cfg = model_config(config, robot)
        assert (cfg.action_horizon, cfg.num_video_frames, cfg.num_inference_steps) == (32, 9, 10)
        assert cfg.action_dim == action_dim and cfg.state_dim == state_dim
    for variant in ("fast_wam", "joint", "idm", "no_cotrain"):
        assert load_config(CONFIGS / f"{name}.yaml", [f"model.variant={variant}"]).model.variant == variant
    assert preset(config.model.preset).variant == "fast_wam"


def test_yaml_booleans_in_text_fields_read_as_words():
    # YAML 1.1 reads `no` as False; accelerate's "no mixed precision" is the word.
    config = load_config(CONFIGS / "tiny_synthetic.yaml", ["train.mixed_precision=no"])
    assert config.train.mixed_precision == "no"
