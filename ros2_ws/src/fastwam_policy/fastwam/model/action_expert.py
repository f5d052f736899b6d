"""The action expert: a narrow DiT with the video DiT's depth and attention geometry.

Every block mirrors diffusers' ``WanTransformerBlock`` (same submodule names: ``norm1``, ``attn1``,
``attn2``, ``norm2``, ``ffn``, ``norm3``, ``scale_shift_table``) but with hidden size ``d_a``
(1024 full size) and FFN ``4 d_a``, while the attention keeps the video's ``heads x head_dim``
(24 x 128 = 3072): q/k/v project d_a -> 3072 and ``to_out`` 3072 -> d_a, so the expert's tokens can
join the video tokens in one shared attention. The expert has its own timestep embedding and text
projection (``condition_embedder``, same layout as the video's), an action input projection
(``action_in``) and an output head ``proj_out``: a bare ``Linear(d_a, action_dim)``, as in the
authors' code (``ActionDiT.head``; no final norm and no modulation table, unlike the video head).

Actions carry their own RoPE: a 1-D rotary embedding over the whole head dim (theta 1e4) at positions
0..H-1 (``action_rope``), as the authors' ``ActionDiT.freqs``; video tokens keep Wan's 3-D RoPE.

Initialisation (``FastWAMConfig.action_init``):

* ``"random"``: diffusers' default initialisation.
* ``"from_video"``: every tensor whose name also exists in the video DiT is a *resized* copy of the
  video tensor: linear interpolation (``align_corners=True``) along each dimension whose size
  differs, then multiplication by ``alpha = sqrt(d_src / d_tgt)`` for 2-D weights whose *input*
  dimension (dim 1) shrinks from ``d_src`` to ``d_tgt`` (a row of ``d_tgt`` interpolated weights
  sums ``d_tgt`` inputs instead of ``d_src``; for i.i.d. inputs the output std shrinks by
  ``sqrt(d_tgt / d_src)``) and for the blocks' AdaLN modulation tables (``blocks.N.scale_shift_table``,
  by the hidden size's ratio), as the authors' "linear_interp ... alphascale" expert init does.
  Tensors without a video counterpart stay random: ``action_in``, and the head ``proj_out`` (the
  video DiT's ``proj_out`` is its latent-patch head, not taken for actions).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from diffusers.models.attention import FeedForward
from diffusers.models.embeddings import get_1d_rotary_pos_embed
from diffusers.models.normalization import FP32LayerNorm
from diffusers.models.transformers.transformer_wan import WanAttention, WanTimeTextImageEmbedding
from torch import nn

from fastwam.model_config import FastWAMConfig


class ActionExpertBlock(nn.Module):
    def __init__(self, dim: int, ffn_dim: int, heads: int, head_dim: int, cross_attn_norm: bool, eps: float):
        super().__init__()
        self.norm1 = FP32LayerNorm(dim, eps, elementwise_affine=False)
        self.attn1 = WanAttention(dim=dim, heads=heads, dim_head=head_dim, eps=eps)
        self.attn2 = WanAttention(
            dim=dim, heads=heads, dim_head=head_dim, eps=eps, cross_attention_dim_head=head_dim
        )
        self.norm2 = FP32LayerNorm(dim, eps, elementwise_affine=True) if cross_attn_norm else nn.Identity()
        self.ffn = FeedForward(dim, inner_dim=ffn_dim, activation_fn="gelu-approximate")
        self.norm3 = FP32LayerNorm(dim, eps, elementwise_affine=False)
        self.scale_shift_table = nn.Parameter(torch.randn(1, 6, dim) / dim**0.5)


class ActionExpert(nn.Module):
    """Parameters only; the forward pass lives in ``fastwam.model.mot`` (shared with the video)."""

    def __init__(self, config: FastWAMConfig):
        super().__init__()
        v = config.video
        dim = config.action_hidden_dim
        self.dim = dim
        self.condition_embedder = WanTimeTextImageEmbedding(
            dim=dim, time_freq_dim=v.freq_dim, time_proj_dim=6 * dim, text_embed_dim=v.text_dim
        )
        self.action_in = nn.Linear(config.action_dim, dim)
        self.blocks = nn.ModuleList(
            [
                ActionExpertBlock(
                    dim,
                    config.action_ffn_dim,
                    v.num_attention_heads,
                    v.attention_head_dim,
                    v.cross_attn_norm,
                    v.eps,
                )
                for _ in range(v.num_layers)
            ]
        )
        self.proj_out = nn.Linear(dim, config.action_dim)  # bare head (see the module docstring)


def action_rope(horizon: int, head_dim: int, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """The action tokens' RoPE: 1-D over the whole head dim, theta 1e4, positions 0..horizon-1, as
    (cos, sin) [1, horizon, 1, head_dim] fp32 in the interleaved layout of ``mot.apply_rope``
    (diffusers' ``get_1d_rotary_pos_embed``, the function Wan's 3-D RoPE is built from)."""
    cos, sin = get_1d_rotary_pos_embed(
        head_dim,
        torch.arange(horizon),
        theta=10000.0,
        use_real=True,
        repeat_interleave_real=True,
        freqs_dtype=torch.float64,
    )
    return cos.view(1, horizon, 1, head_dim).to(device), sin.view(1, horizon, 1, head_dim).to(device)


def resize_tensor(src: torch.Tensor, shape: tuple[int, ...], scale_by_width: bool) -> torch.Tensor:
    """Resize ``src`` to ``shape`` by linear interpolation per mismatched dim, then multiply by
    ``sqrt(d_src / d_tgt)`` when ``scale_by_width`` and the last dim shrinks (see module docstring)."""
    if src.ndim != len(shape):
        raise ValueError(f"cannot resize {tuple(src.shape)} to {shape}: rank differs")
    out = src.detach().float()
    for dim, (n_src, n_tgt) in enumerate(zip(src.shape, shape)):
        if n_src == n_tgt:
            continue
        moved = out.movedim(dim, -1)
        lead = moved.shape[:-1]
        flat = moved.reshape(-1, 1, n_src)
        if n_src == 1:
            flat = flat.expand(-1, 1, n_tgt)
        else:
            flat = F.interpolate(flat, size=n_tgt, mode="linear", align_corners=True)
        out = flat.reshape(*lead, n_tgt).movedim(-1, dim)
    if scale_by_width and shape[-1] < src.shape[-1]:
        out = out * math.sqrt(src.shape[-1] / shape[-1])
    return out.to(src.dtype)


def _scaled_by_width(name: str, ndim: int) -> bool:
    """Which resized tensors get the alpha scale: 2-D weights ([out, in]: dim -1 is the input
    dimension) and the blocks' modulation tables ([1, 6, D])."""
    return (ndim == 2 and name.endswith("weight")) or (
        name.startswith("blocks.") and name.endswith("scale_shift_table")
    )


@torch.no_grad()
def init_expert_from_video(expert: ActionExpert, video: nn.Module) -> list[str]:
    """Copy resized video DiT tensors into the expert; returns the names that were initialised."""
    video_state = video.state_dict()
    done = []
    for name, param in expert.named_parameters():
        src = video_state.get(name)
        if src is None or name.startswith("proj_out."):
            continue
        param.copy_(resize_tensor(src, tuple(param.shape), _scaled_by_width(name, src.ndim)))
        done.append(name)
    return done
