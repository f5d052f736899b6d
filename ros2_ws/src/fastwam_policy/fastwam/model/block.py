"""The Wan block, written once: diffusers' ``WanTransformerBlock`` math over a named bundle of weights.

diffusers' ``WanTransformerBlock.forward`` (diffusers 0.42.1, ``transformer_wan.py``) takes no
attention mask and attends only to its own tokens, so Fast-WAM computes the block here, op for op
in its order and dtypes: AdaLN modulation ``scale_shift_table + temb`` (fp32) -> ``norm1`` ->
``attn1.to_q/to_k/to_v`` -> ``norm_q/norm_k`` (RMS across heads) -> RoPE -> attention -> ``to_out``
-> gated residual; ``norm2`` -> cross-attention ``attn2`` to the context -> residual; ``norm3`` ->
modulated ``ffn`` -> gated residual. The diffusers module stays the weight container (and the
stock reference the tests compare against); :class:`BlockWeights` names its tensors.

The block is split at its self-attention, the one place where Mixture-of-Transformers branches
meet: :func:`attention_inputs` (modulated norm, q/k/v, RoPE) and :func:`after_attention` (output
projection, cross-attention, FFN). Two compositions use them:

* :func:`cached_block`: one branch whose K/V go into preallocated buffers and whose queries attend
  to the buffer (the video prefix, and every action step of the static loop, ``action_loop``);
* ``mot.shared_layer``: several branches in one attention with a mask (training, joint, IDM video).

Modulation ``mods`` [..., 6, D] fp32 is (shift, 1 + scale, gate, c_shift, 1 + c_scale, c_gate)
(:func:`folded_modulation`). With one modulation for every token and sample ([6, D]: the cached
passes, where t is shared) the AdaLN is LayerNorm's own affine (one kernel instead of norm, mul,
add); per sample ([B, 1, 6, D]) or per token ([B, N, 6, D]) it is norm, then multiply and add.
RoPE is given as the two tables of ``embed.rope_tables``.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F

Rope = tuple[torch.Tensor, torch.Tensor]  # (C, S) tables [1, N, 1, head_dim] fp32 (embed.rope_tables)


class BlockWeights(NamedTuple):
    """One Wan block's tensors by role (a diffusers ``WanTransformerBlock`` or an
    ``ActionExpertBlock``, which has the same submodule names)."""

    table: torch.Tensor  # scale_shift_table [1, 6, D]
    q_w: torch.Tensor  # attn1 (self-attention)
    q_b: torch.Tensor
    q_norm: torch.Tensor
    k_w: torch.Tensor
    k_b: torch.Tensor
    k_norm: torch.Tensor
    v_w: torch.Tensor
    v_b: torch.Tensor
    out_w: torch.Tensor
    out_b: torch.Tensor
    cross_norm_w: torch.Tensor | None  # norm2's affine; None where norm2 is an Identity
    cross_norm_b: torch.Tensor | None
    cross_q_w: torch.Tensor  # attn2 (cross-attention to the context)
    cross_q_b: torch.Tensor
    cross_q_norm: torch.Tensor
    cross_k_w: torch.Tensor
    cross_k_b: torch.Tensor
    cross_k_norm: torch.Tensor
    cross_v_w: torch.Tensor
    cross_v_b: torch.Tensor
    cross_out_w: torch.Tensor
    cross_out_b: torch.Tensor
    ffn_in_w: torch.Tensor  # ffn.net[0].proj (GELU tanh after it)
    ffn_in_b: torch.Tensor
    ffn_out_w: torch.Tensor  # ffn.net[2]
    ffn_out_b: torch.Tensor

    @classmethod
    def of(cls, blk, detach: bool = False) -> BlockWeights:
        """The block's current tensors (the parameters themselves, so that gradients and FSDP's
        gathered weights are seen; ``detach`` for the inference loop's constants)."""
        a1, a2, ff = blk.attn1, blk.attn2, blk.ffn.net
        ts = (
            blk.scale_shift_table,
            a1.to_q.weight, a1.to_q.bias, a1.norm_q.weight,
            a1.to_k.weight, a1.to_k.bias, a1.norm_k.weight,
            a1.to_v.weight, a1.to_v.bias, a1.to_out[0].weight, a1.to_out[0].bias,
            getattr(blk.norm2, "weight", None), getattr(blk.norm2, "bias", None),
            a2.to_q.weight, a2.to_q.bias, a2.norm_q.weight,
            a2.to_k.weight, a2.to_k.bias, a2.norm_k.weight,
            a2.to_v.weight, a2.to_v.bias, a2.to_out[0].weight, a2.to_out[0].bias,
            ff[0].proj.weight, ff[0].proj.bias, ff[2].weight, ff[2].bias,
        )  # fmt: skip
        if detach:
            ts = tuple(None if t is None else t.detach() for t in ts)
        return cls(*ts)


class BlockConstants(NamedTuple):
    """The block's non-tensor settings (the same in every layer of a branch)."""

    heads: int
    eps1: float
    eps_q: float
    eps_k: float
    eps2: float
    eps_cq: float
    eps_ck: float
    eps3: float

    @classmethod
    def of(cls, blk) -> BlockConstants:
        a1, a2 = blk.attn1, blk.attn2
        eps2 = getattr(blk.norm2, "eps", 0.0)  # nn.Identity without a cross-attention norm
        return cls(
            a1.heads,
            blk.norm1.eps,
            a1.norm_q.eps,
            a1.norm_k.eps,
            eps2,
            a2.norm_q.eps,
            a2.norm_k.eps,
            blk.norm3.eps,
        )


def folded_modulation(table: torch.Tensor, temb_proj: torch.Tensor) -> torch.Tensor:
    """scale_shift_table [1, 6, D] + temb_proj [..., 6, D] -> fp32 mods [..., 6, D] with the
    ``1 +`` of both scales folded in (the same fp32 sums diffusers forms: (table + temb) + 1)."""
    m = table + temb_proj.float()
    m[..., 1, :] += 1.0  # 1 + scale
    m[..., 4, :] += 1.0  # 1 + c_scale
    return m


def modulated_norm(x: torch.Tensor, shift: torch.Tensor, scale1: torch.Tensor, eps: float) -> torch.Tensor:
    """diffusers' ``(FP32LayerNorm(x) * (1 + scale) + shift).type_as(x)``; a shared [D] modulation
    runs as LayerNorm's affine."""
    d = x.shape[-1]
    if shift.ndim == 1:
        return F.layer_norm(x.float(), (d,), scale1, shift, eps).to(x.dtype)
    return (F.layer_norm(x.float(), (d,), None, None, eps) * scale1 + shift).to(x.dtype)


def pair_swap(x: torch.Tensor) -> torch.Tensor:
    """(x0, x1, x2, x3, ...) -> (x1, x0, x3, x2, ...) along the last dim."""
    return x.unflatten(-1, (-1, 2)).flip(-1).flatten(-2)


def rotate(x: torch.Tensor, rope: Rope | None) -> torch.Tensor:
    """RoPE on x [B, N, heads, hd] from the (C, S) tables, back in x's dtype."""
    if rope is None:
        return x
    return torch.addcmul(x * rope[0], pair_swap(x), rope[1]).to(x.dtype)


def _heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    return x.unflatten(2, (heads, -1))


def attention_inputs(
    w: BlockWeights,
    c: BlockConstants,
    x: torch.Tensor,
    mods: torch.Tensor,
    rope: Rope | None,
    query: bool = True,
) -> tuple[torch.Tensor | None, torch.Tensor, torch.Tensor]:
    """The block up to its self-attention: x [B, N, D] -> q, k, v [B, heads, N, hd] (normed,
    rotated). ``query=False`` skips q (a prefix's last layer: only its K/V are read)."""
    shift, scale1 = mods[..., 0, :], mods[..., 1, :]
    n = modulated_norm(x, shift, scale1, c.eps1)
    k = rotate(
        _heads(F.rms_norm(F.linear(n, w.k_w, w.k_b), (w.k_w.shape[0],), w.k_norm, c.eps_k), c.heads), rope
    )
    v = _heads(F.linear(n, w.v_w, w.v_b), c.heads)
    q = None
    if query:
        q = F.rms_norm(F.linear(n, w.q_w, w.q_b), (w.q_w.shape[0],), w.q_norm, c.eps_q)
        q = rotate(_heads(q, c.heads), rope).transpose(1, 2)
    return q, k.transpose(1, 2), v.transpose(1, 2)


def cross_kv(w: BlockWeights, c: BlockConstants, context: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Cross-attention K/V of a projected context [B, L, D] -> [B, heads, L, hd] each. Per token,
    so K/V of [text; state] == cat(K/V of text, K/V of state) (cacheable per instruction)."""
    k = F.rms_norm(
        F.linear(context, w.cross_k_w, w.cross_k_b), (w.cross_k_w.shape[0],), w.cross_k_norm, c.eps_ck
    )
    v = F.linear(context, w.cross_v_w, w.cross_v_b)
    return _heads(k, c.heads).transpose(1, 2), _heads(v, c.heads).transpose(1, 2)


def _merge(o: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """[B, heads, N, hd] -> [B, N, heads * hd]."""
    return o.transpose(1, 2).flatten(2).to(dtype)


def after_attention(
    w: BlockWeights,
    c: BlockConstants,
    x: torch.Tensor,
    o: torch.Tensor,
    mods: torch.Tensor,
    context_kv: tuple[torch.Tensor, torch.Tensor],
) -> torch.Tensor:
    """The block after its self-attention: x [B, N, D] and the attention output o [B, heads, N, hd]
    -> the new x (gated residual, cross-attention to ``context_kv``, modulated FFN)."""
    dt = x.dtype
    d = x.shape[-1]
    gate, c_shift, c_scale1, c_gate = mods[..., 2, :], mods[..., 3, :], mods[..., 4, :], mods[..., 5, :]
    x = torch.addcmul(x.float(), F.linear(_merge(o, dt), w.out_w, w.out_b), gate).to(dt)
    n = x
    if w.cross_norm_w is not None:
        n = F.layer_norm(x.float(), (d,), w.cross_norm_w.float(), w.cross_norm_b.float(), c.eps2).to(dt)
    q = F.rms_norm(F.linear(n, w.cross_q_w, w.cross_q_b), (w.cross_q_w.shape[0],), w.cross_q_norm, c.eps_cq)
    o = F.scaled_dot_product_attention(_heads(q, c.heads).transpose(1, 2), *context_kv)
    x = x + F.linear(_merge(o, dt), w.cross_out_w, w.cross_out_b)
    n = modulated_norm(x, c_shift, c_scale1, c.eps3)
    f = F.linear(F.gelu(F.linear(n, w.ffn_in_w, w.ffn_in_b), approximate="tanh"), w.ffn_out_w, w.ffn_out_b)
    return torch.addcmul(x.float(), f.float(), c_gate).to(dt)


def cached_block(
    x: torch.Tensor,
    w: BlockWeights,
    c: BlockConstants,
    mods: torch.Tensor,
    kbuf: torch.Tensor,
    vbuf: torch.Tensor,
    start: int,
    context_kv: tuple[torch.Tensor, torch.Tensor],
    rope: Rope,
    mask: torch.Tensor | None = None,
    kv_only: bool = False,
) -> torch.Tensor:
    """One block for n new tokens x [B, n, D] at positions start..start+n of the self-attention
    K/V buffers kbuf/vbuf [B, heads, N, hd]: their K/V are written there and they attend to
    buf[:, :, :start + n] (the prefix to itself, with the IDM prefix ``mask`` where given; an
    action step to [prefix; actions], which needs no mask: nothing else is in the buffer).
    ``kv_only``: write K/V and stop (a prefix's last layer). Returns the new x."""
    q, k, v = attention_inputs(w, c, x, mods, rope, query=not kv_only)
    end = start + x.shape[1]
    kbuf[:, :, start:end].copy_(k)
    vbuf[:, :, start:end].copy_(v)
    if kv_only:
        return x
    o = F.scaled_dot_product_attention(q, kbuf[:, :, :end], vbuf[:, :, :end], attn_mask=mask)
    return after_attention(w, c, x, o, mods, context_kv)
