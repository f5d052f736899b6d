"""Into and out of the token streams: timestep embedding, latent patches, RoPE, the video head.

Functions of diffusers' modules (the video DiT's ``condition_embedder``, ``patch_embedding``,
``rope``, ``norm_out`` / ``proj_out``; the expert's ``condition_embedder``), each written once and
used by the training forward, the cached prefix and the static action loop alike.
"""

from __future__ import annotations

import torch
from torch import nn

from fastwam.model.flow import TIMESTEP_SCALE


def time_embedding(
    embedder: nn.Module, t: torch.Tensor, like: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """t in [0, 1], any shape S -> temb [*S, D], temb_proj [*S, 6 D] (diffusers' dtype handling:
    ``WanTimeTextImageEmbedding.forward`` casts the sinusoids to the embedder's dtype)."""
    shape = t.shape
    ts = embedder.timesteps_proj((t * TIMESTEP_SCALE).flatten()).unflatten(0, shape)
    emb_dtype = next(iter(embedder.time_embedder.parameters())).dtype
    if ts.dtype != emb_dtype:
        ts = ts.to(emb_dtype)
    temb = embedder.time_embedder(ts).type_as(like)
    return temb, embedder.time_proj(embedder.act_fn(temb))


def token_grid(video: nn.Module, latents: torch.Tensor) -> tuple[int, int]:
    """Tokens per row and column of latents [B, C, F, h, w] (the DiT's spatial patch size)."""
    _, p_h, p_w = video.config.patch_size
    return latents.shape[-2] // p_h, latents.shape[-1] // p_w


def patchify(video: nn.Module, latents: torch.Tensor) -> torch.Tensor:
    """latents [B, C, F, h, w] (in the DiT's dtype) -> tokens [B, N, D], frame-major."""
    return video.patch_embedding(latents).flatten(2).transpose(1, 2).contiguous()


def video_rope(video: nn.Module, num_frames: int, hp: int, wp: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Wan's 3-D RoPE of frames 0..num_frames-1 of an hp x wp token grid: (cos, sin) [1, N, 1, hd]."""
    p_t, p_h, p_w = video.config.patch_size
    return video.rope(torch.empty(1, 1, num_frames * p_t, hp * p_h, wp * p_w, device="meta"))


def rope_tables(cos: torch.Tensor, sin: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """diffusers' interleaved Wan RoPE as ``x * C + pair_swap(x) * S`` (``block.rotate``).

    diffusers (``WanAttnProcessor``): out[2i] = x[2i] cos[2i] - x[2i+1] sin[2i+1];
    out[2i+1] = x[2i] sin[2i+1] + x[2i+1] cos[2i]. So C[2i] = C[2i+1] = cos[2i],
    S[2i] = -sin[2i+1], S[2i+1] = sin[2i+1] (same products, same sums).
    """
    c = cos[..., 0::2]
    s = sin[..., 1::2]
    return c.repeat_interleave(2, dim=-1), torch.stack([-s, s], dim=-1).flatten(-2)


def video_head(
    video: nn.Module, x: torch.Tensor, temb: torch.Tensor, grid: tuple[int, int, int]
) -> torch.Tensor:
    """The DiT's output head (modulated ``norm_out``, ``proj_out``, unpatchify): tokens [B, N, D]
    with per-token temb [B, N, D] -> velocity [B, C, F, h, w] for a (frames, hp, wp) grid."""
    shift, scale = (video.scale_shift_table.unsqueeze(0) + temb.unsqueeze(2)).chunk(2, dim=2)
    x = (video.norm_out(x.float()) * (1 + scale.squeeze(2)) + shift.squeeze(2)).type_as(x)
    x = video.proj_out(x)
    p_t, p_h, p_w = video.config.patch_size
    f, hp, wp = grid
    x = x.reshape(x.shape[0], f, hp, wp, p_t, p_h, p_w, -1).permute(0, 7, 1, 4, 2, 5, 3, 6)
    return x.flatten(6, 7).flatten(4, 5).flatten(2, 3)
