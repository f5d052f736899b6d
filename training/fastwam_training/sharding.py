"""FSDP2 sharding of Fast-WAM for training (``train.sharding: fsdp``), on GPUs and on CPU alike.

Why the trainer shards the model itself rather than through accelerate's FSDP plugin:

* accelerate (1.15, ``state.py``) turns ``distributed_type: FSDP`` on only for multi-GPU device
  types; a CPU launch falls back to plain processes, so its FSDP path cannot be tested without GPUs.
  PyTorch's ``fully_shard`` itself shards over a gloo CPU mesh. accelerate still starts and
  rendezvous the processes (any ``training/accelerate/*`` launch config, or torchrun).
* The Fast-WAM layer loop (``fastwam.model.mot.shared_layer``) never calls a block's ``forward``: it
  drives the blocks' submodules, and reads ``scale_shift_table`` (a bare parameter) before any of
  them. FSDP gathers a unit's weights in forward hooks, so a block cannot be a unit by itself and
  an automatic wrap policy can only make every Linear its own unit.

The units here: one per layer PAIR, ``fully_shard([video.blocks[i], expert.blocks[i]])`` (both
branches of a layer share one attention, so the layer needs both at once; one all-gather per layer),
whose gather / free is driven by a per-layer runner that ``FastWAM.forward_tokens`` calls
(``FastWAM.layer_runners``; registered with ``register_fsdp_forward_method``, the public FSDP2
hook for a forward that is not ``Module.forward``). Everything else (patch and condition
embedders, heads, state projection: 103 M of wan22-5b's 6.02 B) is the root unit, gathered for the whole
forward. Activation checkpointing (``train.gradient_checkpointing``) wraps the runner call per layer;
FSDP2 re-gathers the pair for the recomputation in backward.

Mixed precision: the sharded parameters stay fp32 (the optimizer's master weights and AdamW states
are fp32 and sharded); each unit gathers a bf16 copy for compute and gradients are reduced in fp32
(``MixedPrecisionPolicy(param_dtype=bf16, reduce_dtype=fp32)``).

Checkpoints: model and optimizer as a sharded ``torch.distributed.checkpoint`` folder (each rank
writes its shards), scheduler / RNG through accelerate, and the exported model the full unsharded
state dict gathered to rank 0.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch import nn
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_state_dict,
    set_state_dict,
)
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import FSDPModule, MixedPrecisionPolicy, fully_shard, register_fsdp_forward_method
from torch.distributed.tensor import DTensor

from fastwam.model import FastWAM
from fastwam.model.mot import shared_layer

SHARDINGS = ("none", "fsdp")
RUNNER = "fastwam_mot_layer"  # the per-layer method FSDP2 treats as the pair unit's forward


def _mot_layer(blocks, streams, mask):
    return shared_layer(blocks, streams, mask)


@dataclass
class ShardedModel:
    """The sharded root (``root``, which holds ``model``) and its layer-pair units (video blocks)."""

    root: nn.Module
    model: FastWAM
    units: list[nn.Module] = field(default_factory=list)
    mesh: object = None

    def fsdp_modules(self) -> list[FSDPModule]:
        return [self.root, *self.units]  # type: ignore[list-item]


def mixed_precision(precision: str) -> MixedPrecisionPolicy:
    """The trainer's mixed_precision setting as an FSDP2 policy (fp32 sharded master weights)."""
    if precision == "bf16":
        return MixedPrecisionPolicy(
            param_dtype=torch.bfloat16, reduce_dtype=torch.float32, cast_forward_inputs=False
        )
    if precision == "no":
        return MixedPrecisionPolicy(cast_forward_inputs=False)
    raise ValueError(
        f"train.mixed_precision={precision!r} with train.sharding=fsdp: use bf16 or no "
        "(fp16 needs a loss scaler, which the sharded path does not have)"
    )


def shard(
    root: nn.Module,
    model: FastWAM,
    device: torch.device,
    precision: str = "no",
    reshard_after_forward: bool = True,
) -> ShardedModel:
    """Shard ``root`` (a module holding ``model``) over all processes of the default process group.

    Call before building the optimizer: FSDP2 replaces the parameters with DTensor shards."""
    if not dist.is_initialized():
        raise RuntimeError("train.sharding=fsdp needs a distributed launch (accelerate launch or torchrun)")
    video, expert = model.video.blocks, model.expert.blocks
    if len(video) != len(expert):
        raise ValueError(f"the MoT loop pairs layers: {len(video)} video blocks, {len(expert)} expert blocks")
    mesh = init_device_mesh(device.type, (dist.get_world_size(),))
    mp = mixed_precision(precision)
    units = []
    for vb, ab in zip(video, expert):
        fully_shard([vb, ab], mesh=mesh, mp_policy=mp, reshard_after_forward=reshard_after_forward)
        vb.fastwam_mot_layer = _mot_layer  # a plain attribute (not a module): no state-dict entry
        register_fsdp_forward_method(vb, RUNNER)
        units.append(vb)
    # The root: everything not in a pair. It stays gathered from its forward to its backward.
    fully_shard(root, mesh=mesh, mp_policy=mp)
    model.layer_runners = [getattr(vb, RUNNER) for vb in units]
    return ShardedModel(root=root, model=model, units=units, mesh=mesh)


def local_numel(module: nn.Module) -> tuple[int, int]:
    """(elements this process holds, elements of the whole model) over ``module``'s parameters."""
    local = total = 0
    for p in module.parameters():
        total += p.numel()
        local += p.to_local().numel() if isinstance(p, DTensor) else p.numel()
    return local, total


@contextmanager
def gathered(sharded: ShardedModel) -> Iterator[None]:
    """All weights whole on every process (e.g. validation's sampling, which drives the blocks
    outside the layer runners), then sharded again. Needs memory for the full model per process."""
    modules = sharded.fsdp_modules()
    runners = sharded.model.layer_runners
    for m in modules:  # the root first: its lazy initialisation claims the other units
        m.unshard()
    sharded.model.layer_runners = None
    try:
        yield
    finally:
        sharded.model.layer_runners = runners
        for m in modules:
            m.reshard()


def full_state_dict(sharded: ShardedModel) -> dict[str, torch.Tensor]:
    """The whole model's weights on the CPU of rank 0 (empty elsewhere). Collective."""
    return get_model_state_dict(
        sharded.root, options=StateDictOptions(full_state_dict=True, cpu_offload=True)
    )


def save(path: Path, sharded: ShardedModel, optimizer: torch.optim.Optimizer) -> None:
    """Sharded model + optimizer state: every process writes its own shards. Collective."""
    model_state, optim_state = get_state_dict(sharded.root, optimizer)
    dcp.save({"model": model_state, "optimizer": optim_state}, checkpoint_id=str(path))


def load(path: Path, sharded: ShardedModel, optimizer: torch.optim.Optimizer) -> None:
    """Restore what ``save`` wrote (same number of processes). Collective."""
    if not (path / ".metadata").is_file():
        raise FileNotFoundError(f"no sharded model/optimizer state in {path} (missing .metadata)")
    model_state, optim_state = get_state_dict(sharded.root, optimizer)
    state = {"model": model_state, "optimizer": optim_state}
    dcp.load(state, checkpoint_id=str(path))
    set_state_dict(
        sharded.root,
        optimizer,
        model_state_dict=state["model"],
        optim_state_dict=state["optimizer"],
    )


def clip_grad_norm_(sharded: ShardedModel, max_norm: float) -> torch.Tensor:
    """Clip by the global norm over all shards (as the unsharded model's norm)."""
    params = [p for p in sharded.root.parameters() if p.grad is not None]
    norm = torch.nn.utils.clip_grad_norm_(params, max_norm)
    return norm.full_tensor() if isinstance(norm, DTensor) else norm
