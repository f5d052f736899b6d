"""Our model is the authors' Fast-WAM: their checkpoints, converted, reproduce their outputs.

The reference is ``shared/fixtures/authors_fastwam_tiny`` (its README): two tiny checkpoints in the
authors' own payload layout and the outputs their public code computed from them (fp32, CPU). Nothing
here regenerates or edits those files; the tests convert the checkpoints with ``fastwam.convert``,
run our model, and compare.
"""

from __future__ import annotations

import json
import os
import pickle

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from fastwam.camera import CameraLayout
from fastwam.checkpoint import CONFIG_FILE, load_checkpoint
from fastwam.convert import (
    AuthorsCheckpointError,
    convert_authors_checkpoint,
    load_authors_model,
    main,
)
from fastwam.model import flow
from fastwam.model.fastwam import Context
from fastwam.model.masks import build_mask
from fastwam.model_config import preset
from fastwam.policy import FastWAMPolicy
from fastwam.robot import JointGroup, RobotSpec

import model_reference as reference  # the eager oracle, beside the tests (see conftest.py)
from authors_fixture import require_fixture

FIXTURE = require_fixture()  # skips the module without shared/ (fails in CI)
TOL = 1e-5


def _fixture():
    config = json.loads((FIXTURE / "config.json").read_text())
    return (
        config,
        load_file(str(FIXTURE / "inputs.safetensors")),
        load_file(str(FIXTURE / "expected.safetensors")),
    )


def _base(variant: str):
    config, _, _ = _fixture()
    # The preset supplies what tensors do not show: 2 heads x 12, the chunk (9 pixel frames -> 3
    # latent frames, horizon 8); every size the tensors show is read from them and checked.
    return preset(
        "tiny",
        variant=variant,
        action_horizon=config["action_horizon"],
        num_video_frames=config["pixel_frames"],
    )


def _one_forward(model, inputs, config):
    """One masked MoT forward as the authors' training_loss runs it: clean first frame (t = 0), future
    frames at t_video_future, actions at t_action; text attended with an all-ones mask + state token."""
    latents = inputs["latents"]
    b, _, f, _, _ = latents.shape
    raw = model.context_tokens(inputs["text"], None, inputs["state"])
    ctx = Context(
        video_ctx=model.video.condition_embedder.text_embedder(raw),
        expert_ctx=model.expert.condition_embedder.text_embedder(raw),
    )
    hp, wp = model.token_grid(latents)
    t_frames = torch.tensor([[0.0] + [config["t_video_future"]] * (f - 1)] * b)
    mask = build_mask(
        model.config.variant,
        {"first": hp * wp, "future": hp * wp * (f - 1), "action": config["action_horizon"]},
    )
    with torch.no_grad():
        return model.forward_tokens(
            latents,
            t_frames,
            model.video_rope(f, hp, wp),
            ctx,
            inputs["noisy_action"],
            torch.full((b,), config["t_action"]),
            mask,
        )


def _robot(action_dim=4, state_dim=3) -> RobotSpec:
    arm = JointGroup(
        "arm",
        tuple(f"j{i}" for i in range(action_dim)),
        (-5.0,) * action_dim,
        (5.0,) * action_dim,
        (1.0,) * action_dim,
    )
    sensed = JointGroup(
        "sensed",
        tuple(f"s{i}" for i in range(state_dim)),
        (-5.0,) * state_dim,
        (5.0,) * state_dim,
        (1.0,) * state_dim,
    )
    return RobotSpec("authors_tiny", (arm, sensed), ("arm",), ("sensed",))


@pytest.fixture(scope="module")
def robot_config(tmp_path_factory):
    """A YAML with robot + cameras sections, as --robot-config takes it (64x96: the fixture's 4x6 latents)."""
    import yaml

    path = tmp_path_factory.mktemp("robot") / "authors_tiny.yaml"
    layout = CameraLayout.row(("front", "wrist"), 64, 48)
    path.write_text(yaml.safe_dump({"robot": _robot().to_dict(), "cameras": layout.to_dict()}))
    return path


@pytest.fixture(scope="module")
def authors_stats(tmp_path_factory):
    """dataset_stats.json in the authors' layout: one merged key per group, per-dim statistics."""
    path = tmp_path_factory.mktemp("stats") / "dataset_stats.json"

    def feat(d, offset):
        a = np.arange(d, dtype=np.float64) + offset
        return {"mean": a.tolist(), "std": (a * 0 + 2).tolist(), "min": (a - 3).tolist(),
                "max": (a + 3).tolist(), "q01": (a - 2).tolist(), "q99": (a + 2).tolist()}  # fmt: skip

    path.write_text(
        json.dumps({"action": {"action": feat(4, 0.5)}, "state": {"observation.state": feat(3, -1)}})
    )
    return path


@pytest.fixture(scope="module")
def converted(tmp_path_factory, robot_config, authors_stats):
    out = {}
    config, _, _ = _fixture()
    for variant in ("fast_wam", "joint"):
        path = tmp_path_factory.mktemp("converted") / variant
        code = main(
            ["authors", str(FIXTURE / f"{variant}.pt"), "--out", str(path), "--robot-config", str(robot_config),
             "--stats", str(authors_stats), "--preset", "tiny", "--action-horizon", str(config["action_horizon"]),
             "--video-frames", str(config["pixel_frames"]), "--variant", variant]
        )  # fmt: skip
        assert code == 0
        out[variant] = path
    return out


@pytest.mark.parametrize("variant", ["fast_wam", "joint"])
def test_converted_checkpoint_reproduces_the_authors_velocities(converted, variant):
    config, inputs, expected = _fixture()
    ckpt = load_checkpoint(converted[variant])  # our save + strict load in between
    assert ckpt.config.variant == variant
    video_v, action_v = _one_forward(ckpt.model, inputs, config)
    video_err = (video_v - expected[f"{variant}.video_velocity"]).abs().max().item()
    action_err = (action_v - expected[f"{variant}.action_velocity"]).abs().max().item()
    assert video_err <= TOL, video_err
    assert action_err <= TOL, action_err


def test_converted_fast_wam_chunk_equals_the_authors_infer_action(converted):
    config, inputs, expected = _fixture()
    model = load_checkpoint(converted["fast_wam"]).model
    assert model.config.sample_shift == config["sigma_shift"]
    ctx = model.with_state(model.encode_instruction(inputs["text"][:1]), inputs["state"][:1])
    first = inputs["first_frame_latents"]
    steps = config["num_inference_steps"]
    # The cached static loop (what the policy runs) and the eager reference, from the authors' noise.
    loop = model.action_loop(first, ctx, steps, 1.0, 1)
    loop.prefill(first, ctx)
    chunk = loop.sample(inputs["chunk_noise"])[0]
    eager = reference.sample_actions(
        model, reference.build_action_cache(model, first, ctx), 1, steps=steps, noise=inputs["chunk_noise"]
    )
    for ours in (chunk, eager[0]):
        err = (ours - expected["fast_wam.chunk"]).abs().max().item()
        assert err <= TOL, err


def test_the_sigma_grid_is_the_authors_10_step_schedule():
    config, _, expected = _fixture()
    sig = flow.sigma_grid(config["num_inference_steps"], config["sigma_shift"])
    assert torch.allclose(sig[:-1] * flow.TIMESTEP_SCALE, expected["fast_wam.schedule_timesteps"], atol=1e-3)
    assert torch.allclose(sig[1:] - sig[:-1], expected["fast_wam.schedule_deltas"], atol=1e-6)


def test_converted_checkpoint_carries_the_robot_cameras_and_the_authors_stats(converted, authors_stats):
    ckpt = load_checkpoint(converted["fast_wam"])
    assert ckpt.robot == _robot()
    assert (ckpt.camera_layout.height, ckpt.camera_layout.width) == (64, 96)
    assert ckpt.normalization_modes == {"action": "quantile", "state": "quantile"}
    stats = json.loads(authors_stats.read_text())
    assert np.allclose(ckpt.stats.features["action"].q99, stats["action"]["action"]["q99"])
    assert np.allclose(ckpt.stats.features["state"].mean, stats["state"]["observation.state"]["mean"])
    meta = json.loads((converted["fast_wam"] / CONFIG_FILE).read_text())
    assert meta["extra"]["converted_from"]["authors_checkpoint"].endswith("fast_wam.pt")


def test_converted_checkpoint_runs_through_the_policy(converted):
    policy = FastWAMPolicy.from_pretrained(converted["fast_wam"])
    images = {"front": np.full((64, 48, 3), 90, np.uint8), "wrist": np.full((64, 48, 3), 160, np.uint8)}
    out = policy.predict(images, np.zeros(3), "fold the towel", generator=torch.Generator().manual_seed(0))
    assert out.actions.shape == (8, 4) and np.isfinite(out.actions).all()


def test_converting_twice_gives_identical_weights(converted, tmp_path, robot_config, authors_stats):
    config, _, _ = _fixture()
    again = convert_authors_checkpoint(
        FIXTURE / "fast_wam.pt", tmp_path / "again", robot_config=robot_config, stats=authors_stats,
        preset="tiny", action_horizon=config["action_horizon"], video_frames=config["pixel_frames"],
    )  # fmt: skip
    a = load_file(str(again / "model.safetensors"))
    b = load_file(str(converted["fast_wam"] / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


class _RunsCode:
    """A pickle whose loading would call os.system (what weights_only=True must refuse)."""

    def __reduce__(self):
        return (os.system, ("touch SHOULD_NOT_EXIST",))


def test_a_pickle_with_code_is_refused_and_not_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    bad = tmp_path / "evil.pt"
    with bad.open("wb") as f:
        pickle.dump({"mot": _RunsCode()}, f)
    with pytest.raises(AuthorsCheckpointError, match="weights_only"):
        load_authors_model(bad, _base("fast_wam"))
    assert not (tmp_path / "SHOULD_NOT_EXIST").exists()


def test_foreign_or_damaged_payloads_are_refused_naming_the_problem(tmp_path):
    payload = torch.load(FIXTURE / "fast_wam.pt", weights_only=True)
    cases = {
        "no_mot.pt": ({"model": payload["mot"]}, "expected a dict with 'mot'"),
        "extra_key.pt": ({**payload, "mot": {**payload["mot"], "mixtures.video.blocks.0.bogus.weight": torch.zeros(1)}},
                         "mixtures.video.blocks.0.bogus.weight"),
        "missing_key.pt": ({**payload, "mot": {k: v for k, v in payload["mot"].items() if "action.head" not in k}},
                           "expert.proj_out"),
        "unknown_entry.pt": ({**payload, "ema": {}}, "ema"),
    }  # fmt: skip
    for name, (content, pattern) in cases.items():
        torch.save(content, tmp_path / name)
        with pytest.raises(AuthorsCheckpointError, match=pattern.replace(".", r"\.")):
            load_authors_model(tmp_path / name, _base("fast_wam"))
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes((FIXTURE / "fast_wam.pt").read_bytes()[:5000])
    with pytest.raises(AuthorsCheckpointError, match="truncated.pt"):
        load_authors_model(truncated, _base("fast_wam"))


def test_an_optimizer_entry_is_dropped(tmp_path):
    payload = torch.load(FIXTURE / "fast_wam.pt", weights_only=True)
    torch.save({**payload, "optimizer": {"state": {}, "param_groups": []}}, tmp_path / "with_opt.pt")
    model = load_authors_model(tmp_path / "with_opt.pt", _base("fast_wam"))
    ref = load_authors_model(FIXTURE / "fast_wam.pt", _base("fast_wam"))
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), ref.state_dict().values()))


def test_a_preset_whose_heads_do_not_fit_the_tensors_is_refused():
    wrong = preset("tiny", action_horizon=8, num_video_frames=9).replace(
        video={
            **preset("tiny").video.to_diffusers_kwargs(),
            "num_attention_heads": 3,
            "attention_head_dim": 12,
        }
    )
    with pytest.raises(AuthorsCheckpointError, match="24 wide"):
        load_authors_model(FIXTURE / "fast_wam.pt", wrong)


def test_cli_reports_errors_without_a_traceback(tmp_path, robot_config, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["authors", str(tmp_path / "missing.pt"), "--out", str(tmp_path / "o"), "--robot-config",
              str(robot_config), "--preset", "tiny"])  # fmt: skip
    assert exit_info.value.code == 2
    assert "missing.pt" in capsys.readouterr().err


def test_our_checkpoint_exports_to_the_authors_payload_exactly(converted, tmp_path):
    """authors -> ours -> authors gives back every tensor of their payload under its own name."""
    original = torch.load(FIXTURE / "fast_wam.pt", weights_only=True)
    out = tmp_path / "back.pt"
    assert main(["to-authors", str(converted["fast_wam"]), "--out", str(out)]) == 0
    back = torch.load(out, weights_only=True)
    assert back.keys() == {"mot", "proprio_encoder", "step", "torch_dtype"}
    assert back["mot"].keys() == original["mot"].keys()
    assert all(torch.equal(back["mot"][k], original["mot"][k]) for k in original["mot"])
    assert all(torch.equal(back["proprio_encoder"][k], v) for k, v in original["proprio_encoder"].items())
