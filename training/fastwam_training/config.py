"""Experiment configuration: a YAML file plus `section.key=value` command-line overrides.

Every field has a dataclass home below; unknown keys are errors (a typo never silently falls back
to a default). Override values are parsed as YAML, so `train.lr=3e-5`, `data.val_episodes=[0,5]`
and `model.overrides={lambda_video: 0.5}` all work.
"""

from __future__ import annotations

import dataclasses
import os
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from fastwam.camera import CameraLayout
from fastwam.model_config import VARIANTS
from fastwam.robot import RobotSpec
from fastwam.robot_config import load_robot_config


@dataclass
class ModelSection:
    preset: str = "tiny"  # tiny | small | wan22-5b (fastwam.model_config presets)
    variant: str = "fast_wam"  # fast_wam | joint | idm | no_cotrain
    # Wan2.2-TI2V-5B-Diffusers directory (transformer/, vae/, text_encoder/, tokenizer/) for wan22-5b.
    pretrained: str | None = None
    # Start from a Fast-WAM checkpoint instead (fine-tuning); its weights, not its training state.
    init_checkpoint: str | None = None
    overrides: dict[str, Any] = field(default_factory=dict)  # FastWAMConfig fields


@dataclass
class DataSection:
    root: str = ""
    # camera layout key -> dataset video feature, e.g. head: observation.images.head
    cameras: dict[str, str] = field(default_factory=dict)
    state_key: str = "observation.state"
    action_key: str = "action"
    video_stride: int = 4  # dataset frames between consecutive video frames of a window
    val_episodes: Any = 0  # a count (seeded random pick) or an explicit list of episode indices
    stats_path: str | None = None  # default: <root>/meta/fastwam_stats.json
    recompute_stats: bool = False
    normalization: dict[str, str] = field(default_factory=lambda: {"action": "quantile", "state": "quantile"})
    num_workers: int = 2
    check_videos: bool = True


@dataclass
class CacheSection:
    dir: str | None = None  # default: <output_dir>/cache
    text: bool = True  # instruction embeddings, one per unique instruction
    latents: bool = False  # VAE latents of every window (then windows start every latent_stride frames)
    latent_stride: int = 1
    batch_size: int = 8


@dataclass
class TrainSection:
    max_steps: int = 30000
    batch_size: int = 8  # per process, per micro-batch
    grad_accum: int = 1
    lr: float = 1e-4
    weight_decay: float = 0.01
    betas: tuple[float, float] = (0.9, 0.999)
    warmup_steps: int = 1000
    min_lr_ratio: float = 0.0  # cosine decays to lr * min_lr_ratio at max_steps
    grad_clip: float = 1.0
    mixed_precision: str = "auto"  # auto (bf16 on GPU, fp32 on CPU) | bf16 | fp16 | no
    gradient_checkpointing: bool = False
    ema_decay: float | None = None  # e.g. 0.999; None = no EMA
    cpu: bool = False  # force CPU even where a GPU is present
    # torch's CPU threads: null = torch's default, an integer, or "adaptive" (the trainer times steps
    # at nearby counts now and then and keeps the fastest: a machine others keep busy trains faster
    # on fewer threads); cpu_threads_file: a file holding the count, re-read when it changes (a
    # scheduler moving cores between runs). fastwam_training.cpu_threads.
    cpu_threads: int | str | None = None
    cpu_threads_file: str | None = None
    # Steps to run in this invocation, then checkpoint and exit (preemptible jobs); None = to max_steps.
    run_steps: int | None = None
    # none: every process holds the whole model (1 process, or DDP under accelerate launch);
    # fsdp: weights, gradients and AdamW states sharded across the processes (FSDP2, one unit per
    # MoT layer pair; fastwam_training.sharding). Needs a multi-process launch (training/README.md).
    sharding: str = "none"


@dataclass
class CheckpointSection:
    every: int = 1000
    keep_last: int = 3
    resume: str | None = None  # "latest", or a checkpoint directory


@dataclass
class LoggingSection:
    every: int = 10
    tensorboard: bool = True
    jsonl: bool = True  # logs/metrics.jsonl: one JSON object per logged step (fastwam_training.tracking)
    progress: bool = True


@dataclass
class ValidationSection:
    every: int = 1000  # 0 = never
    batches: int = 4
    batch_size: int = 8


@dataclass
class ExperimentConfig:
    name: str = "experiment"
    output_dir: str = "runs/experiment"
    seed: int = 0
    # Robot and cameras: a robot config YAML (fastwam.robot_config), or both given inline.
    robot_config: str | None = None
    robot: dict[str, Any] | None = None  # fastwam.robot.RobotSpec.to_dict() form
    cameras: dict[str, Any] | None = None  # fastwam.camera.CameraLayout.to_dict() form
    model: ModelSection = field(default_factory=ModelSection)
    data: DataSection = field(default_factory=DataSection)
    cache: CacheSection = field(default_factory=CacheSection)
    train: TrainSection = field(default_factory=TrainSection)
    checkpoint: CheckpointSection = field(default_factory=CheckpointSection)
    logging: LoggingSection = field(default_factory=LoggingSection)
    validation: ValidationSection = field(default_factory=ValidationSection)
    source: str = ""  # the YAML file it came from (relative paths resolve against its folder too)

    def __post_init__(self) -> None:
        if self.model.variant not in VARIANTS:
            raise ValueError(f"model.variant must be one of {VARIANTS}, got {self.model.variant!r}")
        if self.robot_config is None and (self.robot is None or self.cameras is None):
            raise ValueError("config needs robot_config, or both robot and cameras inline")
        if self.train.grad_accum < 1 or self.train.batch_size < 1 or self.train.max_steps < 1:
            raise ValueError("train.batch_size, train.grad_accum and train.max_steps must be >= 1")
        if self.train.sharding not in ("none", "fsdp"):
            raise ValueError(f"train.sharding must be none or fsdp, got {self.train.sharding!r}")
        if self.cache.latents and not self.cache.text:
            raise ValueError("cache.latents needs cache.text (training then never runs the encoders)")

    # -- derived objects -------------------------------------------------------------------------
    def resolve_path(self, path: str) -> Path:
        """A config path: absolute, relative to the working directory, or to the YAML's folder."""
        p = Path(os.path.expanduser(path))
        if p.is_absolute() or p.exists() or not self.source:
            return p
        beside = Path(self.source).parent / p
        return beside if beside.exists() else p

    def robot_and_cameras(self) -> tuple[RobotSpec, CameraLayout]:
        if self.robot_config is not None:
            loaded = load_robot_config(self.resolve_path(self.robot_config))
            robot, cameras = loaded.robot, loaded.cameras
        else:
            robot, cameras = None, None
        if self.robot is not None:
            robot = RobotSpec.from_dict(self.robot)
        if self.cameras is not None:
            cameras = CameraLayout.from_dict(self.cameras)
        assert robot is not None and cameras is not None
        return robot, cameras

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d.pop("source")
        d["train"]["betas"] = list(self.train.betas)
        return d

    def save(self, path: str | os.PathLike[str]) -> None:
        Path(path).write_text(yaml.safe_dump(self.to_dict(), sort_keys=False))


def from_dict(data: Mapping[str, Any], source: str = "") -> ExperimentConfig:
    return _build(ExperimentConfig, dict(data), "", extra={"source": source})


def load_config(path: str | os.PathLike[str], overrides: Sequence[str] = ()) -> ExperimentConfig:
    """Read a YAML experiment config and apply `a.b=value` overrides."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"experiment config not found: {path}")
    data = yaml.safe_load(path.read_text()) or {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: top level must be a mapping")
    for item in overrides:
        apply_override(data, item)
    try:
        return from_dict(data, source=str(path))
    except (TypeError, ValueError) as error:
        raise ValueError(f"{path}: {error}") from error


def apply_override(data: dict[str, Any], item: str) -> None:
    """Set `a.b.c=value` in a nested dict (value parsed as YAML)."""
    if "=" not in item:
        raise ValueError(f"override {item!r} must look like section.key=value")
    key, raw = item.split("=", 1)
    parts = key.strip().split(".")
    node = data
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ValueError(f"override {item!r}: {part!r} is not a section")
    node[parts[-1]] = yaml.safe_load(raw)


def _build(cls, data: dict[str, Any], where: str, extra: dict[str, Any] | None = None):
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    unknown = sorted(set(data) - set(fields) - {"source"})
    if unknown:
        raise ValueError(f"unknown config keys {[f'{where}{k}' for k in unknown]}")
    kwargs = dict(extra or {})
    for name, value in data.items():
        default = (
            fields[name].default_factory()
            if fields[name].default_factory is not dataclasses.MISSING
            else None
        )
        if dataclasses.is_dataclass(default) and not isinstance(default, type):
            if not isinstance(value, Mapping):
                raise ValueError(f"config section {where}{name} must be a mapping")
            kwargs[name] = _build(type(default), dict(value), f"{where}{name}.")
        elif name == "betas":
            kwargs[name] = tuple(float(b) for b in value)
        else:
            kwargs[name] = _coerce(value, hints[name], f"{where}{name}")
    return cls(**kwargs)


def _coerce(value: Any, hint: Any, where: str) -> Any:
    """YAML 1.1 reads `1e-4` as a string: turn numeric strings into the field's number type. It also
    reads `no` as False: a text field given a YAML boolean gets the word back (`mixed_precision=no`)."""
    kinds = typing.get_args(hint) or (hint,)
    if isinstance(value, bool) and str in kinds and bool not in kinds:
        return "yes" if value else "no"
    if isinstance(value, str) and float in kinds:
        try:
            return float(value)
        except ValueError:
            raise ValueError(f"config {where}: expected a number, got {value!r}") from None
    if isinstance(value, int) and not isinstance(value, bool) and float in kinds and int not in kinds:
        return float(value)
    return value
