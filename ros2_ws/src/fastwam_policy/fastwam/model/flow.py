"""Flow matching: t sampling, noising, masked loss, Euler sigma grid and loop, classifier-free guidance.

Convention (paper eq. 5-6): ``y_t = (1 - t) y + t eps``, t in [0, 1] (1 = pure noise), the network
predicts the velocity ``eps - y``; sampling integrates from t = 1 to t = 0 with Euler steps
``y <- y + (t_next - t) v``. The DiTs embed ``1000 t`` (the scale Wan2.2 was trained with).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

TIMESTEP_SCALE = 1000.0


def shift_sigma(u: torch.Tensor, shift: float) -> torch.Tensor:
    """sigma = s u / (1 + (s - 1) u): s > 1 moves mass towards high noise."""
    return shift * u / (1.0 + (shift - 1.0) * u)


def sample_t(
    n: int,
    distribution: str,
    *,
    shift: float = 5.0,
    mean: float = 0.0,
    std: float = 1.0,
    generator: torch.Generator | None = None,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """n training times in (0, 1): ``logit_normal`` (paper) or ``shifted_uniform`` (authors' code)."""
    if distribution == "logit_normal":
        z = torch.randn(n, generator=generator, device=device) * std + mean
        return torch.sigmoid(z)
    if distribution == "shifted_uniform":
        u = torch.rand(n, generator=generator, device=device)
        return shift_sigma(u, shift)
    raise ValueError(f"unknown timestep distribution {distribution!r}")


def add_noise(y: torch.Tensor, eps: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """y_t = (1 - t) y + t eps, t broadcast from the left ([B] -> [B, 1, ...])."""
    t = t.view(*t.shape, *([1] * (y.ndim - t.ndim))).to(y.dtype)
    return (1.0 - t) * y + t * eps


def per_sample_mse(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """[B]: each sample's mean squared error over its valid elements (``mask`` [B, ...] broadcast
    from the left; a sample with none valid gives 0). The authors reduce both losses this way
    (per token, then over the valid tokens of a sample), so a loss weight can be per sample."""
    m = mask.view(*mask.shape, *([1] * (pred.ndim - mask.ndim))).to(torch.float32).expand_as(pred)
    err = (pred.float() - target.float()) ** 2 * m
    return err.flatten(1).sum(1) / m.flatten(1).sum(1).clamp_min(1.0)


def loss_weight(t: torch.Tensor, weighting: str, shift: float = 5.0) -> torch.Tensor:
    """Per-sample loss weight for training times t [B].

    ``none``: 1 (the paper). ``timestep_bell``: the authors' code (``WanContinuousFlowMatchScheduler.
    training_weight``): y(t) = exp(-2 (t - 1/2)^2), minus its minimum over their 1000-point training
    grid t_k = shift_sigma(u_k) (u_k = 1, 1 - 1/1000, ..., 1/1000), divided by the grid mean of that
    difference: zero at the grid point farthest from 1/2 (t = 1), mean one over the grid, highest
    at t = 1/2.
    """
    if weighting == "none":
        return torch.ones_like(t, dtype=torch.float32)
    if weighting != "timestep_bell":
        raise ValueError(f"unknown loss weighting {weighting!r}; expected one of {LOSS_WEIGHTINGS}")
    u = torch.linspace(1.0, 0.0, 1001, dtype=torch.float64)[:-1]
    grid = torch.exp(-2.0 * (shift_sigma(u, shift) - 0.5) ** 2)
    y_min = grid.min()
    norm = (grid - y_min).mean()
    y = torch.exp(-2.0 * (t.double() - 0.5) ** 2)
    return ((y - y_min) / (norm + 1e-10)).float()


LOSS_WEIGHTINGS = ("none", "timestep_bell")


def sigma_grid(steps: int, shift: float = 1.0, device: torch.device | str = "cpu") -> torch.Tensor:
    """steps + 1 decreasing times from 1 to 0 (uniform grid passed through ``shift_sigma``)."""
    u = torch.linspace(1.0, 0.0, steps + 1, device=device, dtype=torch.float64)
    return shift_sigma(u, shift).float()


def cfg_combine(v_cond: torch.Tensor, v_uncond: torch.Tensor, scale: float) -> torch.Tensor:
    """Classifier-free guidance: v_u + s (v_c - v_u) (s = 1 gives v_c)."""
    return v_uncond + scale * (v_cond - v_uncond)


def guided(velocity: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, scale: float) -> torch.Tensor:
    """The CFG velocity at x: ``velocity`` on one batch [x; x] whose second half the caller's
    context makes unconditional, combined (scale 1: the conditional pass alone, no second half)."""
    if scale == 1.0:
        return velocity(x)
    vc, vu = velocity(torch.cat([x, x])).chunk(2)
    return cfg_combine(vc, vu, scale)


def euler(
    velocity: Callable[[torch.Tensor, int], torch.Tensor], x: torch.Tensor, sigmas: torch.Tensor
) -> torch.Tensor:
    """The sampler: Euler steps ``x <- x + (sigmas[i + 1] - sigmas[i]) velocity(x, i)`` from
    sigmas[0] (1, noise) to sigmas[-1] (0, data). ``velocity`` gets the step index (the static
    loop's precomputed modulation is per step); ``sigmas[i]`` is its time."""
    for i in range(len(sigmas) - 1):
        x = x + (sigmas[i + 1] - sigmas[i]) * velocity(x, i)
    return x
