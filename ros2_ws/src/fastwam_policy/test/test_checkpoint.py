"""Checkpoint directory: round trip, strict loading, embedded vs referenced components."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from fastwam.camera import CameraLayout
from fastwam.checkpoint import (
    CONFIG_FILE,
    WEIGHTS_FILE,
    create_random_checkpoint,
    load_checkpoint,
    read_checkpoint_json,
    save_checkpoint,
)
from fastwam.model import FastWAM, build_random_components
from fastwam.model_config import preset
from fastwam.normalize import FeatureStats, NormalizationStats
from fastwam.robot import JointGroup, RobotSpec

LAYOUT = CameraLayout.row(("front", "wrist"), 64, 32)


def _robot(n_arm=3) -> RobotSpec:
    arm = JointGroup(
        "arm", tuple(f"j{i}" for i in range(n_arm)), (-1.0,) * n_arm, (1.0,) * n_arm, (1.0,) * n_arm
    )
    grip = JointGroup("gripper", ("g",), (0.0,), (0.05,), (0.1,), "m")
    return RobotSpec("toy", (arm, grip), ("arm", "gripper"), ("arm",))


def _stats(robot: RobotSpec) -> NormalizationStats:
    def feat(d, scale):
        a = np.arange(d, dtype=np.float64)
        return FeatureStats(a, a + scale, a - 1, a + 1, a - 0.9, a + 0.9, 10)

    return NormalizationStats({"action": feat(robot.action_dim, 2.0), "state": feat(robot.state_dim, 3.0)})


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    robot = _robot()
    path = tmp_path_factory.mktemp("ck") / "random"
    create_random_checkpoint(
        path, "tiny", LAYOUT, robot, _stats(robot), seed=3, control_fps=15.0, variant="joint"
    )
    return path


def test_random_checkpoint_round_trip(ckpt):
    robot = _robot()
    loaded = load_checkpoint(ckpt)
    assert loaded.config.variant == "joint"
    assert loaded.config.action_dim == robot.action_dim and loaded.config.state_dim == robot.state_dim
    assert loaded.camera_layout == LAYOUT and loaded.robot.to_dict() == robot.to_dict()
    assert loaded.normalization_modes == {"action": "mean_std", "state": "mean_std"}
    assert loaded.stats.to_dict() == _stats(robot).to_dict()
    assert loaded.control_fps == 15.0 and loaded.dataset_fps == 15.0 and loaded.action_horizon == 4
    assert loaded.components is not None and loaded.components.text_dim == loaded.config.video.text_dim
    # Same seed -> same weights as building the model directly.
    torch.manual_seed(3)
    ref = FastWAM(preset("tiny", action_dim=4, state_dim=3, action_init="random", variant="joint"))
    for (name, a), b in zip(loaded.model.state_dict().items(), ref.state_dict().values()):
        assert torch.equal(a, b), name
    # Save again (embedded components) and compare tensors bit for bit.
    out = save_checkpoint(
        ckpt.parent / "again",
        loaded.model,
        camera_layout=loaded.camera_layout,
        robot=loaded.robot,
        stats=loaded.stats,
        control_fps=30.0,
        dataset_fps=15.0,
        components=loaded.components,
        extra={"step": 7},
    )
    again = load_checkpoint(out)
    assert again.extra == {"step": 7} and again.control_fps == 30.0
    a, b = load_file(str(ckpt / WEIGHTS_FILE)), load_file(str(out / WEIGHTS_FILE))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_identity_normalization_without_stats_and_bf16_keeps_fp32_modules(tmp_path):
    robot = _robot()
    create_random_checkpoint(tmp_path / "ck", "tiny", LAYOUT, robot, state_dim=0)
    loaded = load_checkpoint(tmp_path / "ck", dtype=torch.bfloat16)
    assert loaded.stats is None and loaded.normalization_modes == {"action": "identity"}
    x = np.ones(robot.action_dim)
    assert np.array_equal(loaded.normalizer.unnormalize("action", x), x)
    assert loaded.model.state_proj is None
    assert loaded.model.expert.action_in.weight.dtype == torch.bfloat16
    assert loaded.model.video.blocks[0].scale_shift_table.dtype == torch.float32


def test_strict_loading_names_unknown_and_missing_keys(ckpt, tmp_path):
    bad = tmp_path / "bad"
    shutil.copytree(ckpt, bad)
    state = load_file(str(bad / WEIGHTS_FILE))
    state["expert.bogus.weight"] = torch.zeros(1)
    del state["video.proj_out.bias"]
    save_file(state, str(bad / WEIGHTS_FILE))
    with pytest.raises(
        ValueError, match=r"missing keys: \[video.proj_out.bias\].*unknown keys: \[expert.bogus.weight\]"
    ):
        load_checkpoint(bad)
    state = load_file(str(ckpt / WEIGHTS_FILE))
    state["video.proj_out.bias"] = torch.zeros(3)
    save_file(state, str(bad / WEIGHTS_FILE))
    with pytest.raises(ValueError, match="shape mismatch: video.proj_out.bias"):
        load_checkpoint(bad)


def test_missing_files_and_bad_json_are_named(ckpt, tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        load_checkpoint(tmp_path / "absent")
    bad = tmp_path / "bad"
    shutil.copytree(ckpt, bad)
    (bad / WEIGHTS_FILE).unlink()
    with pytest.raises(FileNotFoundError, match=WEIGHTS_FILE):
        load_checkpoint(bad)
    shutil.rmtree(bad)
    shutil.copytree(ckpt, bad)
    shutil.rmtree(bad / "components" / "text_encoder")
    with pytest.raises(FileNotFoundError, match="text_encoder"):
        load_checkpoint(bad)
    meta = read_checkpoint_json(ckpt)
    for change, pattern in (
        ({"surprise": 1}, "unknown fields \\['surprise'\\]"),
        ({"format_version": 99}, "format_version"),
        ({"model": {**meta["model"], "new_knob": 1}}, "new_knob"),
    ):
        (bad / CONFIG_FILE).write_text(json.dumps({**meta, **change}))
        with pytest.raises(ValueError, match=pattern):
            load_checkpoint(bad)
    del meta["robot"]
    (bad / CONFIG_FILE).write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="missing fields \\['robot'\\]"):
        load_checkpoint(bad)
    (bad / CONFIG_FILE).unlink()
    with pytest.raises(FileNotFoundError, match=CONFIG_FILE):
        load_checkpoint(bad)


def test_a_format_1_checkpoint_is_refused_saying_why_and_what_to_do(ckpt, tmp_path):
    old = tmp_path / "old"
    shutil.copytree(ckpt, old)
    meta = read_checkpoint_json(ckpt)
    (old / CONFIG_FILE).write_text(json.dumps({**meta, "format_version": 1}))
    with pytest.raises(ValueError, match="format_version 1") as error:
        load_checkpoint(old)
    message = str(error.value)
    assert str(old) in message and "authors' Fast-WAM" in message and "sim_experiment.sh --force" in message


def test_a_truncated_weights_file_is_an_error_naming_it(ckpt, tmp_path):
    bad = tmp_path / "truncated"
    shutil.copytree(ckpt, bad)
    data = (bad / WEIGHTS_FILE).read_bytes()
    (bad / WEIGHTS_FILE).write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=f"{bad / WEIGHTS_FILE}: not a readable safetensors file"):
        load_checkpoint(bad)


def test_referenced_components_and_override(tmp_path):
    robot = _robot()
    cfg = preset("tiny", action_dim=robot.action_dim, state_dim=robot.state_dim)
    wan = tmp_path / "Wan2.2-tiny-Diffusers"
    build_random_components(cfg).save_pretrained(wan)
    model = FastWAM(cfg)
    out = save_checkpoint(
        tmp_path / "ref", model, camera_layout=LAYOUT, robot=robot, stats=None, control_fps=15, wan_dir=wan
    )
    assert not (out / "components").exists()
    assert read_checkpoint_json(out)["components"] == {"wan_dir": str(wan)}
    assert load_checkpoint(out).components is not None
    moved = tmp_path / "moved"
    wan.rename(moved)
    with pytest.raises(FileNotFoundError, match="Wan2.2-tiny-Diffusers"):
        load_checkpoint(out)
    assert load_checkpoint(out, components_path=moved).components is not None
    with pytest.raises(ValueError, match="exactly one"):
        save_checkpoint(tmp_path / "x", model, camera_layout=LAYOUT, robot=robot, stats=None, control_fps=15)


def test_save_rejects_inconsistent_robot_and_stats(tmp_path):
    robot = _robot()
    cfg = preset("tiny", action_dim=robot.action_dim, state_dim=robot.state_dim)
    model = FastWAM(cfg)
    comp = build_random_components(cfg)
    kw = dict(camera_layout=LAYOUT, stats=None, control_fps=15, components=comp)
    with pytest.raises(ValueError, match="action_dim"):
        save_checkpoint(tmp_path / "a", model, robot=_robot(n_arm=5), **kw)
    with pytest.raises(ValueError, match="needs statistics"):
        save_checkpoint(
            tmp_path / "b",
            model,
            robot=robot,
            **{**kw, "stats": None},
            normalization_modes={"action": "mean_std", "state": "identity"},
        )
    assert not (tmp_path / "b" / CONFIG_FILE).exists()
