"""The Fast-WAM model: Wan2.2 video DiT + action expert joined by a shared-attention MoT."""

from __future__ import annotations

from fastwam.model.context import ActionCache, Context
from fastwam.model.fastwam import FastWAM
from fastwam.model.wan import WanComponents, build_random_components, latent_frame_mask

__all__ = [
    "ActionCache",
    "Context",
    "FastWAM",
    "WanComponents",
    "build_random_components",
    "latent_frame_mask",
]
