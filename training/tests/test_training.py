"""Trainer on CPU with the tiny preset: overfitting per variant, exact resume, checkpoints, CLI."""

from __future__ import annotations

import copy
import subprocess
import sys

import pytest
import torch
import yaml

from fastwam.checkpoint import load_checkpoint
from fastwam.normalize import NormalizationStats
from fastwam_training.config import apply_override, from_dict, load_config
from fastwam_training.synthetic import experiment_dict, make_v21_dataset
from fastwam_training.trainer import Trainer


@pytest.fixture(autouse=True)
def single_thread():
    # The tiny model is fastest on one thread; two threads on a shared 2-core box mostly contend.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return make_v21_dataset(tmp_path_factory.mktemp("data") / "ds", (14, 10, 9))


def _config(dataset, out, **sections):
    return from_dict(experiment_dict(dataset, out, **sections))


@torch.no_grad()
def _mean_action_loss(trainer: Trainer, batches: int = 4) -> float:
    """Action loss over fixed batches with fixed noise: a deterministic before/after measure."""
    model = trainer.accelerator.unwrap_model(trainer.loss_module).model
    order = list(range(len(trainer.train_data)))
    total = 0.0
    for b in range(batches):
        items = [trainer.train_data[i] for i in order[b * 8 : (b + 1) * 8]]
        batch = torch.utils.data.default_collate(items)
        inputs = trainer.model_inputs(batch, torch.Generator().manual_seed(1234 + b))
        total += float(model.training_loss(**inputs)["action_loss"])
    return total / batches


@pytest.mark.slow
@pytest.mark.parametrize("variant", ["fast_wam", "joint", "idm", "no_cotrain"])
def test_overfit_cuts_action_loss(dataset, tmp_path, variant):
    config = _config(
        dataset,
        tmp_path / "run",
        model={"preset": "tiny", "variant": variant},
        train={"max_steps": 200, "batch_size": 8, "lr": 5e-3, "warmup_steps": 10},
        cache={"text": True, "latents": True},
    )
    trainer = Trainer(config)
    before = _mean_action_loss(trainer)
    history = trainer.train()
    after = _mean_action_loss(trainer)
    assert len(history) == 200 and all(torch.isfinite(torch.tensor(r["loss"])) for r in history)
    assert after <= 0.2 * before, f"{variant}: action loss {before:.3f} -> {after:.3f}"
    video = [r["video_loss"] for r in history]
    if variant == "no_cotrain":
        assert max(video) == 0.0
    else:
        assert min(video) > 0.0


def test_resume_reproduces_uninterrupted_run(dataset, tmp_path):
    sections = dict(
        train={
            "max_steps": 8,
            "batch_size": 4,
            "grad_accum": 2,
            "lr": 2e-3,
            "warmup_steps": 2,
            "ema_decay": 0.9,
        },
        checkpoint={"every": 3, "keep_last": 2},
        cache={"text": True, "latents": False},  # decode video and run the VAE in the loop
    )
    full = Trainer(_config(dataset, tmp_path / "full", **sections)).train()

    interrupted = copy.deepcopy(sections)
    interrupted["train"]["run_steps"] = 5  # stop (and checkpoint) after 5 of 8 steps
    first = Trainer(_config(dataset, tmp_path / "resumed", **interrupted)).train()
    resumed_sections = copy.deepcopy(sections)
    resumed_sections["checkpoint"]["resume"] = "latest"
    second = Trainer(_config(dataset, tmp_path / "resumed", **resumed_sections)).train()

    assert [r["step"] for r in first] == [1, 2, 3, 4, 5] and [r["step"] for r in second] == [6, 7, 8]
    for key in ("loss", "action_loss", "video_loss", "lr"):
        assert [r[key] for r in first + second] == [r[key] for r in full], key
    # keep_last=2: steps 3, 5 (resumed run's first leg) then 6, 8 -> the last two remain
    kept = sorted(p.name for p in (tmp_path / "resumed/checkpoints").iterdir())
    assert kept == ["step_0000006", "step_0000008"]
    a = load_checkpoint(tmp_path / "full/checkpoints/step_0000008/model").model.state_dict()
    b = load_checkpoint(tmp_path / "resumed/checkpoints/step_0000008/model").model.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_gradient_checkpointing_keeps_losses(dataset, tmp_path):
    sections = dict(train={"max_steps": 3, "batch_size": 4}, cache={"text": True, "latents": True})
    plain = Trainer(_config(dataset, tmp_path / "a", **sections)).train()
    sections["train"]["gradient_checkpointing"] = True
    trainer = Trainer(_config(dataset, tmp_path / "b", **sections))
    assert trainer.model.gradient_checkpointing
    checkpointed = trainer.train()
    for a, b in zip(plain, checkpointed, strict=True):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-5)


def test_checkpoint_is_self_describing_and_validation_runs(dataset, tmp_path):
    config = _config(
        dataset,
        tmp_path / "run",
        train={"max_steps": 4, "batch_size": 4, "ema_decay": 0.5},
        data={"val_episodes": [1], "normalization": {"action": "quantile", "state": "mean_std"}},
        checkpoint={"every": 4},
        validation={"every": 2, "batches": 2, "batch_size": 4},
        logging={"every": 2, "tensorboard": True, "progress": False},
    )
    trainer = Trainer(config)
    assert trainer.train_episodes == [0, 2] and trainer.val_episodes == [1]
    metrics = trainer.validate()
    assert set(metrics) == {
        "val/action_loss",
        "val/video_loss",
        "val/action_mae_normalized",
        "val/action_mae_physical",
    }
    assert all(v > 0 and v == v for v in metrics.values())
    trainer.train()
    ckpt_dir = tmp_path / "run/checkpoints/step_0000004"
    loaded = load_checkpoint(ckpt_dir / "model")
    stats = NormalizationStats.load(dataset / "meta/fastwam_stats.json")
    assert loaded.stats.to_dict() == stats.to_dict()
    assert loaded.normalization_modes == {"action": "quantile", "state": "mean_std"}
    assert loaded.robot.action_joint_names == ("joint1", "joint2", "joint3", "gripper")
    assert loaded.camera_layout == trainer.layout and loaded.config.variant == "fast_wam"
    assert loaded.extra["step"] == 4
    ema = load_checkpoint(ckpt_dir / "model_ema").model.state_dict()
    live = loaded.model.state_dict()
    assert any(not torch.equal(ema[k], live[k]) for k in live)
    assert list((tmp_path / "run/logs").rglob("events.out.tfevents.*"))
    assert (tmp_path / "run/config.yaml").is_file() and (tmp_path / "run/stats.json").is_file()


def test_config_overrides_and_strictness(dataset, tmp_path):
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(experiment_dict(dataset, tmp_path / "run")))
    config = load_config(
        path,
        [
            "train.lr=5e-5",
            "model.variant=idm",
            "data.val_episodes=[0, 2]",
            "model.overrides={lambda_video: 0.5}",
        ],
    )
    assert config.train.lr == 5e-5 and config.model.variant == "idm" and config.data.val_episodes == [0, 2]
    assert config.model.overrides == {"lambda_video": 0.5}
    with pytest.raises(ValueError, match=r"unknown config keys \['train.learning_rate'\]"):
        load_config(path, ["train.learning_rate=1"])
    with pytest.raises(ValueError, match="model.variant must be one of"):
        load_config(path, ["model.variant=fast"])
    data = {}
    apply_override(data, "a.b.c=[1, 2]")
    assert data == {"a": {"b": {"c": [1, 2]}}}


def test_cli_prepares_then_trains_in_process(dataset, tmp_path, capsys):
    """The CLI's main in-process, one step (the fast lane's test of it; the subprocess run and
    resume below is slow)."""
    from fastwam_training import train

    path = tmp_path / "exp.yaml"
    path.write_text(
        yaml.safe_dump(experiment_dict(dataset, tmp_path / "run", train={"max_steps": 1, "batch_size": 2}))
    )
    assert train.main(["--config", str(path), "--prepare"]) == 0
    assert "prepared: " in capsys.readouterr().out and not (tmp_path / "run/checkpoints").exists()
    assert train.main(["--config", str(path), "data.num_workers=0"]) == 0
    assert "done: step 1 " in capsys.readouterr().out


@pytest.mark.slow
def test_cli_trains_and_resumes(dataset, tmp_path):
    path = tmp_path / "exp.yaml"
    path.write_text(
        yaml.safe_dump(experiment_dict(dataset, tmp_path / "run", train={"max_steps": 3, "batch_size": 2}))
    )
    cmd = [
        sys.executable,
        "-m",
        "fastwam_training.train",
        "--config",
        str(path),
        "checkpoint.every=2",
        "data.num_workers=1",
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "done: step 3" in out.stdout
    assert sorted(p.name for p in (tmp_path / "run/checkpoints").iterdir()) == [
        "step_0000002",
        "step_0000003",
    ]
    out = subprocess.run(
        [*cmd, "train.max_steps=4", "checkpoint.resume=latest"], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert "done: step 4" in out.stdout


@pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs a CUDA device (the EMA must follow the model there)"
)
def test_ema_trains_on_the_accelerator(dataset, tmp_path):
    config = _config(
        dataset,
        tmp_path / "run",
        train={"max_steps": 2, "batch_size": 4, "ema_decay": 0.5, "cpu": False, "mixed_precision": "no"},
        checkpoint={"every": 2},
    )
    trainer = Trainer(config)
    trainer.train()
    assert all(s.device == p.device for s, p in zip(trainer.ema.shadow, trainer.ema.params, strict=True))
    assert (tmp_path / "run/checkpoints/step_0000002/model_ema/model.safetensors").is_file()
