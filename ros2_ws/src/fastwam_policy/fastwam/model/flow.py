"""Flow matching: t sampling, noising, masked loss, Euler sigma grid, classifier-free guidance.

Convention (paper eq. 5-6): ``y_t = (1 - t) y + t eps``, t in [0, 1] (1 = pure noise), the network
predicts the velocity ``eps - y``; sampling integrates from t = 1 to t = 0 with Euler steps
``y <- y + (t_next - t) v``. The DiTs embed ``1000 t`` (the scale Wan2.2 was trained with).
"""

from __future__ import annotations

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


def masked_mse(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean squared error over the elements where ``mask`` (broadcast from the left) is True."""
    m = mask.view(*mask.shape, *([1] * (pred.ndim - mask.ndim))).to(pred.dtype)
    m = m.expand_as(pred)
    return ((pred.float() - target.float()) ** 2 * m).sum() / m.sum().clamp_min(1.0)


def sigma_grid(steps: int, shift: float = 1.0, device: torch.device | str = "cpu") -> torch.Tensor:
    """steps + 1 decreasing times from 1 to 0 (uniform grid passed through ``shift_sigma``)."""
    u = torch.linspace(1.0, 0.0, steps + 1, device=device, dtype=torch.float64)
    return shift_sigma(u, shift).float()


def cfg_combine(v_cond: torch.Tensor, v_uncond: torch.Tensor, scale: float) -> torch.Tensor:
    """Classifier-free guidance: v_u + s (v_c - v_u) (s = 1 gives v_c)."""
    return v_uncond + scale * (v_cond - v_uncond)
