"""The cached Fast-WAM action loop with static shapes, ready for graph capture.

The video prefix runs once and leaves each layer's K/V in buffers; then the Euler loop runs only
the action expert against them. Everything that does not depend on the observation is taken out of
the loop, and every tensor the loop reads or writes is preallocated:

* The sigma grid is fixed per call, so the expert's timestep embedding and each layer's AdaLN
  modulation ``scale_shift_table + time_proj(t)`` are computed once per (steps, shift) for all
  steps (``(1 + scale)`` included) instead of once per step and layer.
* The prefix K/V live in per-layer buffers ``[B, heads, N_prefix + H, head_dim]`` (the layout SDPA
  reads); each step writes its action K/V into the tail and attends to the whole buffer WITHOUT a
  mask (actions see first frame + actions: nothing else is in the buffer).
* The expert's cross-attention K/V of [instruction; state] are copied into static buffers.
* RoPE is precomputed as two tables (``embed.rope_tables``).
* Linears are called as ``F.linear`` on the parameters themselves (no module dispatch), so a weight
  update is always seen; only the precomputed modulation depends on parameter values, and it is
  rebuilt whenever a parameter of the expert or the video DiT changes (version counter / storage).
* The prefix pass (with IDM's prefix mask where there is one) and every action step run the one
  Wan block, ``block.cached_block``, over the block's weights (``block.BlockWeights``).

The eager module-by-module reference these numbers are tested against lives in the tests
(``test/model_reference.py``).

Capture (``compile``):

* ``"none"``: the static prefix and loop run eagerly.
* ``"cudagraph"``: on CUDA, the prefix and the whole Euler loop are each captured once into a
  ``torch.cuda.CUDAGraph`` and replayed (inputs are copied into the static buffers first). On CPU
  the same static functions run eagerly (capture degenerates to eager replay), so the buffer
  handling is tested on CPU.
* ``"torch_compile"``: ``cached_block`` is compiled by inductor (one compile per token count,
  shared by all layers, since weights are arguments), which fuses the norms, modulation, RoPE,
  casts and residuals around the GEMMs and attentions (~23 kernels per layer on an H200); on CUDA
  the prefix and the loop are then captured into CUDA graphs as with ``"cudagraph"``. If
  compilation fails the eager block is used (logged).

Real-time chunking (``rtc``) uses the same loop: ``prefill``, then ``velocity`` differentiated in x.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import torch
import torch.nn.functional as F

from fastwam.model.action_expert import action_rope
from fastwam.model.block import BlockConstants, BlockWeights, cached_block, folded_modulation
from fastwam.model.context import ActionCache, Context
from fastwam.model.embed import patchify, rope_tables, time_embedding, token_grid, video_rope
from fastwam.model.flow import euler, guided, sigma_grid

COMPILE_MODES = ("none", "cudagraph", "torch_compile")

log = logging.getLogger(__name__)


def check_compile_mode(mode: str) -> str:
    if mode not in COMPILE_MODES:
        raise ValueError(f"unknown compile mode {mode!r}; expected one of {COMPILE_MODES}")
    return mode


class ActionLoop:
    """Static-shape prefix + Euler loop for one (batch, prefix length, context length, steps, CFG,
    samples).

    ``prefill(prefix_latents, ctx, prefix_mask)`` fills the cache from an observation;
    ``sample(noise)`` -> actions [B * samples, H, A] fp32 (the two stages ``FastWAM.infer`` times),
    sample index fastest. The returned actions are a fresh tensor; the cache is the loop's own
    (overwritten next call).

    ``samples`` > 1 draws several chunks per observation from ONE prefix pass: the prefix K/V are
    computed at the observation batch, then copied to each draw's rows of the expert's cache.
    ``model`` is a ``FastWAM`` (its ``config``, ``video``, ``expert``, ``device``, ``dtype``).
    """

    inductor_mode: str | None = None  # torch.compile mode of the block ("torch_compile")

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

        cos, sin = action_rope(cfg.action_horizon, hd, dev)  # [1, H, 1, head_dim]
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
        self.action_rope = rope_tables(cos, sin)  # fp32, like the eager RoPE
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
        self.sigmas: torch.Tensor | None = None  # [steps + 1] fp32
        self.mods: torch.Tensor | None = None  # [steps, layers, 6, D] fp32
        self.prefix_mods: torch.Tensor | None = None  # [layers, 6, D] fp32 (t = 0)
        self.expert_w: list[BlockWeights] = []
        self.video_w: list[BlockWeights] = []
        self._params = [*model.expert.parameters(), *model.video.parameters()]
        self._expert_const = BlockConstants.of(model.expert.blocks[0])
        self._video_const = BlockConstants.of(model.video.blocks[0])
        # The block: eager, or inductor-compiled (one compile per token count: weights are inputs).
        self._layer: Callable = cached_block
        if self.mode == "torch_compile":
            self._layer = torch.compile(cached_block, mode=self.inductor_mode, dynamic=False, fullgraph=True)
        self.capture = self.mode in ("cudagraph", "torch_compile") and dev.type == "cuda"
        self._prefix_graph = None
        self._loop_graph = None
        self._prefix_rope: tuple[torch.Tensor, torch.Tensor] | None = None  # (C, S) tables
        self._prefix_shape: tuple | None = None

    # -- constants ---------------------------------------------------------------------------------
    def _param_key(self) -> tuple:
        # Over a list made once: walking the 5 B model's module tree costs ~2.7 ms per call, the
        # storage/version check of its 1650 tensors 0.3 ms. (A Parameter replaced by a new object,
        # e.g. load_state_dict(assign=True), is not seen: clear model._action_loops after one.)
        return tuple((p.data_ptr(), p._version) for p in self._params)

    @torch.no_grad()
    def _refresh_constants(self) -> bool:
        """(Re)compute the per-step modulation and the weight bundles if a parameter changed (new
        values or new storage); True if it did."""
        key = self._param_key()
        if key == self._const_key:
            return False
        model, ex, vm = self.model, self.model.expert, self.model.video
        self.sigmas = sigma_grid(self.steps, model.config.sample_shift, device=self.device)
        like = torch.empty(0, device=self.device, dtype=model.dtype)
        _, proj = time_embedding(ex.condition_embedder, self.sigmas[: self.steps], like)
        proj = proj.unflatten(1, (6, -1))  # [steps, 6, D]
        # [steps, layers, 6, D] fp32 (eager: table + proj.float())
        self.mods = torch.stack([folded_modulation(b.scale_shift_table, proj) for b in ex.blocks], 1)
        # The prefix: every token at t = 0, one modulation per layer.
        _, proj0 = time_embedding(vm.condition_embedder, torch.zeros(1, device=self.device), like)
        proj0 = proj0.unflatten(1, (6, -1))[0]  # [6, D]
        self.prefix_mods = torch.stack([folded_modulation(b.scale_shift_table, proj0)[0] for b in vm.blocks])
        self.expert_w = [BlockWeights.of(b, detach=True) for b in ex.blocks]
        self.video_w = [BlockWeights.of(b, detach=True) for b in vm.blocks]
        self._const_key = key
        # Graphs captured against the old constants / storages are stale.
        self._loop_graph = None
        self._prefix_graph = None
        return True

    # -- the static functions (eager on CPU, captured on CUDA) --------------------------------------
    def _expert(
        self, x: torch.Tensor, mods: torch.Tensor, layer_fn: Callable, k: list, v: list
    ) -> torch.Tensor:
        """One expert evaluation against the cache: x [bb, H, A] fp32, mods [layers, 6, D] fp32,
        the self-attention K/V buffers k, v per layer -> velocity [bb, H, A] fp32."""
        ex = self.model.expert
        h = F.linear(x.to(self.model.dtype), ex.action_in.weight, ex.action_in.bias)
        n0, c = self.n_prefix, self._expert_const
        for layer, w in enumerate(self.expert_w):
            h = layer_fn(
                h, w, c, mods[layer], k[layer], v[layer], n0, self.cache.expert_kv[layer], self.action_rope
            )
        return F.linear(h, ex.proj_out.weight, ex.proj_out.bias).float()  # the bare head

    def _loop_static(self) -> None:
        """noise buffer -> out buffer (the whole Euler loop; what the CUDA graph holds)."""
        k, v = self.cache.k, self.cache.v

        def velocity(x, i):
            return guided(lambda xx: self._expert(xx, self.mods[i], self._layer, k, v), x, self.scale)

        self.out.copy_(euler(velocity, self.noise, self.sigmas))

    def _prefix_static(self) -> None:
        """latents + video context buffers -> prefix K/V buffers (what the prefix graph holds)."""
        cache = self.prefix_cache
        h = patchify(self.model.video, self.latents)  # [pb, N, D]
        last = len(self.video_w) - 1
        for layer, w in enumerate(self.video_w):
            h = self._layer(h, w, self._video_const, self.prefix_mods[layer], cache.k[layer], cache.v[layer],
                            0, self.video_kv[layer], self._prefix_rope, self.prefix_mask, kv_only=layer == last)  # fmt: skip
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
        """``_run``, falling back to the eager block if the compiled one fails (compile errors)."""
        try:
            self._run(fn, graph_attr)
        except Exception as err:
            if self._layer is cached_block:
                raise
            log.warning("torch.compile of the Wan block failed (%s); running the eager block", err)
            self._layer = cached_block
            setattr(self, graph_attr, None)
            self._run(fn, graph_attr)

    # -- the API -------------------------------------------------------------------------------------
    @torch.no_grad()
    def prefill(
        self, prefix_latents: torch.Tensor, ctx: Context, prefix_mask: torch.Tensor | None = None
    ) -> None:
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
            hp, wp = token_grid(model.video, prefix_latents)
            cos, sin = video_rope(model.video, shape[2], hp, wp)
            self._prefix_rope = rope_tables(cos.to(self.device), sin.to(self.device))
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

    def velocity(self, x: torch.Tensor, step: int) -> torch.Tensor:
        """The guided (CFG) velocity at Euler step ``step`` of the loop's grid (``sigmas[step]``)
        for x [B * samples, H, A] against the prefilled cache, eager and differentiable in x (real-
        time chunking). The action tokens' K/V go into the cache tail through fresh detached views
        of the buffers, so the prefix K/V enter as constants and a call's graph never reaches back
        into an earlier call's. Call after ``prefill`` (whose constants it reads)."""
        k = [t.detach() for t in self.cache.k]
        v = [t.detach() for t in self.cache.v]
        return guided(lambda xx: self._expert(xx, self.mods[step], cached_block, k, v), x, self.scale)
