"""Fast-WAM checkpoints: one self-describing directory.

Layout::

    <ckpt>/checkpoint.json     format/version, model config (incl. variant), camera layout, robot
                               spec, normalization stats + per-feature modes, control/dataset fps,
                               action horizon, where the frozen components are, free-form "extra"
    <ckpt>/model.safetensors   trainable weights: video DiT ("video.*"), action expert
                               ("expert.*"), state token projection ("state_proj.*")
    <ckpt>/components/         (embedded components only) vae/, text_encoder/, tokenizer/ in the
                               Wan2.2-Diffusers layout

Frozen components (VAE, UMT5 text encoder, tokenizer) are either

* embedded: copied into ``components/`` (tiny / small presets, a few MB), so the checkpoint is
  complete on its own; or
* referenced: ``"components": {"wan_dir": "/path/to/Wan2.2-TI2V-5B-Diffusers"}`` (full size: the
  frozen parts are ~13 GB and identical for every checkpoint, so they are not copied each save). A
  relative path is resolved against the checkpoint directory; ``load_checkpoint(...,
  components_path=...)`` overrides it on a machine where the Wan directory lives elsewhere.

Loading is strict: unknown or missing JSON fields, unknown or missing tensors, shape mismatches and
missing files are errors that name them.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from fastwam.camera import CameraLayout
from fastwam.model.fastwam import FastWAM
from fastwam.model.wan import WanComponents, build_random_components
from fastwam.model_config import FastWAMConfig
from fastwam.model_config import preset as build_preset
from fastwam.normalize import NormalizationStats, Normalizer
from fastwam.robot import RobotSpec

FORMAT = "fastwam-checkpoint"
# 2: the authors' action expert (1-D action RoPE at positions 0..H-1, bare Linear action head, joint
# mask without video -> action attention). A version-1 checkpoint was trained with the earlier
# expert (3-D Wan RoPE positions after the video frames, a modulated output head with
# expert.norm_out / expert.scale_shift_table): its weights would load into neither architecture
# without silently changing what it computes, so it is refused (see _refuse_old_version).
FORMAT_VERSION = 2
CONFIG_FILE = "checkpoint.json"
WEIGHTS_FILE = "model.safetensors"
COMPONENTS_DIR = "components"
_JSON_FIELDS = {
    "format",
    "format_version",
    "model",
    "camera_layout",
    "robot",
    "normalization",
    "control_fps",
    "dataset_fps",
    "action_horizon",
    "components",
    "extra",
}


@dataclass
class LoadedCheckpoint:
    model: FastWAM
    components: WanComponents | None
    config: FastWAMConfig
    camera_layout: CameraLayout
    robot: RobotSpec
    stats: NormalizationStats | None
    normalization_modes: dict[str, str]
    normalizer: Normalizer
    control_fps: float
    dataset_fps: float
    action_horizon: int
    path: Path
    extra: dict[str, Any] = field(default_factory=dict)


def default_modes(config: FastWAMConfig, stats: NormalizationStats | None) -> dict[str, str]:
    """identity without statistics, mean_std with them, for "action" (and "state" if used)."""
    mode = "identity" if stats is None else "mean_std"
    modes = {"action": mode}
    if config.state_dim > 0:
        modes["state"] = mode
    return modes


def _check_consistency(
    config: FastWAMConfig, camera_layout: CameraLayout, robot: RobotSpec, modes: Mapping[str, str]
) -> None:
    if config.action_dim != robot.action_dim:
        raise ValueError(
            f"model action_dim {config.action_dim} != robot {robot.name!r} action_dim {robot.action_dim}"
        )
    if config.state_dim not in (0, robot.state_dim):
        raise ValueError(
            f"model state_dim {config.state_dim} != robot {robot.name!r} state_dim {robot.state_dim}"
        )
    cell = config.vae_spatial_factor * config.video.patch_size[1]
    if camera_layout.height % cell or camera_layout.width % cell:
        raise ValueError(f"camera composite {camera_layout.height}x{camera_layout.width} must tile by {cell}")
    needed = {"action"} | ({"state"} if config.state_dim > 0 else set())
    missing = sorted(needed - set(modes))
    if missing:
        raise ValueError(f"normalization modes missing for features {missing}")


def _atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def save_checkpoint(
    path: str | os.PathLike[str],
    model: FastWAM,
    *,
    camera_layout: CameraLayout,
    robot: RobotSpec,
    stats: NormalizationStats | None,
    normalization_modes: Mapping[str, str] | None = None,
    control_fps: float,
    dataset_fps: float | None = None,
    components: WanComponents | None = None,
    wan_dir: str | os.PathLike[str] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> Path:
    """Write a checkpoint directory. Give exactly one of ``components`` (embedded copy) or
    ``wan_dir`` (reference to a Wan2.2-Diffusers directory). Returns the directory."""
    if (components is None) == (wan_dir is None):
        raise ValueError("save_checkpoint needs exactly one of components= (embed) or wan_dir= (reference)")
    config = model.config
    modes = dict(normalization_modes) if normalization_modes is not None else default_modes(config, stats)
    _check_consistency(config, camera_layout, robot, modes)
    Normalizer(stats, modes)  # fails now, not at load time, if stats and modes disagree
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    tmp = path / (WEIGHTS_FILE + ".tmp")
    save_file(state, str(tmp), metadata={"format": FORMAT})
    os.replace(tmp, path / WEIGHTS_FILE)
    if components is not None:
        components.save_pretrained(path / COMPONENTS_DIR)
        comp = {"embedded": COMPONENTS_DIR}
    else:
        comp = {"wan_dir": str(wan_dir)}
    meta = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "model": config.to_dict(),
        "camera_layout": camera_layout.to_dict(),
        "robot": robot.to_dict(),
        "normalization": {"stats": stats.to_dict() if stats is not None else None, "modes": modes},
        "control_fps": float(control_fps),
        "dataset_fps": float(dataset_fps if dataset_fps is not None else control_fps),
        "action_horizon": config.action_horizon,
        "components": comp,
        "extra": dict(extra or {}),
    }
    _atomic_write_text(path / CONFIG_FILE, json.dumps(meta, indent=2))  # written last: marks completion
    return path


def read_checkpoint_json(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The checkpoint's JSON, validated (without loading weights)."""
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"checkpoint directory not found: {path}")
    cfg_file = path / CONFIG_FILE
    if not cfg_file.is_file():
        raise FileNotFoundError(f"checkpoint {path}: missing {CONFIG_FILE}")
    try:
        meta = json.loads(cfg_file.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"checkpoint {cfg_file}: invalid JSON: {error}") from error
    if meta.get("format") != FORMAT:
        raise ValueError(f"checkpoint {cfg_file}: format is {meta.get('format')!r}, expected {FORMAT!r}")
    if meta.get("format_version") == 1:
        raise ValueError(
            f"checkpoint {path} has format_version 1: it was trained with the action expert used before "
            "this project matched the authors' Fast-WAM (3-D action RoPE positions, a modulated action "
            "head), and this version computes the authors' model, so loading it would change what it "
            "predicts. Train it again with this version (the simulation experiment: "
            "scripts/sim_experiment.sh --force; scripts/run.sh rebuilds its default checkpoint), or run "
            "it with the release that wrote it."
        )
    if meta.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"checkpoint {cfg_file}: unsupported format_version {meta.get('format_version')!r}")
    missing, unknown = sorted(_JSON_FIELDS - set(meta)), sorted(set(meta) - _JSON_FIELDS)
    if missing or unknown:
        raise ValueError(f"checkpoint {cfg_file}: missing fields {missing}, unknown fields {unknown}")
    return meta


# As diffusers' WanTransformer3DModel._keep_in_fp32_modules: AdaLN tables, time MLPs and norms stay
# fp32 in a bf16/fp16 model (the forward casts around them exactly as diffusers does).
FP32_MODULES = ("time_embedder", "scale_shift_table", "norm1", "norm2", "norm3")


def _param_dtype(name: str, dtype: torch.dtype) -> torch.dtype:
    parts = name.split(".")
    return torch.float32 if any(m in parts for m in FP32_MODULES) else dtype


def _describe(keys: list[str], limit: int = 20) -> str:
    shown = ", ".join(keys[:limit])
    return shown + (f", ... ({len(keys)} in all)" if len(keys) > limit else "")


def load_model_weights(model: FastWAM, weights: str | os.PathLike[str], device, dtype) -> FastWAM:
    """Strictly load ``model.safetensors`` into a (meta or real) model skeleton."""
    weights = Path(weights)
    if not weights.is_file():
        raise FileNotFoundError(f"missing weights file {weights}")
    try:
        state = load_file(str(weights), device=str(device))
    except SafetensorError as error:  # truncated or corrupt: safetensors' message names no file
        raise ValueError(f"{weights}: not a readable safetensors file ({error})") from error
    return load_state_strict(model, state, weights, device, dtype)


def load_state_strict(model: FastWAM, state: Mapping[str, torch.Tensor], source, device, dtype) -> FastWAM:
    """Load a full state dict into a (meta or real) skeleton: every tensor of the model and nothing
    else, shapes equal (errors name ``source`` and the keys); AdaLN tables, time MLPs and norms kept
    in fp32 (``FP32_MODULES``), the rest in ``dtype``."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unknown = sorted(set(state) - set(expected))
    if missing or unknown:
        raise ValueError(
            f"{source}: tensors do not match the model config. "
            f"missing keys: [{_describe(missing)}]; unknown keys: [{_describe(unknown)}]"
        )
    bad = [
        f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}"
        for k, v in expected.items()
        if state[k].shape != v.shape
    ]
    if bad:
        raise ValueError(f"{source}: shape mismatch: {_describe(bad)}")
    state = {k: v.to(_param_dtype(k, dtype)) if v.is_floating_point() else v for k, v in state.items()}
    model.load_state_dict(state, strict=True, assign=True)
    # RoPE tables are non-persistent buffers: rebuild them for a meta skeleton.
    rope = model.video.rope
    if rope.freqs_cos.is_meta:
        from diffusers.models.transformers.transformer_wan import WanRotaryPosEmbed

        model.video.rope = WanRotaryPosEmbed(rope.attention_head_dim, rope.patch_size, rope.max_seq_len)
    model.to(device)
    leftover = [n for n, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
    if leftover:
        raise RuntimeError(f"tensors left uninitialised after loading {source}: {_describe(leftover)}")
    return model


def load_checkpoint(
    path: str | os.PathLike[str],
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    *,
    components_path: str | os.PathLike[str] | None = None,
    load_components: bool = True,
) -> LoadedCheckpoint:
    """Load a checkpoint strictly. ``components_path`` overrides where the frozen components are."""
    path = Path(path)
    meta = read_checkpoint_json(path)
    config = FastWAMConfig.from_dict(meta["model"])
    camera_layout = CameraLayout.from_dict(meta["camera_layout"])
    robot = RobotSpec.from_dict(meta["robot"])
    norm = meta["normalization"]
    if set(norm) != {"stats", "modes"}:
        raise ValueError(
            f"checkpoint {path}: normalization needs exactly 'stats' and 'modes', got {sorted(norm)}"
        )
    stats = NormalizationStats.from_dict(norm["stats"]) if norm["stats"] is not None else None
    modes = dict(norm["modes"])
    _check_consistency(config, camera_layout, robot, modes)
    normalizer = Normalizer(stats, modes)
    if meta["action_horizon"] != config.action_horizon:
        raise ValueError(
            f"checkpoint {path}: action_horizon {meta['action_horizon']} != model {config.action_horizon}"
        )

    with torch.device("meta"):
        skeleton = FastWAM(config.replace(action_init="random"))
    model = load_model_weights(skeleton, path / WEIGHTS_FILE, device, dtype).eval()
    model.config = config

    components = None
    if load_components:
        comp = meta["components"]
        if components_path is not None:
            wan = Path(components_path)
        elif set(comp) == {"embedded"}:
            wan = path / comp["embedded"]
        elif set(comp) == {"wan_dir"}:
            wan = Path(comp["wan_dir"])
            wan = wan if wan.is_absolute() else path / wan
        else:
            raise ValueError(
                f"checkpoint {path}: components must be {{'embedded': dir}} or {{'wan_dir': dir}}, got {comp}"
            )
        components = WanComponents.from_pretrained(wan, config.text_max_length, device=device, dtype=dtype)
        if components.text_dim != config.video.text_dim:
            raise ValueError(
                f"{wan}: text encoder d_model {components.text_dim} != model text_dim {config.video.text_dim}"
            )
        if components.z_dim != config.video.in_channels:
            raise ValueError(
                f"{wan}: VAE z_dim {components.z_dim} != model in_channels {config.video.in_channels}"
            )
    return LoadedCheckpoint(
        model=model,
        components=components,
        config=config,
        camera_layout=camera_layout,
        robot=robot,
        stats=stats,
        normalization_modes=modes,
        normalizer=normalizer,
        control_fps=float(meta["control_fps"]),
        dataset_fps=float(meta["dataset_fps"]),
        action_horizon=int(meta["action_horizon"]),
        path=path,
        extra=dict(meta["extra"]),
    )


def create_random_checkpoint(
    path: str | os.PathLike[str],
    preset: str,
    camera_layout: CameraLayout,
    robot: RobotSpec,
    stats: NormalizationStats | None = None,
    seed: int = 0,
    *,
    control_fps: float = 15.0,
    dataset_fps: float | None = None,
    normalization_modes: Mapping[str, str] | None = None,
    wan_dir: str | os.PathLike[str] | None = None,
    **config_overrides: Any,
) -> Path:
    """A RANDOM-initialised checkpoint (the "random-init" baseline and other packages' test fixture).

    ``action_dim`` / ``state_dim`` follow the robot (pass ``state_dim=0`` for no state token);
    other keyword arguments override config fields (e.g. ``variant="joint"``). stats=None gives
    identity normalization. Tiny/small presets embed random components; wan22-5b needs ``wan_dir``
    (components referenced, video DiT random: ~6 B parameters, only on a big machine).
    """
    overrides = {"action_dim": robot.action_dim, "state_dim": robot.state_dim, "action_init": "random"}
    overrides.update(config_overrides)
    config = build_preset(preset, **overrides)
    gen_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        model = FastWAM(config)
    finally:
        torch.random.set_rng_state(gen_state)
    components = None
    if wan_dir is None:
        components = build_random_components(config, seed=seed)
    return save_checkpoint(
        path,
        model,
        camera_layout=camera_layout,
        robot=robot,
        stats=stats,
        normalization_modes=normalization_modes,
        control_fps=control_fps,
        dataset_fps=dataset_fps,
        components=components,
        wan_dir=wan_dir,
    )
