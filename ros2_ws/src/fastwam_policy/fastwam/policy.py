"""FastWAMPolicy: camera images + state + instruction -> an action chunk in physical units.

The inference API the ROS node (and the benchmarks) use. ROS-free; one call = one chunk.
"""

from __future__ import annotations

import os
import time
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import torch

from fastwam.camera import CameraLayout, composite_to_tensor
from fastwam.checkpoint import LoadedCheckpoint, load_checkpoint
from fastwam.inference_device import CPU_THREADS
from fastwam.model import rtc
from fastwam.model.action_loop import check_compile_mode
from fastwam.model.fastwam import Context
from fastwam.model.rtc import ChunkGuide
from fastwam.model_config import FastWAMConfig
from fastwam.robot import RobotSpec

TIMING_KEYS = ("preprocess", "text_encode", "vae_encode", "prefix", "action", "total")


@dataclass
class PolicyOutput:
    actions: np.ndarray  # [action_horizon, robot.action_dim] float64, physical units
    timings_ms: dict[str, float]  # TIMING_KEYS


class FastWAMPolicy:
    """Loaded checkpoint + the per-instruction cache (text encoder output and both branches'
    cross-attention K/V, plus the empty-prompt context when CFG is on)."""

    max_cached_instructions = 16

    def __init__(
        self,
        checkpoint: LoadedCheckpoint,
        device: str | torch.device = "cpu",
        compile: str = "none",
        cpu_threads: int | None = CPU_THREADS,
    ):
        """``compile``: how the cached prefix + action loop run (``fastwam.model.action_loop``):
        ``"none"`` (static loop, eager), ``"cudagraph"`` (CUDA graphs on CUDA, eager replay on CPU)
        or ``"torch_compile"`` (inductor-fused Wan block, plus the CUDA graphs on CUDA; eager
        fallback). Both capturing modes also replay the VAE encode as a CUDA graph on CUDA.
        ``cpu_threads``: torch's intra-op threads while predicting on CPU (see fastwam.inference_device.CPU_THREADS), set in
        the thread that calls `predict` (OpenMP keeps the count per thread); None leaves torch's."""
        if cpu_threads is not None and (isinstance(cpu_threads, bool) or int(cpu_threads) < 1):
            raise ValueError(f"cpu_threads must be None or a positive integer, got {cpu_threads!r}")
        if checkpoint.components is None:
            raise ValueError("FastWAMPolicy needs the checkpoint's VAE / text encoder (load_components=True)")
        self.checkpoint = checkpoint
        self.model = checkpoint.model
        self.model.compile_mode = check_compile_mode(compile)
        self.components = checkpoint.components
        self.components.capture_encode = compile != "none"
        self.device = torch.device(device)
        self.cpu_threads = None if cpu_threads is None else int(cpu_threads)
        self.camera_layout: CameraLayout = checkpoint.camera_layout
        self.robot: RobotSpec = checkpoint.robot
        self.config: FastWAMConfig = checkpoint.config
        self.action_horizon: int = checkpoint.action_horizon
        self.fps: float = checkpoint.control_fps
        self.normalizer = checkpoint.normalizer
        self.cfg_scale: float = self.config.cfg_scale
        self.num_inference_steps: int = self.config.num_inference_steps
        self.num_action_samples: int = self.config.num_action_samples  # draws averaged per chunk
        self._text_cache: OrderedDict[str, Context] = OrderedDict()
        self._uncond: Context | None = None

    @classmethod
    def from_pretrained(
        cls,
        path: str | os.PathLike[str],
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float32,
        compile: str = "none",
        cpu_threads: int | None = CPU_THREADS,
    ) -> FastWAMPolicy:
        checkpoint = load_checkpoint(path, device=device, dtype=dtype)
        return cls(checkpoint, device=device, compile=compile, cpu_threads=cpu_threads)

    # -- helpers -----------------------------------------------------------------------------------
    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def _instruction_context(self, instruction: str) -> Context:
        ctx = self._text_cache.get(instruction)
        if ctx is not None:
            self._text_cache.move_to_end(instruction)
            return ctx
        embeds, mask = self.components.encode_text([instruction], clean=self.model.config.clean_prompts)
        ctx = self.model.encode_instruction(embeds, mask)
        self._text_cache[instruction] = ctx
        while len(self._text_cache) > self.max_cached_instructions:
            self._text_cache.popitem(last=False)
        return ctx

    def _uncond_context(self) -> Context:
        if self._uncond is None:
            embeds, mask = self.components.encode_text(
                [""], template=False, clean=self.model.config.clean_prompts
            )
            self._uncond = self.model.encode_instruction(embeds, mask)
        return self._uncond

    def _check_inputs(self, images, state, instruction) -> np.ndarray | None:
        if not isinstance(images, Mapping):
            raise ValueError(
                f"images must be a mapping camera key -> HxWx3 uint8, got {type(images).__name__}"
            )
        missing = [k for k in self.camera_layout.keys if k not in images]
        if missing:
            raise ValueError(
                f"missing camera images {missing} (checkpoint layout: {list(self.camera_layout.keys)})"
            )
        for key in self.camera_layout.keys:
            img = images[key]
            if not isinstance(img, np.ndarray):
                raise ValueError(f"camera {key!r}: expected a numpy array, got {type(img).__name__}")
            if img.dtype != np.uint8:
                raise ValueError(f"camera {key!r}: expected dtype uint8, got {img.dtype}")
            if img.ndim != 3 or img.shape[2] != 3 or img.shape[0] == 0 or img.shape[1] == 0:
                raise ValueError(f"camera {key!r}: expected shape HxWx3, got {img.shape}")
        if not isinstance(instruction, str):
            raise ValueError(f"instruction must be a string, got {type(instruction).__name__}")
        if self.config.state_dim == 0:
            return None
        if state is None:
            raise ValueError(
                f"state is required: this checkpoint conditions on {self.robot.state_dim} state values"
            )
        state = np.asarray(state)
        if state.shape != (self.robot.state_dim,):
            raise ValueError(
                f"state must have shape ({self.robot.state_dim},) ({', '.join(self.robot.state_joint_names)}), "
                f"got {state.shape}"
            )
        if not np.issubdtype(state.dtype, np.number):
            raise ValueError(f"state must be numeric, got dtype {state.dtype}")
        bad = [self.robot.state_joint_names[i] for i in np.nonzero(~np.isfinite(state))[0]]
        if bad:
            raise ValueError(f"state has non-finite values (NaN/inf) for joints {bad}")
        return state.astype(np.float64)

    # -- the API -----------------------------------------------------------------------------------
    @torch.no_grad()
    def predict(
        self,
        images: Mapping[str, np.ndarray],
        state: np.ndarray | None,
        instruction: str,
        generator: torch.Generator | None = None,
        guide: ChunkGuide | None = None,
    ) -> PolicyOutput:
        """images: camera key -> HxWx3 uint8 RGB (any size); state [robot.state_dim] physical units
        (ignored if the model has no state token); instruction: the task text. ``guide``: sample
        the chunk with real-time chunking (`fastwam.model.rtc`) as a continuation of the plan in
        it (physical units), on the eager path."""
        t0 = time.perf_counter()
        if self.device.type == "cpu" and self.cpu_threads and torch.get_num_threads() != self.cpu_threads:
            torch.set_num_threads(self.cpu_threads)
        state = self._check_inputs(images, state, instruction)
        composite = self.camera_layout.compose(images)  # [H, W, 3] uint8
        video = composite_to_tensor(composite)[None, :, None].to(self.device)  # [1, 3, 1, H, W]
        state_t = None
        if state is not None:
            state_n = self.normalizer.normalize("state", state)
            state_t = torch.as_tensor(state_n, dtype=torch.float32, device=self.device)[None]
        self._sync()
        t1 = time.perf_counter()
        text = self._instruction_context(instruction)
        uncond = self._uncond_context() if self.cfg_scale != 1.0 else None
        self._sync()
        t2 = time.perf_counter()
        latents = self.components.encode_video(video)  # [1, C, 1, h, w]
        self._sync()
        t3 = time.perf_counter()
        cond = self.model.with_state(text, state_t)
        uncond = self.model.with_state(uncond, state_t) if uncond is not None else None
        if guide is None:
            actions, phases = self.model.infer(
                latents,
                cond,
                uncond,
                steps=self.num_inference_steps,
                cfg_scale=self.cfg_scale,
                generator=generator,
                sync=self._sync,
                samples=self.num_action_samples,
            )
        else:
            target, weights = guide.padded(
                self.action_horizon, self.device, lambda a: self.normalizer.normalize("action", a)
            )
            actions, phases = rtc.infer_guided(
                self.model, latents, cond, uncond, target, weights, guide.max_guidance_weight,
                steps=self.num_inference_steps, cfg_scale=self.cfg_scale, generator=generator,
                samples=self.num_action_samples, sync=self._sync,
            )  # fmt: skip
        actions = actions[0].double().cpu().numpy()
        actions = np.asarray(self.normalizer.unnormalize("action", actions), dtype=np.float64)
        t4 = time.perf_counter()
        if not np.isfinite(actions).all():
            raise RuntimeError("model produced non-finite actions")
        timings = {
            "preprocess": (t1 - t0) * 1e3,
            "text_encode": (t2 - t1) * 1e3,
            "vae_encode": (t3 - t2) * 1e3,
            "prefix": phases["prefix"],
            "action": phases["action"],
            "total": (t4 - t0) * 1e3,
        }
        return PolicyOutput(actions=actions, timings_ms=timings)
