"""Mixture-of-Transformers layer: several branches, each its own Wan block, one shared attention.

Each branch (video, action expert) keeps its own modulation, projections, norms and RoPE
(``block.attention_inputs`` / ``block.after_attention`` over its block's weights); the
queries/keys/values of all branches are concatenated along the sequence for ONE
``F.scaled_dot_product_attention`` with an optional boolean mask (True = may attend), and the
output is split back to each branch. With a single branch and no mask this is the stock diffusers
block (tested to 1e-5 in fp32). Tensors are [B, heads, N, head_dim] inside.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from fastwam.model.block import (
    BlockConstants,
    BlockWeights,
    Rope,
    after_attention,
    attention_inputs,
    cross_kv,
    folded_modulation,
)


@dataclass
class Stream:
    """One branch's tokens in one layer call."""

    x: torch.Tensor  # [B, N, D] residual stream
    temb_proj: torch.Tensor  # [B, 1, 6, D] per sample or [B, N, 6, D] per token
    rope: Rope | None  # (C, S) tables [1, N, 1, head_dim] (embed.rope_tables)
    context_kv: tuple[torch.Tensor, torch.Tensor] | None = None  # precomputed cross K/V (cache)
    context: torch.Tensor | None = None  # projected context [B, L, D] when context_kv is None


def shared_layer(blocks: list, streams: list[Stream], mask: torch.Tensor | None) -> list[torch.Tensor]:
    """One MoT layer over several branches with a shared attention -> the new residual streams.

    ``blocks``: each branch's block module (its weights are read here, at call time, so that FSDP's
    gathered parameters and autograd see them); ``mask``: bool [N_total, N_total] over the
    concatenated streams (None = full attention)."""
    weights = [BlockWeights.of(b) for b in blocks]
    consts = [BlockConstants.of(b) for b in blocks]
    mods = [folded_modulation(w.table, s.temb_proj) for w, s in zip(weights, streams)]
    pre = [attention_inputs(w, c, s.x, m, s.rope) for w, c, s, m in zip(weights, consts, streams, mods)]
    q, k, v = (torch.cat(parts, dim=2) if len(pre) > 1 else parts[0] for parts in zip(*pre))
    o = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    outs = o.split([s.x.shape[1] for s in streams], dim=2) if len(streams) > 1 else (o,)
    return [
        after_attention(
            w, c, s.x, oi, m, s.context_kv if s.context_kv is not None else cross_kv(w, c, s.context)
        )
        for w, c, s, oi, m in zip(weights, consts, streams, outs, mods)
    ]
