"""Memory plan of sharded Fast-WAM training (train.sharding=fsdp) per GPU, and its check on CPU.

    python -m fastwam_training.memory_plan                      # wan22-5b at the R1 Lite layout
    python -m fastwam_training.memory_plan --batch 2 --gpus 8 16 64
    python -m fastwam_training.memory_plan --check              # the activation model vs CPU RSS (small)

Per GPU, for N GPUs (FSDP2 with bf16 compute, fastwam_training.sharding):

* parameters: fp32 master shards, 4 P / N bytes; gradients: fp32 shards, 4 P / N; AdamW: two fp32
  moments, 8 P / N (P = trainable parameters, counted on the real model built on the meta device).
* gathered (FSDP working set, an estimate from the unit sizes): the root unit's bf16 weights
  (gathered for the whole step) + two bf16 layer pairs (the running one and the prefetched one) +
  one pair's bf16 gradients and their fp32 copy for the reduce-scatter.
* activations: MEASURED, not counted by hand: the model's training forward runs on the meta
  device at full size (R1 Lite layout: 384x320 composite, 9 frames -> 3 latent frames, 32 actions)
  and every tensor autograd keeps for backward is recorded (``saved_tensors_hooks``, one count per
  storage, parameters excluded). Attention is recorded as the fused kernels keep it (q, k, v,
  output, fp32 log-sum-exp, the mask as a bias): what CUDA's flash / memory-efficient SDPA and CPU's
  flash SDPA save (the meta device would otherwise trace the N^2 math fallback).
  Without checkpointing: everything saved. With per-layer checkpointing: what is saved outside the
  layer loop + each layer's input streams + one layer's saved tensors (its recomputation in backward).

``--check`` runs the small preset's forward for real on this CPU (fp32, one process) and
compares the traced activation bytes with the process's measured peak RSS growth over the forward
(``/proc/self/clear_refs`` resets the peak; glibc's mmap threshold is pinned so freed blocks go back
to the OS). The figures the README quotes come from this script.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from fastwam.camera import CameraLayout
from fastwam.model import FastWAM
from fastwam.model.mot import shared_layer
from fastwam.model_config import FastWAMConfig, preset

GIB = 1024**3
MIB = 1024**2
# The R1 Lite camera layout (ros2_ws/src/fastwam_policy/config/r1_lite.yaml): head 256x320 on top,
# two wrists 128x160 below; 14 joints of action and state (two 6-joint arms + two grippers).
R1_LITE_CAMERAS = {
    "rows": [
        [{"key": "head", "height": 256, "width": 320}],
        [
            {"key": "wrist_left", "height": 128, "width": 160},
            {"key": "wrist_right", "height": 128, "width": 160},
        ],
    ]
}
R1_LITE_DOF = 14


@dataclass
class ActivationTrace:
    """Bytes autograd keeps for one training forward (per batch traced)."""

    outside: int  # embedders, output heads, loss: saved outside the layer loop
    layers: list[int]  # saved inside each layer (recomputed under checkpointing)
    layer_inputs: int  # the streams entering the layers (kept under checkpointing), not in `outside`

    @property
    def plain(self) -> int:
        return self.outside + sum(self.layers)

    @property
    def checkpointed(self) -> int:
        return self.outside + self.layer_inputs + max(self.layers)


class _FusedAttentionRecord(torch.autograd.Function):
    """What the fused SDPA kernels keep for backward (output shapes only: tracing, no backward)."""

    @staticmethod
    def forward(ctx, q, k, v, bias):
        out = q.new_empty((*q.shape[:-1], v.shape[-1]))
        lse = q.new_empty(q.shape[:-1], dtype=torch.float32)
        saved = [q, k, v, out, lse] + ([bias] if bias is not None else [])
        ctx.save_for_backward(*saved)
        return out

    @staticmethod
    def backward(ctx, grad):
        raise RuntimeError("memory_plan traces the forward only")


@contextmanager
def _fused_attention() -> Iterator[None]:
    original = F.scaled_dot_product_attention

    def sdpa(q, k, v, attn_mask=None, **kwargs):
        # The kernels take a boolean mask as an additive bias of q's dtype, one per call.
        bias = None if attn_mask is None else torch.zeros(attn_mask.shape, dtype=q.dtype, device=q.device)
        return _FusedAttentionRecord.apply(q, k, v, bias)

    F.scaled_dot_product_attention = sdpa
    try:
        yield
    finally:
        F.scaled_dot_product_attention = original


def _storage_key(t: torch.Tensor) -> tuple[int, int]:
    s = t.untyped_storage()
    return s._cdata, s.nbytes()


def training_inputs(
    cfg: FastWAMConfig, layout: CameraLayout, batch: int, device: torch.device | str
) -> dict[str, torch.Tensor | None]:
    """A training batch of the model's shapes at this camera layout (random values)."""
    f = cfg.num_latent_frames
    h, w = layout.height // cfg.vae_spatial_factor, layout.width // cfg.vae_spatial_factor
    length = cfg.text_max_length
    return {
        "latents": torch.randn(batch, cfg.video.in_channels, f, h, w, device=device),
        "actions": torch.randn(batch, cfg.action_horizon, cfg.action_dim, device=device),
        "action_mask": torch.ones(batch, cfg.action_horizon, dtype=torch.bool, device=device),
        "latent_frame_mask": torch.ones(batch, f, dtype=torch.bool, device=device),
        "text_embeds": torch.randn(batch, length, cfg.video.text_dim, device=device),
        "text_mask": torch.ones(batch, length, dtype=torch.bool, device=device),
        "state": torch.randn(batch, cfg.state_dim, device=device) if cfg.state_dim > 0 else None,
    }


def trace_activations(
    cfg: FastWAMConfig, layout: CameraLayout, batch: int, dtype: torch.dtype = torch.bfloat16
) -> ActivationTrace:
    """Run the training forward at full size on the meta device and record what autograd keeps."""
    with torch.device("meta"):
        model = FastWAM(cfg.replace(action_init="random")).to(dtype)
    params = {_storage_key(p)[0] for p in model.parameters()}
    seen: set[int] = set()
    buckets: dict[str, int] = {}
    where = ["outside"]
    inputs_seen: set[int] = set()
    input_bytes = [0]

    def pack(t: torch.Tensor) -> torch.Tensor:
        key, nbytes = _storage_key(t)
        if key not in params and key not in seen:
            seen.add(key)
            buckets[where[0]] = buckets.get(where[0], 0) + nbytes
        return t

    def runner(layer: int):
        def run(blocks, streams, mask):
            for s in streams:
                for t in (s.x, s.temb_proj, s.context, *(s.rope or ())):
                    if t is not None:
                        key, nbytes = _storage_key(t)
                        if key not in inputs_seen:
                            inputs_seen.add(key)
                            input_bytes[0] += nbytes
            where[0] = f"layer{layer}"
            try:
                return shared_layer(blocks, streams, mask)
            finally:
                where[0] = "outside"

        return run

    n_layers = len(model.video.blocks)
    model.layer_runners = [runner(i) for i in range(n_layers)]
    inputs = training_inputs(cfg, layout, batch, "meta")
    with _fused_attention(), torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model.training_loss(**inputs)
    layers = [buckets.get(f"layer{i}", 0) for i in range(n_layers)]
    return ActivationTrace(outside=buckets.get("outside", 0), layers=layers, layer_inputs=input_bytes[0])


@dataclass
class ParameterCounts:
    total: int
    root: int  # outside the layer pairs (the root FSDP unit)
    largest_pair: int  # video block i + expert block i, the largest

    @staticmethod
    def of(cfg: FastWAMConfig) -> ParameterCounts:
        with torch.device("meta"):
            model = FastWAM(cfg.replace(action_init="random"))
        total = sum(p.numel() for p in model.parameters() if p.requires_grad)
        pairs = [
            sum(p.numel() for p in vb.parameters()) + sum(p.numel() for p in ab.parameters())
            for vb, ab in zip(model.video.blocks, model.expert.blocks)
        ]
        return ParameterCounts(total=total, root=total - sum(pairs), largest_pair=max(pairs))


def plan_rows(counts: ParameterCounts, trace: ActivationTrace, gpus: list[int]) -> list[dict]:
    """Per GPU bytes for each GPU count, without and with checkpointing (``trace`` at the batch per GPU)."""
    rows = []
    for n in gpus:
        for ckpt in (False, True):
            params = 4 * counts.total / n
            grads = 4 * counts.total / n
            optim = 8 * counts.total / n
            gathered = 2 * counts.root + 2 * (2 * counts.largest_pair) + (2 + 4) * counts.largest_pair
            acts = trace.checkpointed if ckpt else trace.plain
            rows.append(
                {
                    "gpus": n,
                    "checkpointing": ckpt,
                    "params": params,
                    "grads": grads,
                    "optimizer": optim,
                    "gathered": gathered,
                    "activations": acts,
                    "total": params + grads + optim + gathered + acts,
                }
            )
    return rows


def r1_lite_config(name: str = "wan22-5b") -> tuple[FastWAMConfig, CameraLayout]:
    return preset(name, action_dim=R1_LITE_DOF, state_dim=R1_LITE_DOF), CameraLayout.from_dict(
        R1_LITE_CAMERAS
    )


def print_plan(batch: int, gpus: list[int]) -> None:
    cfg, layout = r1_lite_config()
    counts = ParameterCounts.of(cfg)
    trace = trace_activations(cfg, layout, batch=batch)
    n_video = cfg.num_latent_frames * (layout.height // 32) * (layout.width // 32)
    print(
        f"wan22-5b at the R1 Lite layout ({layout.height}x{layout.width}, {cfg.num_video_frames} frames -> "
        f"{n_video} video tokens + {cfg.action_horizon} action tokens), FSDP2 bf16 compute, AdamW fp32"
    )
    print(
        f"trainable parameters {counts.total / 1e9:.3f} B (root unit {counts.root / 1e6:.0f} M, "
        f"largest layer pair {counts.largest_pair / 1e6:.0f} M)"
    )
    print(
        f"activations at batch {batch}: {trace.plain / GIB:.2f} GiB without checkpointing, "
        f"{trace.checkpointed / GIB:.2f} GiB with (outside the loop {trace.outside / MIB:.0f} MiB, "
        f"layer inputs {trace.layer_inputs / MIB:.0f} MiB, largest layer {max(trace.layers) / MIB:.0f} MiB)"
    )
    print(f"\nper GPU, GiB, batch {batch} per GPU:")
    header = "| GPUs | act. ckpt | params | grads | AdamW | gathered | activations | total |"
    print(header)
    print("|" + "---|" * 8)
    for r in plan_rows(counts, trace, gpus):
        print(
            f"| {r['gpus']} | {'yes' if r['checkpointing'] else 'no'} | {r['params'] / GIB:.2f} | "
            f"{r['grads'] / GIB:.2f} | {r['optimizer'] / GIB:.2f} | {r['gathered'] / GIB:.2f} | "
            f"{r['activations'] / GIB:.2f} | {r['total'] / GIB:.2f} |"
        )


# -- the check on CPU ----------------------------------------------------------------------------------
def _status_kib(field: str) -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def measure_forward(name: str, batch: int, checkpointing: bool) -> dict:
    """(In a fresh process.) Peak RSS growth over one real fp32 training forward on this CPU."""
    torch.manual_seed(0)
    cfg, layout = _check_config(name)
    model = FastWAM(cfg).train()
    model.gradient_checkpointing = checkpointing
    inputs = training_inputs(cfg, layout, batch, "cpu")
    # Warm-up, forward and backward at batch 1: one-time allocations (thread pools, kernel caches,
    # autograd's engine) are not the activations.
    model.training_loss(**training_inputs(cfg, layout, 1, "cpu"))["loss"].backward()
    model.zero_grad(set_to_none=True)
    gc.collect()
    before = _status_kib("VmRSS")
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset VmHWM (the peak) to the current RSS
    loss = model.training_loss(**inputs)["loss"]
    peak = _status_kib("VmHWM")
    del loss
    return {"rss_growth": (peak - before) * 1024}


def _check_config(name: str) -> tuple[FastWAMConfig, CameraLayout]:
    cfg = preset(name)
    # The presets' own camera sizes: tiny 32x64 (tiny_synthetic.yaml), small 64x128 (two 64x64 views).
    size = {"tiny": 32, "small": 64}[name]
    layout = CameraLayout.from_dict(
        {"rows": [[{"key": "a", "height": size, "width": size}, {"key": "b", "height": size, "width": size}]]}
    )
    return cfg, layout


def check(batches: list[int], name: str = "small", repeats: int = 1) -> list[dict]:
    """Traced vs measured activation bytes of the ``name`` preset at these batch sizes, without and
    with checkpointing. (tiny's activations, < 1 MiB, are below the ~8 MiB the first real forward
    adds to RSS anyway: it cannot check anything.) ``repeats``: the least of that many fresh
    processes' measurements (a one-off allocation in one process, seen once in CI on a loaded
    machine: +14 MB over 18 MB of checkpointed activations, does not come back in the next)."""
    rows = []
    env = {
        **os.environ,
        "MALLOC_MMAP_THRESHOLD_": "65536",
        "MALLOC_TRIM_THRESHOLD_": "0",
        "OMP_NUM_THREADS": "1",
    }
    cfg, layout = _check_config(name)
    for batch in batches:
        trace = trace_activations(cfg, layout, batch, dtype=torch.float32)
        for ckpt in (False, True):
            cmd = [
                sys.executable,
                "-m",
                "fastwam_training.memory_plan",
                "--measure",
                name,
                "--batch",
                str(batch),
            ]
            if ckpt:
                cmd.append("--checkpointing")
            measured = min(
                json.loads(run.stdout.strip().splitlines()[-1])["rss_growth"]
                for run in (
                    subprocess.run(cmd, capture_output=True, text=True, env=env, check=True)
                    for _ in range(repeats)
                )
            )
            predicted = trace.checkpointed if ckpt else trace.plain
            rows.append(
                {"preset": name, "batch": batch, "checkpointing": ckpt, "predicted": predicted,
                 "measured": measured, "ratio": measured / predicted}
            )  # fmt: skip
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--batch", type=int, default=1, help="samples per GPU (per process in --check)")
    parser.add_argument("--gpus", type=int, nargs="+", default=[8, 16, 64])
    parser.add_argument("--check", action="store_true", help="compare the activation model with CPU RSS")
    parser.add_argument("--check-batches", type=int, nargs="+", default=[2, 4], help="batches for --check")
    parser.add_argument("--measure", choices=("tiny", "small"), help=argparse.SUPPRESS)
    parser.add_argument("--checkpointing", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    if args.measure:
        print(json.dumps(measure_forward(args.measure, args.batch, args.checkpointing)))
        return 0
    if args.check:
        print("activations of one fp32 training forward on this CPU: traced (meta device) vs measured (RSS)")
        print("| preset | batch | act. ckpt | traced MiB | measured MiB | measured / traced |")
        print("|---|---|---|---|---|---|")
        for r in check(args.check_batches):
            print(
                f"| {r['preset']} | {r['batch']} | {'yes' if r['checkpointing'] else 'no'} | "
                f"{r['predicted'] / MIB:.1f} | {r['measured'] / MIB:.1f} | {r['ratio']:.2f} |"
            )
        return 0
    print_plan(args.batch, args.gpus)
    return 0


if __name__ == "__main__":
    sys.exit(main())
