"""The trainer's view of the model package: build, save, sample. One place to adapt if it changes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from fastwam import checkpoint as ckpt
from fastwam.camera import CameraLayout
from fastwam.model import FastWAM, WanComponents, build_random_components
from fastwam.model import latent_frame_mask as _latent_frame_mask
from fastwam.model_config import FastWAMConfig, preset
from fastwam.normalize import NormalizationStats
from fastwam.robot import RobotSpec
from fastwam.robot_config_match import check_fits
from fastwam_training.config import ExperimentConfig


def model_config(config: ExperimentConfig, robot: RobotSpec) -> FastWAMConfig:
    """Preset + variant + the robot's action/state sizes + explicit overrides."""
    overrides: dict[str, Any] = {
        "variant": config.model.variant,
        "action_dim": robot.action_dim,
        "state_dim": robot.state_dim,
        **config.model.overrides,
    }
    return preset(config.model.preset, **overrides)


def build(config: ExperimentConfig, robot: RobotSpec, layout: CameraLayout) -> tuple[FastWAM, WanComponents]:
    """The trainable model and the frozen encoders.

    Small presets build random encoders and a random model (seeded); wan22-5b loads the Wan2.2
    components and video DiT from model.pretrained. model.init_checkpoint starts from a Fast-WAM
    checkpoint instead (strictly loaded; its robot, cameras and variant must match this run's).
    """
    mc = config.model
    if mc.init_checkpoint:
        loaded = ckpt.load_checkpoint(config.resolve_path(mc.init_checkpoint))
        check_fits(
            loaded.robot,
            loaded.camera_layout,
            robot,
            layout,
            subject=f"init checkpoint {mc.init_checkpoint}",
            target="this run's config",
            setting=None,  # the fix is in the training config, not a robot config
        )
        if loaded.config.variant != mc.variant:
            raise ValueError(
                f"{mc.init_checkpoint}: variant {loaded.config.variant!r}, config asks {mc.variant!r}"
            )
        assert loaded.components is not None
        return loaded.model.train(), loaded.components
    cfg = model_config(config, robot)
    if cfg.vae is not None:
        components = build_random_components(cfg, seed=config.seed)
        torch.manual_seed(config.seed)
        return FastWAM(cfg), components
    if not mc.pretrained:
        raise ValueError(
            f"preset {mc.preset!r} needs model.pretrained (a Wan2.2-TI2V-5B-Diffusers directory)"
        )
    wan_dir = config.resolve_path(mc.pretrained)
    components = WanComponents.from_pretrained(wan_dir, cfg.text_max_length, dtype=torch.bfloat16)
    return FastWAM.from_wan_pretrained(cfg, wan_dir), components


def enable_gradient_checkpointing(model: FastWAM) -> None:
    model.gradient_checkpointing = True


def latent_frame_mask(frame_mask: torch.Tensor, temporal_factor: int) -> torch.Tensor:
    return _latent_frame_mask(frame_mask, temporal_factor)


@torch.no_grad()
def sample_actions(model: FastWAM, inputs: dict[str, Any], generator: torch.Generator | None) -> torch.Tensor:
    """Inference-path actions [B, H, A] (normalized) from the first latent frame, as the policy runs."""
    ctx = model.with_state(
        model.encode_instruction(inputs["text_embeds"], inputs["text_mask"]), inputs["state"]
    )
    actions, _ = model.infer(inputs["latents"][:, :, :1], ctx, generator=generator)
    return actions


def save(
    path: Path,
    weights: dict[str, torch.Tensor],
    cfg: FastWAMConfig,
    config: ExperimentConfig,
    robot: RobotSpec,
    layout: CameraLayout,
    stats: NormalizationStats,
    components: WanComponents,
    control_fps: float,
    dataset_fps: float,
    extra: dict[str, Any],
) -> Path:
    """Write full model `weights` in the fastwam.checkpoint format.

    The weights go through a meta-device skeleton, so gathered FSDP/ZeRO-3 weights and EMA weights
    are saved the same way. Small presets embed their random encoders; wan22-5b references
    model.pretrained instead of copying ~13 GB of frozen components into every checkpoint.
    """
    with torch.device("meta"):
        skeleton = FastWAM(cfg.replace(action_init="random"))
    skeleton.load_state_dict(weights, strict=True, assign=True)
    skeleton.config = cfg
    modes = {k: v for k, v in config.data.normalization.items() if k == "action" or cfg.state_dim > 0}
    reference = (
        {"wan_dir": str(config.resolve_path(config.model.pretrained).resolve())} if cfg.vae is None else {}
    )
    return ckpt.save_checkpoint(
        path,
        skeleton,
        camera_layout=layout,
        robot=robot,
        stats=stats,
        normalization_modes=modes,
        control_fps=control_fps,
        dataset_fps=dataset_fps,
        components=None if reference else components,
        extra=extra,
        **reference,
    )
