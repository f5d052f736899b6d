"""What the model's passes read besides the tokens: the cross-attention context and the K/V cache.

Its own module so that the model (``fastwam.py``), the static action loop (``action_loop.py``) and
real-time chunking (``rtc.py``) share the types without importing one another.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

KV = tuple[torch.Tensor, torch.Tensor]


@dataclass
class Context:
    """Cross-attention context of both branches, either as projected tokens (training) or as
    per-layer K/V (inference cache). Batch-first; ``cat`` stacks cond/uncond for CFG."""

    video_kv: list[KV] | None = None
    expert_kv: list[KV] | None = None
    video_ctx: torch.Tensor | None = None  # [B, L, D_video]
    expert_ctx: torch.Tensor | None = None  # [B, L, D_action]

    def video_stream_kwargs(self, layer: int) -> dict:
        if self.video_kv is not None:
            return {"context_kv": self.video_kv[layer]}
        return {"context": self.video_ctx}

    def expert_stream_kwargs(self, layer: int) -> dict:
        if self.expert_kv is not None:
            return {"context_kv": self.expert_kv[layer]}
        return {"context": self.expert_ctx}

    @staticmethod
    def cat(items: list[Context]) -> Context:
        def cat_kv(lists):
            return [
                (torch.cat([x[i][0] for x in lists]), torch.cat([x[i][1] for x in lists]))
                for i in range(len(lists[0]))
            ]

        first = items[0]
        return Context(
            video_kv=cat_kv([c.video_kv for c in items]) if first.video_kv is not None else None,
            expert_kv=cat_kv([c.expert_kv for c in items]) if first.expert_kv is not None else None,
            video_ctx=torch.cat([c.video_ctx for c in items]) if first.video_ctx is not None else None,
            expert_ctx=torch.cat([c.expert_ctx for c in items]) if first.expert_ctx is not None else None,
        )


@dataclass
class ActionCache:
    """Everything an action step reads: static shapes, preallocated K/V buffers (CUDA-graph ready)."""

    k: list[torch.Tensor]  # per layer [B, heads, N_prefix + H, head_dim]; prefix part filled once
    v: list[torch.Tensor]
    n_prefix: int
    expert_kv: list[KV]  # per layer cross-attention K/V of [instruction; state]
    rope: tuple[torch.Tensor, torch.Tensor]  # action RoPE (cos, sin) [1, H, 1, head_dim]
