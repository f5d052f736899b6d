"""The tests' oracle for the cached action path: Fast-WAM's prefix cache and Euler sampling written
module by module over diffusers' submodules, as plainly as possible and apart from the production
block (``fastwam.model.block``), so that the tests compare two implementations.

The block here follows diffusers' ``WanTransformerBlock.forward`` (diffusers 0.42.1,
``transformer_wan.py``) line for line: ``(norm1(x) * (1 + scale) + shift)``, ``attn1``'s
``to_q/to_k/to_v`` + ``norm_q/norm_k`` + diffusers' interleaved RoPE, ``to_out``, gated residual,
``norm2`` + ``attn2`` to the context, ``norm3`` + modulated ``ffn``; per-sample modulation
(t per sample), and the cache buffers ``[B, heads, N_prefix + H, head_dim]`` the loop also uses.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from fastwam.model import flow
from fastwam.model.context import ActionCache, Context
from fastwam.model.embed import time_embedding


def _modulation(block, temb_proj):
    """scale_shift_table [1, 6, D] + temb_proj [B, 6, D] -> six [B, 1, D] fp32 chunks."""
    return (block.scale_shift_table + temb_proj.float()).chunk(6, dim=1)


def _rope(x, cos, sin):
    """diffusers' Wan RoPE on x [B, N, H, D] (interleaved pairs, ``WanAttnProcessor``)."""
    x1, x2 = x.unflatten(-1, (-1, 2)).unbind(-1)
    cos = cos[..., 0::2]
    sin = sin[..., 1::2]
    out = torch.empty_like(x)
    out[..., 0::2] = x1 * cos - x2 * sin
    out[..., 1::2] = x1 * sin + x2 * cos
    return out.type_as(x)


def _self_qkv(block, temb_proj, x, rope):
    mods = _modulation(block, temb_proj)
    n = (block.norm1(x.float()) * (1 + mods[1]) + mods[0]).type_as(x)
    attn = block.attn1
    q = _rope(attn.norm_q(attn.to_q(n)).unflatten(2, (attn.heads, -1)), *rope)
    k = _rope(attn.norm_k(attn.to_k(n)).unflatten(2, (attn.heads, -1)), *rope)
    v = attn.to_v(n).unflatten(2, (attn.heads, -1))
    return q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), mods


def _rest_of_block(block, x, o, q, mods, context_kv):
    _, _, gate, c_shift, c_scale, c_gate = mods
    attn_out = block.attn1.to_out[1](block.attn1.to_out[0](o.transpose(1, 2).flatten(2, 3).type_as(q)))
    x = (x.float() + attn_out * gate).type_as(x)
    n = block.norm2(x.float()).type_as(x)
    a2 = block.attn2
    cq = a2.norm_q(a2.to_q(n)).unflatten(2, (a2.heads, -1)).transpose(1, 2)
    co = F.scaled_dot_product_attention(cq, *context_kv).transpose(1, 2).flatten(2, 3).type_as(cq)
    x = x + a2.to_out[1](a2.to_out[0](co))
    n = (block.norm3(x.float()) * (1 + c_scale) + c_shift).type_as(x)
    return (x.float() + block.ffn(n).float() * c_gate).type_as(x)


@torch.no_grad()
def build_action_cache(model, prefix_latents: torch.Tensor, ctx: Context, prefix_mask=None) -> ActionCache:
    """The video branch once over clean prefix latents [B, C, F, h, w] (t = 0 per sample), each
    layer's K/V kept in buffers with room for the H action tokens (IDM: under ``prefix_mask``)."""
    vm, cfg = model.video, model.config
    b, _, f = prefix_latents.shape[:3]
    hp, wp = model.token_grid(prefix_latents)
    x = vm.patch_embedding(prefix_latents.to(model.dtype)).flatten(2).transpose(1, 2).contiguous()
    _, proj = time_embedding(vm.condition_embedder, torch.zeros(b, device=x.device), x)
    proj = proj.unflatten(1, (6, -1))
    rope = model.video_rope(f, hp, wp)
    n_prefix, heads, hd = x.shape[1], vm.config.num_attention_heads, vm.config.attention_head_dim
    n_all = n_prefix + cfg.action_horizon
    cache = ActionCache(
        k=[x.new_zeros(b, heads, n_all, hd) for _ in vm.blocks],
        v=[x.new_zeros(b, heads, n_all, hd) for _ in vm.blocks],
        n_prefix=n_prefix,
        expert_kv=ctx.expert_kv,
        rope=model.action_rope(x.device),
    )
    for layer, block in enumerate(vm.blocks):
        q, k, v, mods = _self_qkv(block, proj, x, rope)
        cache.k[layer][:, :, :n_prefix] = k
        cache.v[layer][:, :, :n_prefix] = v
        o = F.scaled_dot_product_attention(q, k, v, attn_mask=prefix_mask)
        x = _rest_of_block(block, x, o, q, mods, ctx.video_kv[layer])
    return cache


def action_velocity(model, cache: ActionCache, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """One action-expert evaluation against the cache: x [B, H, A], t [B] -> velocity [B, H, A]."""
    ex = model.expert
    h = ex.action_in(x.to(model.dtype))
    _, proj = time_embedding(ex.condition_embedder, t, h)
    proj = proj.unflatten(1, (6, -1))
    n0 = cache.n_prefix
    for layer, block in enumerate(ex.blocks):
        q, k, v, mods = _self_qkv(block, proj, h, cache.rope)
        keys = torch.cat([cache.k[layer][:, :, :n0], k], dim=2)
        values = torch.cat([cache.v[layer][:, :, :n0], v], dim=2)
        o = F.scaled_dot_product_attention(q, keys, values)
        h = _rest_of_block(block, h, o, q, mods, cache.expert_kv[layer])
    return ex.proj_out(h).float()


@torch.no_grad()
def sample_actions(model, cache, batch_size, steps=None, cfg_scale=None, generator=None, noise=None):
    """Euler from t = 1 to 0 against a cache -> [B, H, A] fp32, written out step by step. With
    cfg_scale != 1 the cache holds [cond; uncond] (batch 2B)."""
    cfg = model.config
    steps = steps or cfg.num_inference_steps
    scale = cfg.cfg_scale if cfg_scale is None else cfg_scale
    if noise is None:
        shape = (batch_size, cfg.action_horizon, cfg.action_dim)
        dev = generator.device if generator is not None else model.device
        noise = torch.randn(shape, generator=generator, device=dev).to(model.device)
    x = noise.float()
    sig = flow.sigma_grid(steps, cfg.sample_shift, device=model.device)
    for i in range(steps):
        if scale == 1.0:
            v = action_velocity(model, cache, x, sig[i].expand(x.shape[0]))
        else:
            vc, vu = action_velocity(model, cache, torch.cat([x, x]), sig[i].expand(2 * x.shape[0])).chunk(2)
            v = vu + scale * (vc - vu)
        x = x + (sig[i + 1] - sig[i]) * v
    return x
