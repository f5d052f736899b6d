"""Mixture-of-Transformers layer loop with one shared self-attention and a K/V cache.

diffusers' ``WanTransformerBlock.forward`` takes no attention mask, so this module re-implements
the block from its submodules, op for op in the order and dtypes of diffusers 0.42.1
(``transformer_wan.py``): AdaLN modulation from ``scale_shift_table + temb`` (fp32), ``norm1`` ->
``attn1.to_q/to_k/to_v`` -> ``norm_q/norm_k`` (RMS across heads) -> RoPE -> attention -> ``to_out``
-> gated residual; ``norm2`` -> cross-attention ``attn2`` to the context -> residual; ``norm3`` ->
modulated ``ffn`` -> gated residual. With a single branch and no mask this equals the stock forward
(tested to 1e-5 in fp32).

Each branch (video, action expert) keeps its own modulation, projections, norms and RoPE; the
queries/keys/values of all branches are concatenated along the sequence for ONE
``F.scaled_dot_product_attention`` with an optional boolean mask (True = may attend), and the
output is split back to each branch's ``to_out``. Tensors are [B, heads, N, head_dim] inside.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

Rope = tuple[torch.Tensor, torch.Tensor]  # (cos, sin), each [1, N, 1, head_dim]


def modulation(table: torch.Tensor, temb_proj: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """scale_shift_table [1, 6, D] + temb_proj ([B, 6, D] per sample or [B, N, 6, D] per token)
    -> (shift, scale, gate, c_shift, c_scale, c_gate), each [B, 1, D] or [B, N, D], fp32."""
    if temb_proj.ndim == 4:
        parts = (table.unsqueeze(0) + temb_proj.float()).chunk(6, dim=2)
        return tuple(p.squeeze(2) for p in parts)
    return (table + temb_proj.float()).chunk(6, dim=1)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """diffusers' Wan RoPE on x [B, N, H, D] (interleaved pairs)."""
    x1, x2 = x.unflatten(-1, (-1, 2)).unbind(-1)
    cos = cos[..., 0::2]
    sin = sin[..., 1::2]
    out = torch.empty_like(x)
    out[..., 0::2] = x1 * cos - x2 * sin
    out[..., 1::2] = x1 * sin + x2 * cos
    return out.type_as(x)


def self_qkv(attn, x: torch.Tensor, rope: Rope | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """x [B, N, D] -> q, k, v [B, heads, N, head_dim] (normed, rotated)."""
    q = attn.norm_q(attn.to_q(x)).unflatten(2, (attn.heads, -1))
    k = attn.norm_k(attn.to_k(x)).unflatten(2, (attn.heads, -1))
    v = attn.to_v(x).unflatten(2, (attn.heads, -1))
    if rope is not None:
        q = apply_rope(q, *rope)
        k = apply_rope(k, *rope)
    return q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)


def cross_kv(attn, context: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Cross-attention K/V of a projected context [B, L, D] -> [B, heads, L, head_dim] each.
    Per-token, so K/V of [text; state] == cat(K/V of text, K/V of state) (cacheable per text)."""
    k = attn.norm_k(attn.to_k(context)).unflatten(2, (attn.heads, -1)).transpose(1, 2)
    v = attn.to_v(context).unflatten(2, (attn.heads, -1)).transpose(1, 2)
    return k, v


def merge_heads(o: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """[B, heads, N, head_dim] -> [B, N, heads * head_dim] in ``like``'s dtype."""
    return o.transpose(1, 2).flatten(2, 3).type_as(like)


def cross_attend(attn, x: torch.Tensor, kv: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    q = attn.norm_q(attn.to_q(x)).unflatten(2, (attn.heads, -1)).transpose(1, 2)
    o = F.scaled_dot_product_attention(q, kv[0], kv[1])
    o = merge_heads(o, q)
    return attn.to_out[1](attn.to_out[0](o))


@dataclass
class Stream:
    """One branch's tokens in one layer call."""

    x: torch.Tensor  # [B, N, D] residual stream
    temb_proj: torch.Tensor  # [B, 6, D] or [B, N, 6, D]
    rope: Rope | None
    context_kv: tuple[torch.Tensor, torch.Tensor] | None = None  # precomputed cross K/V (cache)
    context: torch.Tensor | None = None  # projected context [B, L, D] when context_kv is None


def prefix_kv(block, s: Stream) -> tuple[torch.Tensor, torch.Tensor]:
    """Only the self-attention K/V of a branch (what a cache needs from a prefix's last layer)."""
    shift, scale = modulation(block.scale_shift_table, s.temb_proj)[:2]
    n = (block.norm1(s.x.float()) * (1 + scale) + shift).type_as(s.x)
    attn = block.attn1
    k = attn.norm_k(attn.to_k(n)).unflatten(2, (attn.heads, -1))
    v = attn.to_v(n).unflatten(2, (attn.heads, -1))
    if s.rope is not None:
        k = apply_rope(k, *s.rope)
    return k.transpose(1, 2), v.transpose(1, 2)


def pre_attention(block, s: Stream):
    """Modulated norm1 + q/k/v of one branch. Returns (q, k, v, mods)."""
    mods = modulation(block.scale_shift_table, s.temb_proj)
    shift, scale = mods[0], mods[1]
    n = (block.norm1(s.x.float()) * (1 + scale) + shift).type_as(s.x)
    q, k, v = self_qkv(block.attn1, n, s.rope)
    return q, k, v, mods


def post_attention(block, s: Stream, o: torch.Tensor, q: torch.Tensor, mods) -> torch.Tensor:
    """to_out + gated residual, cross-attention, modulated FFN. o [B, heads, N, head_dim]."""
    _, _, gate, c_shift, c_scale, c_gate = mods
    x = s.x
    attn_out = block.attn1.to_out[1](block.attn1.to_out[0](merge_heads(o, q)))
    x = (x.float() + attn_out * gate).type_as(x)
    kv = s.context_kv if s.context_kv is not None else cross_kv(block.attn2, s.context)
    n = block.norm2(x.float()).type_as(x)
    x = x + cross_attend(block.attn2, n, kv)
    n = (block.norm3(x.float()) * (1 + c_scale) + c_shift).type_as(x)
    ff = block.ffn(n)
    return (x.float() + ff.float() * c_gate).type_as(x)


def shared_layer(
    blocks: list, streams: list[Stream], mask: torch.Tensor | None
) -> tuple[list[torch.Tensor], list[tuple[torch.Tensor, torch.Tensor]]]:
    """One MoT layer over several branches with a shared attention.

    ``mask``: bool [N_total, N_total] over the concatenated streams (None = full attention).
    Returns the new residual streams and each branch's (k, v) (for caching).
    """
    pre = [pre_attention(b, s) for b, s in zip(blocks, streams)]
    if len(pre) == 1:
        q, k, v = pre[0][:3]
    else:
        q = torch.cat([p[0] for p in pre], dim=2)
        k = torch.cat([p[1] for p in pre], dim=2)
        v = torch.cat([p[2] for p in pre], dim=2)
    o = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    sizes = [s.x.shape[1] for s in streams]
    outs = o.split(sizes, dim=2) if len(sizes) > 1 else (o,)
    new = [post_attention(b, s, oi, p[0], p[3]) for b, s, oi, p in zip(blocks, streams, outs, pre)]
    return new, [(p[1], p[2]) for p in pre]
