"""The cached Fast-WAM action loop with static shapes, ready for graph capture.

``FastWAM.action_velocity`` / ``sample_actions`` are the reference (eager, module by module). This
module runs the same computation with everything that does not depend on the observation taken out
of the loop, and with every tensor the loop reads or writes preallocated:

* The sigma grid is fixed per call, so the expert's timestep embedding and each layer's AdaLN
  modulation ``scale_shift_table + time_proj(t)`` are computed once per (steps, shift) for all
  steps (``(1 + scale)`` included) instead of once per step and layer.
* The prefix K/V live in per-layer buffers ``[B, heads, N_prefix + H, head_dim]`` (the layout SDPA
  reads); each step writes its action K/V into the tail and attends to the whole buffer WITHOUT a
  mask (actions see first frame + actions: nothing else is in the buffer).
* The expert's cross-attention K/V of [instruction; state] are copied into static buffers.
* RoPE of the action positions is precomputed as two tables (``x * C + pair_swap(x) * S``).
* Linears are called as ``F.linear`` on the parameters themselves (no module dispatch), so a weight
  update is always seen; only the precomputed modulation depends on parameter values, and it is
  rebuilt whenever one of the expert's parameters changes (version counter / storage).

Capture (``compile``):

* ``"none"``: the static loop runs eagerly.
* ``"cudagraph"``: on CUDA, the prefix and the whole Euler loop are each captured once into a
  ``torch.cuda.CUDAGraph`` and replayed (inputs are copied into the static buffers first). On CPU
  the same static functions run eagerly (capture degenerates to eager replay), so the buffer
  handling is tested on CPU.
* ``"torch_compile"``: the per-step function is ``torch.compile``d (``mode="reduce-overhead"`` on
  CUDA, i.e. inductor + CUDA graphs; inductor on CPU), with the eager function as fallback if
  compilation fails.
"""

from __future__ import annotations

import logging

import torch
import torch.nn.functional as F

from fastwam.model import flow

COMPILE_MODES = ("none", "cudagraph", "torch_compile")

log = logging.getLogger(__name__)


def check_compile_mode(mode: str) -> str:
    if mode not in COMPILE_MODES:
        raise ValueError(f"unknown compile mode {mode!r}; expected one of {COMPILE_MODES}")
    return mode


def rope_tables(cos: torch.Tensor, sin: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """diffusers' interleaved Wan RoPE (``mot.apply_rope``) as ``x * C + pair_swap(x) * S``.

    apply_rope: out[2i] = x[2i] cos[2i] - x[2i+1] sin[2i+1]; out[2i+1] = x[2i] sin[2i+1] + x[2i+1] cos[2i].
    So C[2i] = C[2i+1] = cos[2i], S[2i] = -sin[2i+1], S[2i+1] = sin[2i+1] (same products, same sums).
    """
    c = cos[..., 0::2]
    s = sin[..., 1::2]
    return c.repeat_interleave(2, dim=-1), torch.stack([-s, s], dim=-1).flatten(-2)


def pair_swap(x: torch.Tensor) -> torch.Tensor:
    """(x0, x1, x2, x3, ...) -> (x1, x0, x3, x2, ...) along the last dim."""
    return x.unflatten(-1, (-1, 2)).flip(-1).flatten(-2)


class ActionLoop:
    """Static-shape prefix + Euler loop for one (batch, prefix length, context length, steps, CFG).

    ``run(prefix_latents, ctx, noise, prefix_mask)`` -> (actions [B, H, A] fp32, the cache it
    filled); ``prefill`` and ``sample`` are the two stages (timed separately by ``FastWAM.infer``).
    The returned actions are a fresh tensor; the cache is the loop's own (overwritten next call).
    """

    def __init__(
        self,
        model,
        batch: int,
        n_prefix: int,
        ctx_len: int,
        steps: int,
        cfg_scale: float,
        compile: str = "none",
    ):
        from fastwam.model.fastwam import ActionCache  # import cycle: fastwam builds ActionLoops

        self.model = model
        self.mode = check_compile_mode(compile)
        cfg = model.config
        self.batch = batch
        self.steps = steps
        self.scale = float(cfg_scale)
        self.guided = self.scale != 1.0
        bb = batch * (2 if self.guided else 1)  # the expert's batch: [cond; uncond] under CFG
        self.bb = bb
        dev, dt = model.device, model.dtype
        self.device = dev
        v = cfg.video
        heads, hd = v.num_attention_heads, v.attention_head_dim
        n_layers = v.num_layers
        self.n_prefix = n_prefix
        self.horizon = cfg.action_horizon
        n_all = n_prefix + cfg.action_horizon

        def zeros(*shape, dtype=dt):
            return torch.zeros(*shape, device=dev, dtype=dtype)

        cos, sin = model._action_rope(dev)  # [1, H, 1, head_dim]
        rc, rs = rope_tables(cos, sin)
        self.cache = ActionCache(
            k=[zeros(bb, heads, n_all, hd) for _ in range(n_layers)],
            v=[zeros(bb, heads, n_all, hd) for _ in range(n_layers)],
            n_prefix=n_prefix,
            expert_kv=[
                (zeros(bb, heads, ctx_len, hd), zeros(bb, heads, ctx_len, hd)) for _ in range(n_layers)
            ],
            rope=(cos, sin),
        )
        self.rope_c, self.rope_s = rc, rs  # fp32, like the eager RoPE
        self.ctx_len = ctx_len
        # Static inputs / outputs.
        self.latents: torch.Tensor | None = None  # [bb, C, F, h, w], allocated on the first prefill
        self.video_kv = [
            (zeros(bb, heads, ctx_len, hd), zeros(bb, heads, ctx_len, hd)) for _ in range(n_layers)
        ]
        self.prefix_mask: torch.Tensor | None = None
        self.noise = zeros(batch, cfg.action_horizon, cfg.action_dim, dtype=torch.float32)
        self.out = zeros(batch, cfg.action_horizon, cfg.action_dim, dtype=torch.float32)
        # Per-step constants (rebuilt when the expert's parameters change).
        self._const_key: tuple | None = None
        self.mods: torch.Tensor | None = None  # [steps, layers, 6, D] fp32
        self.head: torch.Tensor | None = None  # [steps, 2, D] fp32 (shift, 1 + scale)
        self.dts: torch.Tensor | None = None  # [steps] fp32
        self._prefix_graph = None
        self._loop_graph = None
        self._compiled_step = None
        self._prefix_rope = None
        self._prefix_shape: tuple | None = None

    # -- constants ---------------------------------------------------------------------------------
    def _param_key(self) -> tuple:
        return tuple((p.data_ptr(), p._version) for p in self.model.expert.parameters())

    @torch.no_grad()
    def _refresh_constants(self) -> bool:
        """(Re)compute the per-step modulation if the expert changed; True if it did."""
        key = self._param_key()
        if key == self._const_key:
            return False
        model, ex = self.model, self.model.expert
        sig = flow.sigma_grid(self.steps, model.config.sample_shift, device=self.device)
        like = torch.empty(0, device=self.device, dtype=model.dtype)
        temb, proj = model._time_embed(ex.condition_embedder, sig[: self.steps], like)
        proj = proj.unflatten(1, (6, -1)).float()  # [steps, 6, D]
        mods = []
        for blk in ex.blocks:
            m = blk.scale_shift_table + proj  # [steps, 6, D] fp32 (eager: table + proj.float())
            m = m.clone()
            m[:, 1] += 1.0  # 1 + scale
            m[:, 4] += 1.0  # 1 + c_scale
            mods.append(m)
        self.mods = torch.stack(mods, dim=1).contiguous()
        # Output head, in the model dtype as in FastWAM._action_out (1 + scale rounded there too).
        shift, scale = (ex.scale_shift_table + temb.unsqueeze(1)).unbind(1)  # [steps, D] each
        self.head = torch.stack([shift, 1 + scale], dim=1).float().contiguous()
        self.dts = (sig[1:] - sig[:-1]).contiguous()
        self._const_key = key
        # Graphs captured against the old constants are stale (new tensors were allocated).
        self._loop_graph = None
        self._compiled_step = None
        return True

    # -- the static functions (eager on CPU, captured on CUDA) --------------------------------------
    def _velocity(self, x: torch.Tensor, mods: torch.Tensor, head: torch.Tensor) -> torch.Tensor:
        """One expert evaluation: x [bb, H, A] fp32, mods [layers, 6, D], head [2, D] (fp32)."""
        ex = self.model.expert
        cache = self.cache
        dt = self.model.dtype
        n0 = self.n_prefix
        h = F.linear(x.to(dt), ex.action_in.weight, ex.action_in.bias)
        d = h.shape[-1]
        for layer, blk in enumerate(ex.blocks):
            # [D] each: one t for every sample, so AdaLN is LayerNorm's own affine (weight 1 + scale,
            # bias shift): one kernel instead of norm, mul, add.
            shift, scale1, gate, c_shift, c_scale1, c_gate = mods[layer].unbind(0)
            a1, a2 = blk.attn1, blk.attn2
            # Self-attention: modulated norm1 -> q/k/v -> RMS across heads -> RoPE.
            n = F.layer_norm(h.float(), (d,), scale1, shift, blk.norm1.eps).to(dt)
            q = F.rms_norm(F.linear(n, a1.to_q.weight, a1.to_q.bias), a1.norm_q.normalized_shape,
                           a1.norm_q.weight, a1.norm_q.eps)  # fmt: skip
            k = F.rms_norm(F.linear(n, a1.to_k.weight, a1.to_k.bias), a1.norm_k.normalized_shape,
                           a1.norm_k.weight, a1.norm_k.eps)  # fmt: skip
            vv = F.linear(n, a1.to_v.weight, a1.to_v.bias)
            q = q.unflatten(2, (a1.heads, -1))  # [bb, H, heads, hd]
            k = k.unflatten(2, (a1.heads, -1))
            q = torch.addcmul(q * self.rope_c, pair_swap(q), self.rope_s).to(dt).transpose(1, 2)
            k = torch.addcmul(k * self.rope_c, pair_swap(k), self.rope_s).to(dt)
            cache.k[layer][:, :, n0:].copy_(k.transpose(1, 2))
            cache.v[layer][:, :, n0:].copy_(vv.unflatten(2, (a1.heads, -1)).transpose(1, 2))
            o = F.scaled_dot_product_attention(q, cache.k[layer], cache.v[layer])  # no mask needed
            o = F.linear(o.transpose(1, 2).flatten(2).to(dt), a1.to_out[0].weight, a1.to_out[0].bias)
            h = torch.addcmul(h.float(), o, gate).to(dt)
            # Cross-attention to [instruction; state] (static K/V).
            n2 = blk.norm2
            n = F.layer_norm(h.float(), (d,), n2.weight.float(), n2.bias.float(), n2.eps).to(dt)
            q = F.rms_norm(F.linear(n, a2.to_q.weight, a2.to_q.bias), a2.norm_q.normalized_shape,
                           a2.norm_q.weight, a2.norm_q.eps)  # fmt: skip
            ck, cv = cache.expert_kv[layer]
            o = F.scaled_dot_product_attention(q.unflatten(2, (a2.heads, -1)).transpose(1, 2), ck, cv)
            o = F.linear(o.transpose(1, 2).flatten(2).to(dt), a2.to_out[0].weight, a2.to_out[0].bias)
            h = h + o
            # Modulated FFN.
            n = F.layer_norm(h.float(), (d,), c_scale1, c_shift, blk.norm3.eps).to(dt)
            ff = blk.ffn.net
            f = F.gelu(F.linear(n, ff[0].proj.weight, ff[0].proj.bias), approximate="tanh")
            f = F.linear(f, ff[2].weight, ff[2].bias)
            h = torch.addcmul(h.float(), f.float(), c_gate).to(dt)
        shift, scale1 = head.unbind(0)
        h = F.layer_norm(h.float(), (d,), scale1, shift, ex.norm_out.eps).to(dt)
        return F.linear(h, ex.proj_out.weight, ex.proj_out.bias).float()

    def _step(
        self, x: torch.Tensor, mods: torch.Tensor, head: torch.Tensor, dt: torch.Tensor
    ) -> torch.Tensor:
        """One Euler step x [B, H, A] fp32 -> x + dt v (CFG: one batch of 2B, then combined)."""
        if self.guided:
            vc, vu = self._velocity(torch.cat([x, x]), mods, head).chunk(2)
            v = flow.cfg_combine(vc, vu, self.scale)
        else:
            v = self._velocity(x, mods, head)
        return x + dt * v

    def _loop_static(self) -> None:
        """noise buffer -> out buffer (the whole Euler loop; what the CUDA graph holds)."""
        x = self.noise
        for i in range(self.steps):
            x = self._step(x, self.mods[i], self.head[i], self.dts[i])
        self.out.copy_(x)

    def _prefix_static(self) -> None:
        """latents + video context buffers -> prefix K/V buffers (what the prefix graph holds)."""
        from fastwam.model.fastwam import Context

        self.model.build_action_cache(
            self.latents,
            Context(video_kv=self.video_kv, expert_kv=self.cache.expert_kv),
            self.prefix_mask,
            out=self.cache,
            rope=self._prefix_rope,
        )

    # -- capture -------------------------------------------------------------------------------------
    def _capture(self, fn):
        """A CUDA graph of ``fn`` (after a warm-up on a side stream, as the PyTorch docs do)."""
        side = torch.cuda.Stream(self.device)
        side.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(side):
            for _ in range(2):
                fn()
        torch.cuda.current_stream(self.device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            fn()
        return graph

    def _compiled(self):
        if self._compiled_step is None:
            cuda = self.device.type == "cuda"
            for buf in [*self.cache.k, *self.cache.v]:
                # The step writes its K/V into these: static addresses keep CUDA graphs on.
                torch._dynamo.mark_static_address(buf)
            self._compiled_step = torch.compile(
                self._step, mode="reduce-overhead" if cuda else None, dynamic=False, fullgraph=True
            )
        return self._compiled_step

    # -- the API -------------------------------------------------------------------------------------
    @torch.no_grad()
    def prefill(self, prefix_latents: torch.Tensor, ctx, prefix_mask: torch.Tensor | None = None) -> None:
        """Copy the observation and the context into the static buffers and fill the prefix K/V.

        prefix_latents [bb, C, F, h, w] (already doubled under CFG); ctx: ``Context`` with per-layer
        ``video_kv`` / ``expert_kv`` of batch bb (or 1, broadcast) and ``ctx_len`` tokens."""
        model = self.model
        shape = tuple(prefix_latents.shape)
        if self.latents is None or tuple(self.latents.shape) != shape:
            if self.latents is not None:
                raise ValueError(f"ActionLoop built for prefix {self._prefix_shape}, got {shape}")
            self.latents = torch.zeros(shape, device=self.device, dtype=model.dtype)
            self._prefix_shape = shape
            hp, wp = model._grid(prefix_latents)
            self._prefix_rope = model._video_rope(shape[2], hp, wp)
        if prefix_mask is not None:
            if self.prefix_mask is None:
                self.prefix_mask = torch.zeros_like(prefix_mask, device=self.device)
            self.prefix_mask.copy_(prefix_mask)
        elif self.prefix_mask is not None:
            raise ValueError("this ActionLoop was built with a prefix mask")
        self.latents.copy_(prefix_latents)
        for (kb, vb), (k, v) in zip(self.video_kv, ctx.video_kv):
            kb.copy_(k)
            vb.copy_(v)
        for (kb, vb), (k, v) in zip(self.cache.expert_kv, ctx.expert_kv):
            kb.copy_(k)
            vb.copy_(v)
        if self.mode == "cudagraph" and self.device.type == "cuda":
            if self._prefix_graph is None:
                self._prefix_graph = self._capture(self._prefix_static)
            self._prefix_graph.replay()
        else:
            self._prefix_static()

    @torch.no_grad()
    def sample(self, noise: torch.Tensor) -> torch.Tensor:
        """Euler loop from noise [B, H, A] against the prefilled cache -> actions [B, H, A] fp32."""
        self._refresh_constants()
        self.noise.copy_(noise)
        if self.mode == "cudagraph" and self.device.type == "cuda":
            if self._loop_graph is None:
                self._loop_graph = self._capture(self._loop_static)
            self._loop_graph.replay()
            return self.out.clone()
        if self.mode == "torch_compile":
            step = self._compiled()
            x = self.noise
            try:
                for i in range(self.steps):
                    # clone: a CUDA-graph output is overwritten by the next replay.
                    x = step(x, self.mods[i], self.head[i], self.dts[i]).clone()
                return x
            except Exception as err:  # compilation failure: keep serving actions eagerly
                log.warning("torch.compile of the action step failed (%s); running eagerly", err)
                self.mode = "none"
                self._compiled_step = None
        self._loop_static()
        return self.out.clone()
