"""Checkpoints of the authors' Fast-WAM code (github yuantianyuan01/FastWAM) as our checkpoints, and back.

    python -m fastwam.convert authors CKPT.pt --robot-config CONFIG.yaml --stats dataset_stats.json \\
        --preset wan22-5b --wan-dir /models/Wan2.2-TI2V-5B-Diffusers --out DIR
    python -m fastwam.convert to-authors DIR --out CKPT.pt     # our trained model for their code

Their released checkpoints (``libero_uncond_2cam224.pt``, ``robotwin_uncond_3cam_384.pt``, ...) are
the payload of their ``FastWAM.save_checkpoint`` (``src/fastwam/models/wan22/fastwam.py``): a torch
pickle of ``{"mot": MoT.state_dict(), "proprio_encoder": Linear.state_dict(), "step",
"torch_dtype"}`` (and ``"optimizer"`` when saved during training: dropped here). It is read with
``torch.load(weights_only=True)`` only: tensors, numbers and strings, never a full unpickle, so a
payload carrying code is refused, not run.

Weights: ``mixtures.video.*`` use the original Wan names and become diffusers' names by the table of
diffusers' ``scripts/convert_wan_to_diffusers.py`` (``TRANSFORMER_KEYS_RENAME_DICT``: Wan's
``norm3`` is the cross-attention norm, diffusers' ``norm2``); ``mixtures.action.*`` use the same
block names, plus ``action_encoder`` (our ``expert.action_in``) and the bare ``head`` Linear (our
``expert.proj_out``); ``proprio_encoder`` is our ``state_proj``. Every key must map and every one of
our tensors must be filled: an unknown or missing key is an error naming it.

Model sizes come from the tensors (hidden sizes, FFN sizes, depth, channels, text / time dims,
action and state dims) and are checked against ``--preset``, which supplies what tensors do not
show (heads x head dim, the chunk: ``--action-horizon``, ``--video-frames``).

Data conventions (camera composite, action / state layout, normalization) come from the robot
config and the authors' ``dataset_stats.json``:

* camera composite, from their evaluation code: RoboTwin (``experiments/robotwin/fastwam_policy/
  deploy_policy.py``, ``_build_robotwin_image_tensor``): head resized to 256x320 on top, left and
  right wrists 128x160 side by side below, 384x320 in [-1, 1] (our ``training/configs/robotwin.yaml``
  layout); LIBERO (``experiments/libero/eval_libero_single.py``, ``_obs_to_model_input``): agent view
  and wrist view each center-cropped and resized to 224x224, concatenated horizontally, 224x448
  (``training/configs/libero.yaml``).
* state / action: RoboTwin the 14-D ``joint_action`` vector in and 14 joint targets out
  (``deploy_policy.py``: ``_infer_action_chunk``, ``take_action(action_type="qpos")``); LIBERO state
  = eef position (3) + axis-angle (3) + gripper qpos (2), action 7 (``eval_libero_single.py``,
  ``_extract_sim_state``).
* normalization: their ``dataset_stats.json`` (``{"action"|"state": {feature key: {"mean", "std",
  "min", "max", "q01", "q99", ...}}}``, one merged key per group) is carried into our checkpoint;
  the mode (``--normalization``, default ``quantile``: q01 / q99 to [-1, 1]) must be the one their
  training config used: their processor code is not part of the published snapshot this was
  written against, so it is an argument, not a guess.
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from fastwam.checkpoint import load_state_strict, save_checkpoint
from fastwam.model.fastwam import FastWAM
from fastwam.model.wan import WanComponents, build_random_components
from fastwam.model_config import VARIANTS, FastWAMConfig, VideoDiTConfig
from fastwam.model_config import preset as build_preset
from fastwam.normalize import MODES, FeatureStats, NormalizationStats

# Wan (original) -> diffusers names inside a block and for the embeddings: diffusers'
# scripts/convert_wan_to_diffusers.py, TRANSFORMER_KEYS_RENAME_DICT.
_BLOCK_NAMES = {
    "modulation": "scale_shift_table",
    "self_attn.q": "attn1.to_q",
    "self_attn.k": "attn1.to_k",
    "self_attn.v": "attn1.to_v",
    "self_attn.o": "attn1.to_out.0",
    "self_attn.norm_q": "attn1.norm_q",
    "self_attn.norm_k": "attn1.norm_k",
    "cross_attn.q": "attn2.to_q",
    "cross_attn.k": "attn2.to_k",
    "cross_attn.v": "attn2.to_v",
    "cross_attn.o": "attn2.to_out.0",
    "cross_attn.norm_q": "attn2.norm_q",
    "cross_attn.norm_k": "attn2.norm_k",
    "norm3": "norm2",  # Wan orders its norms norm1, norm3 (cross-attention), norm2
    "ffn.0": "ffn.net.0.proj",
    "ffn.2": "ffn.net.2",
}
_EMBEDDING_NAMES = {
    "text_embedding.0": "condition_embedder.text_embedder.linear_1",
    "text_embedding.2": "condition_embedder.text_embedder.linear_2",
    "time_embedding.0": "condition_embedder.time_embedder.linear_1",
    "time_embedding.2": "condition_embedder.time_embedder.linear_2",
    "time_projection.1": "condition_embedder.time_proj",
}
_VIDEO_NAMES = {**_EMBEDDING_NAMES, "patch_embedding": "patch_embedding", "head.head": "proj_out",
                "head.modulation": "scale_shift_table"}  # fmt: skip
_ACTION_NAMES = {**_EMBEDDING_NAMES, "action_encoder": "action_in", "head": "proj_out"}
_BLOCK_INVERSE = {ours: theirs for theirs, ours in _BLOCK_NAMES.items()}
_BRANCHES = {"mixtures.video.": ("video.", _VIDEO_NAMES), "mixtures.action.": ("expert.", _ACTION_NAMES)}
_BLOCK_KEY = re.compile(r"^blocks\.(\d+)\.(.+)\.(weight|bias)$|^blocks\.(\d+)\.(modulation)$")
PAYLOAD_KEYS = {"mot", "proprio_encoder", "step", "torch_dtype", "optimizer"}


class AuthorsCheckpointError(ValueError):
    """The file is not a checkpoint of the authors' Fast-WAM code (or not one we can map)."""


def load_authors_payload(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Their payload, read with ``torch.load(weights_only=True)``; the optimizer entry is dropped."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"authors' checkpoint not found: {path}")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:  # code, or a class the safe loader does not allow
        raise AuthorsCheckpointError(
            f"{path}: refused by torch.load(weights_only=True) (a checkpoint holds only tensors, numbers "
            f"and strings; this file asks for more, so it is not loaded): {str(error).splitlines()[0]}"
        ) from error
    except (RuntimeError, EOFError, OSError) as error:  # truncated or not a torch file
        raise AuthorsCheckpointError(f"{path}: not a readable torch checkpoint: {error}") from error
    if not isinstance(payload, Mapping) or "mot" not in payload:
        found = sorted(payload) if isinstance(payload, Mapping) else type(payload).__name__
        raise AuthorsCheckpointError(
            f"{path}: not a Fast-WAM payload of the authors' code (expected a dict with 'mot'); found {found}"
        )
    unknown = sorted(set(payload) - PAYLOAD_KEYS)
    if unknown:
        raise AuthorsCheckpointError(
            f"{path}: unknown payload entries {unknown}; expected {sorted(PAYLOAD_KEYS)}"
        )
    return {k: v for k, v in payload.items() if k != "optimizer"}


def _rename(branch_key: str, names: Mapping[str, str]) -> str | None:
    """One key inside a branch (``mixtures.<branch>.`` stripped) -> our name inside the branch."""
    m = _BLOCK_KEY.match(branch_key)
    if m:
        if m.group(5):  # blocks.N.modulation
            return f"blocks.{m.group(4)}.scale_shift_table"
        inner = _BLOCK_NAMES.get(m.group(2))
        return None if inner is None else f"blocks.{m.group(1)}.{inner}.{m.group(3)}"
    stem, _, leaf = branch_key.rpartition(".")
    if branch_key in names:  # a bare parameter (head.modulation)
        return names[branch_key]
    if stem in names and leaf in ("weight", "bias"):
        return f"{names[stem]}.{leaf}"
    return None


def map_authors_state(payload: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """Their payload -> our ``FastWAM`` state dict (every key mapped, or an error naming the rest)."""
    out: dict[str, torch.Tensor] = {}
    unmapped = []
    for key, tensor in payload["mot"].items():
        prefix = next((p for p in _BRANCHES if key.startswith(p)), None)
        ours = None
        if prefix is not None:
            dest, names = _BRANCHES[prefix]
            inner = _rename(key[len(prefix) :], names)
            ours = None if inner is None else dest + inner
        if ours is None:
            unmapped.append(key)
            continue
        out[ours] = tensor
    for leaf, tensor in dict(payload.get("proprio_encoder") or {}).items():
        out[f"state_proj.{leaf}"] = tensor
    if unmapped:
        raise AuthorsCheckpointError(f"unknown keys in the authors' checkpoint: {_describe(unmapped)}")
    return out


def _unrename(inner: str, names: Mapping[str, str]) -> str | None:
    """Our name inside a branch -> the authors' (the inverse of ``_rename``)."""
    block = re.match(r"^blocks\.(\d+)\.(.+?)(?:\.(weight|bias))?$", inner)
    if block:
        n, stem, leaf = block.groups()
        if stem == "scale_shift_table":
            return f"blocks.{n}.modulation"
        theirs = _BLOCK_INVERSE.get(stem)
        return None if theirs is None or leaf is None else f"blocks.{n}.{theirs}.{leaf}"
    top = {ours: theirs for theirs, ours in names.items()}
    stem, _, leaf = inner.rpartition(".")
    return top.get(inner) or (f"{top[stem]}.{leaf}" if stem in top else None)


def authors_payload(model: FastWAM, step: int = 0) -> dict[str, Any]:
    """Our model as the authors' ``FastWAM.save_checkpoint`` payload (the inverse of
    ``map_authors_state``), for their code: ``torch.save(authors_payload(model), "x.pt")``."""
    mot: dict[str, torch.Tensor] = {}
    proprio: dict[str, torch.Tensor] = {}
    for key, tensor in model.state_dict().items():
        tensor = tensor.detach().cpu().clone()
        if key.startswith("state_proj."):
            proprio[key.removeprefix("state_proj.")] = tensor
            continue
        branch = next(((p, d, n) for p, (d, n) in _BRANCHES.items() if key.startswith(d)), None)
        theirs = None if branch is None else _unrename(key[len(branch[1]) :], branch[2])
        if theirs is None:
            raise AuthorsCheckpointError(f"no name in the authors' layout for {key!r}")
        mot[branch[0] + theirs] = tensor
    payload: dict[str, Any] = {"mot": mot, "step": int(step), "torch_dtype": str(model.dtype)}
    if proprio:
        payload["proprio_encoder"] = proprio
    return payload


def config_from_state(state: Mapping[str, torch.Tensor], base: FastWAMConfig) -> FastWAMConfig:
    """``base`` (a preset) with every size that the tensors show taken from them; heads / head dim
    and the chunk stay the preset's and must fit the tensors."""

    def shape(key: str) -> tuple[int, ...]:
        if key not in state:
            raise AuthorsCheckpointError(f"the authors' checkpoint has no tensor for {key!r}")
        return tuple(state[key].shape)

    d_video, in_ch, *patch = shape("video.patch_embedding.weight")
    layers = 1 + max(int(k.split(".")[2]) for k in state if k.startswith("video.blocks."))
    p = patch[0] * patch[1] * patch[2]
    video = VideoDiTConfig(
        **{
            **base.video.to_diffusers_kwargs(),
            "patch_size": tuple(patch),
            "in_channels": in_ch,
            "out_channels": shape("video.proj_out.weight")[0] // p,
            "text_dim": shape("video.condition_embedder.text_embedder.linear_1.weight")[1],
            "freq_dim": shape("video.condition_embedder.time_embedder.linear_1.weight")[1],
            "ffn_dim": shape("video.blocks.0.ffn.net.0.proj.weight")[0],
            "num_layers": layers,
            "cross_attn_norm": "video.blocks.0.norm2.weight" in state,
        }
    )
    if video.inner_dim != d_video:
        raise AuthorsCheckpointError(
            f"the checkpoint's video DiT is {d_video} wide; the preset's {video.num_attention_heads} heads x "
            f"{video.attention_head_dim} = {video.inner_dim}: choose the preset that matches"
        )
    d_action, action_dim = shape("expert.action_in.weight")
    state_dim = shape("state_proj.weight")[1] if "state_proj.weight" in state else 0
    return base.replace(
        video=video.to_diffusers_kwargs() | {"patch_size": list(video.patch_size)},
        action_hidden_dim=d_action,
        action_ffn_dim=shape("expert.blocks.0.ffn.net.0.proj.weight")[0],
        action_dim=action_dim,
        state_dim=state_dim,
        action_init="random",
    )


def load_authors_model(
    path: str | os.PathLike[str], base: FastWAMConfig, dtype: torch.dtype = torch.float32
) -> FastWAM:
    """The authors' checkpoint as our ``FastWAM`` (strict: every tensor of ours filled, shapes equal)."""
    state = map_authors_state(load_authors_payload(path))
    config = config_from_state(state, base)
    with torch.device("meta"):
        model = FastWAM(config)
    try:
        return load_state_strict(model, state, path, "cpu", dtype).eval()
    except ValueError as error:
        raise AuthorsCheckpointError(str(error)) from error


def read_authors_stats(path: str | os.PathLike[str]) -> NormalizationStats:
    """Their ``dataset_stats.json`` -> our statistics of "action" and "state" (one merged key each)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"dataset statistics not found: {path}")
    data = json.loads(path.read_text())
    features = {}
    for group in ("action", "state"):
        entries = data.get(group)
        if not isinstance(entries, Mapping) or len(entries) != 1:
            raise ValueError(
                f"{path}: {group!r} must hold exactly one merged feature, got "
                f"{sorted(entries) if isinstance(entries, Mapping) else entries!r}"
            )
        (key, stats), = entries.items()  # fmt: skip
        needed = ("mean", "std", "min", "max", "q01", "q99")
        absent = [f for f in needed if f not in stats]
        if absent:
            raise ValueError(f"{path}: {group}.{key} lacks statistics {absent}")
        count = int(
            stats.get("count", [0])[0] if isinstance(stats.get("count"), list) else stats.get("count", 0)
        )
        features[group] = FeatureStats(**{f: stats[f] for f in needed}, count=count)
    return NormalizationStats(features)


def convert_authors_checkpoint(
    checkpoint: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    robot_config: str | os.PathLike[str],
    stats: str | os.PathLike[str] | None,
    preset: str,
    variant: str = "fast_wam",
    normalization: str = "quantile",
    action_horizon: int | None = None,
    video_frames: int | None = None,
    wan_dir: str | os.PathLike[str] | None = None,
    control_fps: float = 15.0,
) -> Path:
    """Write our checkpoint (safetensors + JSON) for the authors' ``checkpoint``."""
    from fastwam.robot_config import load_robot_and_cameras

    robot, cameras = load_robot_and_cameras(robot_config)
    overrides: dict[str, Any] = {"variant": variant}
    if action_horizon is not None:
        overrides["action_horizon"] = action_horizon
    if video_frames is not None:
        overrides["num_video_frames"] = video_frames
    base = build_preset(preset, **overrides)
    model = load_authors_model(checkpoint, base)
    cfg = model.config
    if (cfg.action_dim, cfg.state_dim) != (robot.action_dim, robot.state_dim):
        raise ValueError(
            f"the checkpoint predicts {cfg.action_dim}-D actions from {cfg.state_dim}-D state; robot "
            f"{robot.name!r} in {robot_config} has {robot.action_dim} / {robot.state_dim}"
        )
    norm_stats = read_authors_stats(stats) if stats is not None else None
    if norm_stats is None:
        modes = None
    else:
        if normalization not in MODES:
            raise ValueError(f"unknown normalization {normalization!r}; expected one of {MODES}")
        modes = {"action": normalization} | ({"state": normalization} if cfg.state_dim else {})
    components: WanComponents | None = None
    if wan_dir is None:
        if cfg.vae is None:
            raise ValueError(f"preset {preset!r} has no embedded components: pass --wan-dir")
        components = build_random_components(cfg)
    return save_checkpoint(
        out,
        model,
        camera_layout=cameras,
        robot=robot,
        stats=norm_stats,
        normalization_modes=modes,
        control_fps=control_fps,
        components=components,
        wan_dir=wan_dir,
        extra={"converted_from": {"authors_checkpoint": str(Path(checkpoint).resolve()), "preset": preset}},
    )


def _describe(keys: Sequence[str], limit: int = 12) -> str:
    shown = ", ".join(keys[:limit])
    return shown + (f", ... ({len(keys)} in all)" if len(keys) > limit else "")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fastwam.convert", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    a = sub.add_parser("authors", help="a checkpoint of the authors' Fast-WAM code -> our checkpoint")
    a.add_argument("checkpoint", help="the authors' .pt payload (read with torch.load(weights_only=True))")
    a.add_argument("--out", required=True, help="our checkpoint directory to write")
    a.add_argument(
        "--robot-config",
        required=True,
        help="YAML with robot + cameras sections: a robot config, or training/configs/{libero,robotwin}.yaml",
    )
    a.add_argument("--stats", help="the authors' dataset_stats.json (omit: identity normalization)")
    a.add_argument("--preset", default="wan22-5b", help="model preset for what tensors do not show")
    a.add_argument(
        "--variant",
        default="fast_wam",
        choices=VARIANTS,
        help="the variant it was trained as (the payload does not say: fast_wam and joint share every key)",
    )
    a.add_argument("--normalization", default="quantile", choices=[m for m in MODES if m != "identity"])
    a.add_argument("--action-horizon", type=int, help="actions per chunk (default: the preset's)")
    a.add_argument("--video-frames", type=int, help="pixel frames per training chunk (default: the preset's)")
    a.add_argument("--wan-dir", help="Wan2.2-TI2V-5B-Diffusers directory (VAE, text encoder, tokenizer)")
    a.add_argument(
        "--control-fps", type=float, default=15.0, help="rate at which the chunk's actions are executed"
    )
    b = sub.add_parser("to-authors", help="our checkpoint -> the authors' payload (.pt) for their code")
    b.add_argument("checkpoint", help="our checkpoint directory")
    b.add_argument("--out", required=True, help="the .pt file to write")
    args = parser.parse_args(argv)
    if args.command == "to-authors":
        from fastwam.checkpoint import load_checkpoint

        try:
            model = load_checkpoint(args.checkpoint, load_components=False).model
        except (OSError, ValueError) as error:
            parser.exit(2, f"error: {error}\n")
        torch.save(authors_payload(model), args.out)
        print(f"wrote {args.out}")
        return 0
    try:
        path = convert_authors_checkpoint(
            args.checkpoint,
            args.out,
            robot_config=args.robot_config,
            stats=args.stats,
            preset=args.preset,
            variant=args.variant,
            normalization=args.normalization,
            action_horizon=args.action_horizon,
            video_frames=args.video_frames,
            wan_dir=args.wan_dir,
            control_fps=args.control_fps,
        )
    except (OSError, ValueError) as error:
        parser.exit(2, f"error: {error}\n")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
