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
  rebuilt whenever a parameter of the expert or the video DiT changes (version counter / storage).
* The prefix pass (fast_wam / no_cotrain: no prefix mask) and every action step run the same
  functional Wan block, ``block_layer``, over the block's weight tensors: one implementation of
  the layer for both (the reference ``mot`` path is the test oracle).

Capture (``compile``):

* ``"none"``: the static prefix and loop run eagerly.
* ``"cudagraph"``: on CUDA, the prefix and the whole Euler loop are each captured once into a
  ``torch.cuda.CUDAGraph`` and replayed (inputs are copied into the static buffers first). On CPU
  the same static functions run eagerly (capture degenerates to eager replay), so the buffer
  handling is tested on CPU.
* ``"torch_compile"``: ``block_layer`` is compiled by inductor (one compile per token count,
  shared by all layers, since weights are arguments), which fuses the norms, modulation, RoPE,
  casts and residuals around the GEMMs and attentions (~23 kernels per layer on an H200); on CUDA
  the prefix and the loop are then captured into CUDA graphs as with ``"cudagraph"``. If
  compilation fails the eager layer is used (logged).
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


def block_weights(blk) -> tuple[torch.Tensor | None, ...]:
    """A diffusers ``WanTransformerBlock``'s tensors in ``block_layer``'s order (detached views;
    None for norm2's affine when the block has no cross-attention norm)."""
    a1, a2, ff = blk.attn1, blk.attn2, blk.ffn.net
    norm2 = getattr(blk.norm2, "weight", None), getattr(blk.norm2, "bias", None)
    ts = (
        a1.to_q.weight, a1.to_q.bias, a1.norm_q.weight,
        a1.to_k.weight, a1.to_k.bias, a1.norm_k.weight,
        a1.to_v.weight, a1.to_v.bias, a1.to_out[0].weight, a1.to_out[0].bias,
        *norm2,
        a2.to_q.weight, a2.to_q.bias, a2.norm_q.weight, a2.to_out[0].weight, a2.to_out[0].bias,
        ff[0].proj.weight, ff[0].proj.bias, ff[2].weight, ff[2].bias,
    )  # fmt: skip
    return tuple(None if t is None else t.detach() for t in ts)


def block_constants(blk) -> dict:
    """The block's non-tensor settings (the same in every layer of a branch)."""
    a1, a2 = blk.attn1, blk.attn2
    return dict(
        heads=a1.heads,
        eps1=blk.norm1.eps,
        eps_q=a1.norm_q.eps,
        eps_k=a1.norm_k.eps,
        eps2=getattr(blk.norm2, "eps", 0.0),  # nn.Identity without a cross-attention norm
        eps_cq=a2.norm_q.eps,
        eps3=blk.norm3.eps,
    )


def block_layer(
    h: torch.Tensor,
    w: tuple[torch.Tensor | None, ...],
    mods: torch.Tensor,
    kbuf: torch.Tensor,
    vbuf: torch.Tensor,
    start: int,
    ck: torch.Tensor,
    cv: torch.Tensor,
    rope_c: torch.Tensor,
    rope_s: torch.Tensor,
    *,
    heads: int,
    eps1: float,
    eps_q: float,
    eps_k: float,
    eps2: float,
    eps_cq: float,
    eps3: float,
    kv_only: bool = False,
) -> torch.Tensor:
    """One Wan block (diffusers' ``WanTransformerBlock`` math, ``mot`` order and dtypes) for n new
    tokens h [B, n, D] at positions start..start+n of the self-attention K/V buffers
    kbuf/vbuf [B, heads, N, hd]: their K/V are written there, and they attend to
    buf[:, :, :start + n] (the prefix attends to itself; an action step to [prefix; actions]).

    mods [6, D] fp32: (shift, 1 + scale, gate, c_shift, 1 + c_scale, c_gate), one t for every
    token, so AdaLN is LayerNorm's own affine (one kernel instead of norm, mul, add). ck/cv: the
    cross-attention K/V [B, heads, L, hd]; rope_c/rope_s [1, n, 1, hd] fp32 (``rope_tables``).
    ``kv_only``: write K/V and stop (a prefix's last layer). Returns the new h."""
    q_w, q_b, nq_w, k_w, k_b, nk_w, v_w, v_b, o_w, o_b, n2_w, n2_b = w[:12]
    cq_w, cq_b, cnq_w, co_w, co_b, f1_w, f1_b, f2_w, f2_b = w[12:]
    shift, scale1, gate, c_shift, c_scale1, c_gate = mods.unbind(0)
    dt = h.dtype
    d = h.shape[-1]
    end = start + h.shape[1]
    n = F.layer_norm(h.float(), (d,), scale1, shift, eps1).to(dt)
    k = F.rms_norm(F.linear(n, k_w, k_b), (k_w.shape[0],), nk_w, eps_k).unflatten(2, (heads, -1))
    k = torch.addcmul(k * rope_c, pair_swap(k), rope_s).to(dt)
    kbuf[:, :, start:end].copy_(k.transpose(1, 2))
    vbuf[:, :, start:end].copy_(F.linear(n, v_w, v_b).unflatten(2, (heads, -1)).transpose(1, 2))
    if kv_only:
        return h
    q = F.rms_norm(F.linear(n, q_w, q_b), (q_w.shape[0],), nq_w, eps_q).unflatten(2, (heads, -1))
    q = torch.addcmul(q * rope_c, pair_swap(q), rope_s).to(dt).transpose(1, 2)
    o = F.scaled_dot_product_attention(q, kbuf[:, :, :end], vbuf[:, :, :end])  # no mask needed
    o = F.linear(o.transpose(1, 2).flatten(2).to(dt), o_w, o_b)
    h = torch.addcmul(h.float(), o, gate).to(dt)
    # Cross-attention to the context (static K/V).
    n = h if n2_w is None else F.layer_norm(h.float(), (d,), n2_w.float(), n2_b.float(), eps2).to(dt)
    q = F.rms_norm(F.linear(n, cq_w, cq_b), (cq_w.shape[0],), cnq_w, eps_cq)
    o = F.scaled_dot_product_attention(q.unflatten(2, (heads, -1)).transpose(1, 2), ck, cv)
    h = h + F.linear(o.transpose(1, 2).flatten(2).to(dt), co_w, co_b)
    # Modulated FFN.
    n = F.layer_norm(h.float(), (d,), c_scale1, c_shift, eps3).to(dt)
    f = F.linear(F.gelu(F.linear(n, f1_w, f1_b), approximate="tanh"), f2_w, f2_b)
    return torch.addcmul(h.float(), f.float(), c_gate).to(dt)


def folded_modulation(table: torch.Tensor, proj: torch.Tensor) -> torch.Tensor:
    """scale_shift_table [1, 6, D] + temb_proj [..., 6, D] -> fp32 mods with 1 + scale folded in."""
    m = (table + proj.float()).clone()
    m[..., 1, :] += 1.0  # 1 + scale
    m[..., 4, :] += 1.0  # 1 + c_scale
    return m


class ActionLoop:
    """Static-shape prefix + Euler loop for one (batch, prefix length, context length, steps, CFG,
    samples).

    ``prefill(prefix_latents, ctx, prefix_mask)`` fills the cache from an observation;
    ``sample(noise)`` -> actions [B * samples, H, A] fp32 (the two stages ``FastWAM.infer`` times),
    sample index fastest. The returned actions are a fresh tensor; the cache is the loop's own
    (overwritten next call).

    ``samples`` > 1 draws several chunks per observation from ONE prefix pass: the prefix K/V are
    computed at the observation batch, then copied to each draw's rows of the expert's cache.
    """

    inductor_mode: str | None = None  # torch.compile mode of the layer ("torch_compile")

    def __init__(
        self,
        model,
        batch: int,
        n_prefix: int,
        ctx_len: int,
        steps: int,
        cfg_scale: float,
        compile: str = "none",
        samples: int = 1,
    ):
        from fastwam.model.fastwam import ActionCache  # import cycle: fastwam builds ActionLoops

        if samples < 1:
            raise ValueError(f"samples must be at least 1, got {samples}")
        self.model = model
        self.mode = check_compile_mode(compile)
        cfg = model.config
        self.batch = batch
        self.samples = samples
        self.steps = steps
        self.scale = float(cfg_scale)
        self.guided = self.scale != 1.0
        pb = batch * (2 if self.guided else 1)  # the prefix's batch: [cond; uncond] under CFG
        bb = pb * samples  # the expert's batch: each prefix row once per draw
        self.pb, self.bb = pb, bb
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
        # Where the prefix pass writes its K/V: the expert's cache itself, or (several draws) buffers
        # at the prefix batch that _prefix_static then copies to every draw's rows.
        self.prefix_cache = self.cache
        if samples > 1:
            self.prefix_cache = ActionCache(
                k=[zeros(pb, heads, n_prefix, hd) for _ in range(n_layers)],
                v=[zeros(pb, heads, n_prefix, hd) for _ in range(n_layers)],
                n_prefix=n_prefix,
                expert_kv=[],
                rope=(cos, sin),
            )
        self.rope_c, self.rope_s = rc, rs  # fp32, like the eager RoPE
        self.ctx_len = ctx_len
        # Static inputs / outputs.
        self.latents: torch.Tensor | None = None  # [pb, C, F, h, w], allocated on the first prefill
        self.video_kv = [
            (zeros(pb, heads, ctx_len, hd), zeros(pb, heads, ctx_len, hd)) for _ in range(n_layers)
        ]
        self.prefix_mask: torch.Tensor | None = None
        n_out = batch * samples
        self.noise = zeros(n_out, cfg.action_horizon, cfg.action_dim, dtype=torch.float32)
        self.out = zeros(n_out, cfg.action_horizon, cfg.action_dim, dtype=torch.float32)
        # Constants (rebuilt when a parameter of the expert or the video DiT changes).
        self._const_key: tuple | None = None
        self.mods: torch.Tensor | None = None  # [steps, layers, 6, D] fp32
        self.dts: torch.Tensor | None = None  # [steps] fp32
        self.prefix_mods: torch.Tensor | None = None  # [layers, 6, D] fp32 (t = 0)
        self.expert_w: list[tuple[torch.Tensor, ...]] = []
        self.video_w: list[tuple[torch.Tensor, ...]] = []
        self._params = [*model.expert.parameters(), *model.video.parameters()]
        self._expert_const = block_constants(model.expert.blocks[0])
        self._video_const = block_constants(model.video.blocks[0])
        # The layer: eager, or inductor-compiled (one compile per token count: weights are inputs).
        self._layer = block_layer
        if self.mode == "torch_compile":
            self._layer = torch.compile(block_layer, mode=self.inductor_mode, dynamic=False, fullgraph=True)
        self.capture = self.mode in ("cudagraph", "torch_compile") and dev.type == "cuda"
        self._prefix_graph = None
        self._loop_graph = None
        self._prefix_rope = None
        self._prefix_tables: tuple[torch.Tensor, torch.Tensor] | None = None
        self._prefix_shape: tuple | None = None

    # -- constants ---------------------------------------------------------------------------------
    def _param_key(self) -> tuple:
        # Over a list made once: walking the 5 B model's module tree costs ~2.7 ms per call, the
        # storage/version check of its 1650 tensors 0.3 ms. (A Parameter replaced by a new object,
        # e.g. load_state_dict(assign=True), is not seen: clear model._action_loops after one.)
        return tuple((p.data_ptr(), p._version) for p in self._params)

    @torch.no_grad()
    def _refresh_constants(self) -> bool:
        """(Re)compute the per-step modulation and the weight lists if a parameter changed (new
        values or new storage); True if it did."""
        key = self._param_key()
        if key == self._const_key:
            return False
        model, ex, vm = self.model, self.model.expert, self.model.video
        sig = flow.sigma_grid(self.steps, model.config.sample_shift, device=self.device)
        like = torch.empty(0, device=self.device, dtype=model.dtype)
        _, proj = model._time_embed(ex.condition_embedder, sig[: self.steps], like)
        proj = proj.unflatten(1, (6, -1))  # [steps, 6, D]
        # [steps, layers, 6, D] fp32 (eager: table + proj.float())
        self.mods = torch.stack([folded_modulation(b.scale_shift_table, proj) for b in ex.blocks], 1)
        self.dts = (sig[1:] - sig[:-1]).contiguous()
        # The prefix: every token at t = 0, one modulation per layer.
        _, proj0 = model._time_embed(vm.condition_embedder, torch.zeros(1, device=self.device), like)
        proj0 = proj0.unflatten(1, (6, -1))[0]  # [6, D]
        self.prefix_mods = torch.stack([folded_modulation(b.scale_shift_table, proj0)[0] for b in vm.blocks])
        self.expert_w = [block_weights(b) for b in ex.blocks]
        self.video_w = [block_weights(b) for b in vm.blocks]
        self._const_key = key
        # Graphs captured against the old constants / storages are stale.
        self._loop_graph = None
        self._prefix_graph = None
        return True

    # -- the static functions (eager on CPU, captured on CUDA) --------------------------------------
    def _velocity(self, x: torch.Tensor, mods: torch.Tensor) -> torch.Tensor:
        """One expert evaluation: x [bb, H, A] fp32, mods [layers, 6, D] fp32."""
        ex = self.model.expert
        cache = self.cache
        h = F.linear(x.to(self.model.dtype), ex.action_in.weight, ex.action_in.bias)
        for layer in range(len(ex.blocks)):
            ck, cv = cache.expert_kv[layer]
            h = self._layer(h, self.expert_w[layer], mods[layer], cache.k[layer], cache.v[layer],
                            self.n_prefix, ck, cv, self.rope_c, self.rope_s, **self._expert_const)  # fmt: skip
        return F.linear(h, ex.proj_out.weight, ex.proj_out.bias).float()  # the bare head

    def _step(self, x: torch.Tensor, mods: torch.Tensor, dt: torch.Tensor) -> torch.Tensor:
        """One Euler step x [B, H, A] fp32 -> x + dt v (CFG: one batch of 2B, then combined)."""
        if self.guided:
            vc, vu = self._velocity(torch.cat([x, x]), mods).chunk(2)
            v = flow.cfg_combine(vc, vu, self.scale)
        else:
            v = self._velocity(x, mods)
        return x + dt * v

    def _loop_static(self) -> None:
        """noise buffer -> out buffer (the whole Euler loop; what the CUDA graph holds)."""
        x = self.noise
        for i in range(self.steps):
            x = self._step(x, self.mods[i], self.dts[i])
        self.out.copy_(x)

    def _prefix_static(self) -> None:
        """latents + video context buffers -> prefix K/V buffers (what the prefix graph holds)."""
        cache = self.prefix_cache
        if self.prefix_mask is not None:  # IDM's masked prefix: the reference MoT layer loop
            from fastwam.model.fastwam import Context

            self.model.build_action_cache(
                self.latents,
                Context(video_kv=self.video_kv, expert_kv=cache.expert_kv),
                self.prefix_mask,
                out=cache,
                rope=self._prefix_rope,
            )
        else:
            vm = self.model.video
            h = vm.patch_embedding(self.latents).flatten(2).transpose(1, 2).contiguous()  # [pb, N, D]
            last = len(vm.blocks) - 1
            for layer in range(last + 1):
                ck, cv = self.video_kv[layer]
                h = self._layer(h, self.video_w[layer], self.prefix_mods[layer], cache.k[layer], cache.v[layer],
                                0, ck, cv, *self._prefix_tables, kv_only=layer == last, **self._video_const)  # fmt: skip
        if cache is not self.cache:  # one copy of each prefix row per draw, draws of a row adjacent
            n = self.n_prefix
            for src, dst in ((cache.k, self.cache.k), (cache.v, self.cache.v)):
                for s, d in zip(src, dst, strict=True):
                    d[:, :, :n].copy_(s.repeat_interleave(self.samples, dim=0))

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

    def _run(self, fn, graph_attr: str) -> None:
        """Run a static function: replay its CUDA graph (captured on first use) or call it."""
        if not self.capture:
            fn()
            return
        graph = getattr(self, graph_attr)
        if graph is None:
            graph = self._capture(fn)
            setattr(self, graph_attr, graph)
        graph.replay()

    def _guarded(self, fn, graph_attr: str) -> None:
        """``_run``, falling back to the eager layer if the compiled one fails (compile errors)."""
        try:
            self._run(fn, graph_attr)
        except Exception as err:
            if self._layer is block_layer:
                raise
            log.warning("torch.compile of the Wan block failed (%s); running the eager layer", err)
            self._layer = block_layer
            setattr(self, graph_attr, None)
            self._run(fn, graph_attr)

    # -- the API -------------------------------------------------------------------------------------
    @torch.no_grad()
    def prefill(self, prefix_latents: torch.Tensor, ctx, prefix_mask: torch.Tensor | None = None) -> None:
        """Copy the observation and the context into the static buffers and fill the prefix K/V.

        prefix_latents [pb, C, F, h, w] (already doubled under CFG); ctx: ``Context`` with per-layer
        ``video_kv`` / ``expert_kv`` of batch pb (or 1, broadcast) and ``ctx_len`` tokens."""
        model = self.model
        self._refresh_constants()
        shape = tuple(prefix_latents.shape)
        if self.latents is None or tuple(self.latents.shape) != shape:
            if self.latents is not None:
                raise ValueError(f"ActionLoop built for prefix {self._prefix_shape}, got {shape}")
            self.latents = torch.zeros(shape, device=self.device, dtype=model.dtype)
            self._prefix_shape = shape
            hp, wp = model._grid(prefix_latents)
            self._prefix_rope = model._video_rope(shape[2], hp, wp)
            self._prefix_tables = rope_tables(*(t.to(self.device) for t in self._prefix_rope))
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
            kb.copy_(self._per_draw(k))
            vb.copy_(self._per_draw(v))
        self._guarded(self._prefix_static, "_prefix_graph")

    def _per_draw(self, x: torch.Tensor) -> torch.Tensor:
        """A prefix-batch tensor [pb, ...] repeated for the draws (a batch of 1 broadcasts)."""
        return x.repeat_interleave(self.samples, dim=0) if x.shape[0] > 1 and self.samples > 1 else x

    @torch.no_grad()
    def sample(self, noise: torch.Tensor) -> torch.Tensor:
        """Euler loop from noise [B * samples, H, A] (sample index fastest) against the prefilled
        cache -> actions [B * samples, H, A] fp32."""
        if self._refresh_constants():  # weights changed since prefill: the cache is stale
            raise RuntimeError("model parameters changed between prefill and sample; prefill again")
        self.noise.copy_(noise)
        self._guarded(self._loop_static, "_loop_graph")
        return self.out.clone()
