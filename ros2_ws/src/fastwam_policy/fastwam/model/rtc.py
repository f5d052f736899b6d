"""Real-Time Chunking: the next action chunk sampled as an inpainting of the plan being executed.

Black, Galliker, Levine, "Real-Time Execution of Action Chunking Flow Policies" (arXiv 2506.07339,
NeurIPS 2025). While a chunk is predicted the robot keeps executing the previous plan, so the new
chunk's first ``d`` steps (the inference delay, in control steps) are already decided: they are
frozen to the previous plan, the overlap after them is guided towards it with weights that decay,
and the rest is free. The guidance is pseudo-inverse guidance (PiGDM) on the flow's predicted clean
chunk, with no retraining, so it works with any checkpoint.

Our flow convention (`fastwam.model.flow`): ``y_t = (1 - t) y + t eps`` (t = 1 noise, t = 0 data),
the network predicts ``v = eps - y`` and Euler integrates from t = 1 to 0. The paper's time is
``tau = 1 - t`` and its velocity ``-v``. At each step, for the current x_t:

    y0_hat = x_t - t v(x_t)                              predicted clean chunk
    e      = W * (Y - y0_hat)                            Y: previous plan on the new chunk's steps
    g      = e^T d y0_hat / d x_t                        one vector-Jacobian product (autograd)
    v_rtc  = v - min(beta, ((1 - t)^2 + t^2) / ((1 - t) t)) g

which is the paper's guided velocity (its eq. with ``r_tau^2 = (1 - tau)^2 / (tau^2 + (1 - tau)^2)``
and the weight ``min(beta, (1 - tau) / (tau r_tau^2))``) with tau = 1 - t and the sign of our
velocity; the same weight as LeRobot's ``RTCProcessor.denoise_step`` (huggingface/lerobot,
src/lerobot/policies/rtc/modeling_rtc.py, lines 155-159 at commit 00f4c86). The soft mask W is
`prefix_weights`. Only the action expert is differentiated: the video prefix's cached K/V are
constants (detached), so one step costs a forward and a backward pass of the expert. The prefix and
the velocity are the static action loop's (``ActionLoop.prefill`` / ``ActionLoop.velocity``), so
with no guidance the chunk is the one plain sampling draws.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from fastwam.model import flow
from fastwam.model.context import Context
from fastwam.model.fastwam import FastWAM
from fastwam.model.variants import RTC_VARIANTS, variant_rules

SCHEDULES = ("linear", "exp", "ones", "zeros")
# The paper clips the guidance weight at beta = 5 in its experiments; LeRobot's RTCConfig defaults to
# 10 (configuration_rtc.py, max_guidance_weight). Larger follows the previous plan more closely.
DEFAULT_MAX_GUIDANCE_WEIGHT = 5.0


def prefix_weights(delay: int, execution_horizon: int, horizon: int, schedule: str = "exp") -> np.ndarray:
    """The soft mask W [horizon] over the new chunk's steps.

    1 for the first ``delay`` steps (executed from the previous plan while the chunk is predicted),
    then over the overlap up to ``execution_horizon`` (the steps the previous plan still covers):
    ``linear`` c_i = (end - i) / (end - d + 1), ``exp`` c_i (e^c_i - 1) / (e - 1) (the paper's
    soft mask, with end = H - s in its notation), ``ones`` 1, ``zeros`` 0 (a hard mask of the
    delay alone); 0 from ``execution_horizon`` on. As LeRobot's ``get_prefix_weights``
    (modeling_rtc.py lines 169-190 at commit 00f4c86): the delay is capped at the horizon end.
    """
    if schedule not in SCHEDULES:
        raise ValueError(f"unknown RTC schedule {schedule!r}; expected one of {SCHEDULES}")
    if horizon < 1:
        raise ValueError(f"horizon must be at least 1, got {horizon}")
    end = min(max(int(execution_horizon), 0), horizon)
    d = min(max(int(delay), 0), end)
    w = np.zeros(horizon, dtype=np.float64)
    if schedule == "ones":
        w[:end] = 1.0
        return w
    w[:d] = 1.0
    if schedule == "zeros" or end <= d:
        return w
    i = np.arange(d, end, dtype=np.float64)
    c = (end - i) / (end - d + 1.0)
    w[d:end] = c if schedule == "linear" else c * np.expm1(c) / (math.e - 1.0)
    return w


def guidance_weight(t: float, max_weight: float) -> float:
    """min(beta, ((1 - t)^2 + t^2) / ((1 - t) t)) at flow time t (1 noise, 0 data); beta at the
    ends, where the unclipped weight is infinite. 0 when beta is 0 (plain sampling)."""
    if max_weight <= 0.0:
        return 0.0
    t = float(t)
    if t <= 0.0 or t >= 1.0:
        return float(max_weight)
    return float(min(max_weight, ((1.0 - t) ** 2 + t**2) / ((1.0 - t) * t)))


@dataclass(frozen=True)
class ChunkGuide:
    """What the next chunk must continue: ``target`` [n, A] the previous plan at the new chunk's
    first n steps (n <= horizon; physical units in `FastWAMPolicy.predict`, normalised in
    `sample_guided`) and the soft mask ``weights`` [horizon] (0 from n on)."""

    target: np.ndarray
    weights: np.ndarray
    max_guidance_weight: float = DEFAULT_MAX_GUIDANCE_WEIGHT

    def __post_init__(self) -> None:
        target, weights = np.asarray(self.target), np.asarray(self.weights)
        if target.ndim != 2 or weights.ndim != 1 or target.shape[0] > weights.shape[0]:
            raise ValueError(
                f"RTC guide needs target [n, A] and weights [H] with n <= H, got {target.shape} and "
                f"{weights.shape}"
            )
        if not (np.isfinite(target).all() and np.isfinite(weights).all()):
            raise ValueError("RTC guide has non-finite values")
        if self.max_guidance_weight < 0:
            raise ValueError(f"max_guidance_weight must be >= 0, got {self.max_guidance_weight}")

    @classmethod
    def for_plan(
        cls,
        plan: np.ndarray,
        delay: int,
        execution_horizon: int,
        horizon: int,
        schedule: str = "exp",
        max_guidance_weight: float = DEFAULT_MAX_GUIDANCE_WEIGHT,
    ) -> ChunkGuide:
        """The guide for a previous plan [n, A] on the new chunk's steps: the weights end where the
        plan ends (``execution_horizon`` <= 0: there; otherwise the smaller of the two)."""
        n = min(len(plan), horizon)
        end = n if execution_horizon <= 0 else min(execution_horizon, n)
        weights = prefix_weights(delay, end, horizon, schedule)
        return cls(np.asarray(plan, dtype=np.float64)[:n], weights, float(max_guidance_weight))

    def padded(self, horizon: int, device, normalize: Callable[[np.ndarray], np.ndarray] | None = None):
        """(target [H, A], weights [H, 1]) fp32 tensors, the target normalised and zero-padded."""
        target = np.asarray(self.target, dtype=np.float64)
        if normalize is not None:
            target = np.asarray(normalize(target), dtype=np.float64)
        full = np.zeros((horizon, target.shape[1]), dtype=np.float32)
        full[: len(target)] = target
        weights = np.asarray(self.weights, dtype=np.float32)[:horizon].copy()
        weights[len(target) :] = 0.0  # no target there
        return (
            torch.as_tensor(full, device=device),
            torch.as_tensor(weights, device=device)[:, None],
        )


Velocity = Callable[[torch.Tensor, int], torch.Tensor]  # (x [B, H, A], Euler step i) -> v at sigmas[i]


def guided_velocity(
    velocity: Velocity,
    x: torch.Tensor,
    step: int,
    t: torch.Tensor,
    target: torch.Tensor,
    weights: torch.Tensor,
    beta: float,
) -> torch.Tensor:
    """v_rtc at (x, t = sigmas[step]) (module docstring); plain v when the clipped weight is 0 (no
    backward pass)."""
    w = guidance_weight(float(t), beta)
    if w == 0.0:
        return velocity(x, step)
    with torch.enable_grad():
        x = x.detach().requires_grad_(True)
        v = velocity(x, step)
        y0 = x - t.to(v.dtype) * v
        error = (target - y0) * weights
        (g,) = torch.autograd.grad(y0, x, grad_outputs=error.to(y0.dtype))
    return v.detach() - w * g


def sample_guided(
    velocity: Velocity,
    noise: torch.Tensor,
    sigmas: torch.Tensor,
    target: torch.Tensor,
    weights: torch.Tensor,
    beta: float,
) -> torch.Tensor:
    """Euler integration (``flow.euler``) from t = sigmas[0] (1) to sigmas[-1] (0) with the guided
    velocity -> fp32. target [H, A] (normalised) and weights [H, 1] broadcast over the batch of
    noise [B, H, A]."""

    def guided(x: torch.Tensor, i: int) -> torch.Tensor:
        return guided_velocity(velocity, x, i, sigmas[i], target, weights, beta)

    return flow.euler(guided, noise.float(), sigmas)


def infer_guided(
    model: FastWAM,
    first_latents: torch.Tensor,
    cond: Context,
    uncond: Context | None,
    target: torch.Tensor,
    weights: torch.Tensor,
    beta: float,
    *,
    steps: int | None = None,
    cfg_scale: float | None = None,
    generator: torch.Generator | None = None,
    noise: torch.Tensor | None = None,
    samples: int = 1,
    sync: Callable[[], None] | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """`FastWAM.infer` with RTC guidance: actions [1, H, A] (normalised, fp32, the mean of
    ``samples`` guided draws from ``noise`` [samples, H, A] or the generator) and timings_ms
    {"prefix", "action"}.

    The prefix runs once, as plain sampling runs it (the static `ActionLoop`'s prefill, captured
    or compiled per ``model.compile_mode``); the guided steps call the loop's velocity eagerly
    with autograd. Only the variants whose prefix is the observation alone (fast_wam, no_cotrain)
    have a prefix to keep constant."""
    cfg = model.config
    if not variant_rules(cfg.variant).realtime_chunking:
        raise ValueError(
            f"real-time chunking needs a cached-prefix variant ({', '.join(RTC_VARIANTS)}), not {cfg.variant!r}"
        )
    if first_latents.shape[0] != 1:
        raise ValueError(
            f"real-time chunking predicts one chunk at a time, got batch {first_latents.shape[0]}"
        )

    def sample(loop, noise: torch.Tensor) -> torch.Tensor:
        return sample_guided(
            loop.velocity, noise, loop.sigmas, target.float(), weights.float(), beta
        ).detach()

    return model.infer(
        first_latents, cond, uncond, steps=steps, cfg_scale=cfg_scale, generator=generator, sync=sync,
        samples=samples, noise=noise, sampler=sample,
    )  # fmt: skip


def delay_steps(latencies_s: list[float], rate_hz: float, horizon: int) -> int:
    """The inference delay d in control steps from measured observation-to-merge latencies: the
    median of the recent ones, rounded up (a delay estimated one step long freezes one step more of
    the old plan, which the robot was following anyway; one too short leaves a step of it only
    softly guided). The median ignores a single slow chunk; the warm-up runs never enter (they are
    not merged), so a slow first inference cannot freeze most of the chunk. 0 with no measurement."""
    if not latencies_s:
        return 0
    d = math.ceil(float(np.median(latencies_s)) * rate_hz - 1e-9)
    return int(min(max(d, 0), horizon - 1))
