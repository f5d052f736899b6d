"""Fast-WAM and its controlled variants (fast_wam, joint, idm, no_cotrain) in one module.

Trainable parts: the Wan2.2 video DiT (``self.video``, a stock diffusers ``WanTransformer3DModel``
that holds the weights: its blocks are computed by ``fastwam.model.block``), the action expert (``self.expert``) and the
optional state token projection (``self.state_proj``: Linear state_dim -> text_dim, one extra
context token appended to the instruction embedding; both branches see it through cross-attention).

Positions (RoPE): video tokens use Wan's 3-D (frame, row, column) positions; action token j uses
a 1-D RoPE over the whole head dim at position j (``action_expert.action_rope``, as the authors'
code), so actions have identical positions in training (future frames present) and in Fast-WAM
inference (first frame only). The action head is a bare Linear (no norm or modulation).

Where things live: the Wan block (``block``), the MoT layer (``mot``), embeddings (``embed``),
the context and cache types (``context``), the variants' rules (``variants``, ``masks``), the
sampler (``flow.euler``) and the static cached action loop (``action_loop``).

Inference (``infer``), by the variant's ``inference`` rule:

* ``first_frame`` (fast_wam / no_cotrain): one video pass over the clean first-frame latents
  (t = 0, no mask: the first frame sees only itself) fills per-layer K/V buffers
  ``[B, heads, N_prefix + H, head_dim]``; each of the N Euler steps runs only the action expert,
  writes its K/V into the buffer tail and attends to the whole buffer (no mask: actions see first
  frame + actions). This runs as a static ``ActionLoop`` (per-step modulation precomputed,
  preallocated buffers, optional CUDA graphs / torch.compile); the eager module-by-module
  reference it is tested against is in the tests (``test/model_reference.py``).
* ``joint``: each step runs the full masked MoT over [first frame, noisy future video, noisy
  actions] and updates video and actions together (the imagine-then-execute reference: no cache).
* ``imagined_future`` (idm): N steps of masked video-only denoising of the future frames, then a
  prefix pass over [first frame, generated future] (cached as above) and N action-expert steps.

Classifier-free guidance: unconditional = the empty instruction (``""`` through the text encoder,
without the prompt template), state token kept; the conditional and unconditional passes run as
one batch of 2B; ``v = v_u + s (v_c - v_u)``; s = 1.0 skips the unconditional pass.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from math import prod
from pathlib import Path

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from fastwam.model import embed, flow
from fastwam.model.action_expert import ActionExpert, action_rope, init_expert_from_video
from fastwam.model.action_loop import ActionLoop, check_compile_mode
from fastwam.model.block import BlockConstants, BlockWeights, cross_kv
from fastwam.model.context import ActionCache, Context
from fastwam.model.masks import build_mask
from fastwam.model.mot import Stream, shared_layer
from fastwam.model.variants import variant_rules
from fastwam.model.wan import build_video_transformer, load_video_transformer
from fastwam.model_config import FastWAMConfig

__all__ = ["ActionCache", "Context", "FastWAM"]  # the types are re-exported for callers of this module


class FastWAM(nn.Module):
    def __init__(self, config: FastWAMConfig, video: nn.Module | None = None):
        super().__init__()
        self.config = config
        self.video = video if video is not None else build_video_transformer(config)
        self.expert = ActionExpert(config)
        if config.action_init == "from_video":
            init_expert_from_video(self.expert, self.video)
        self.state_proj = nn.Linear(config.state_dim, config.video.text_dim) if config.state_dim > 0 else None
        self.gradient_checkpointing = False
        # Training under FSDP (fastwam_training.sharding): one callable per layer, (blocks, streams,
        # mask) -> new residual streams, that the uncached MoT loop calls instead of the plain layer
        # function, so that each layer pair is one module call (an FSDP unit that gathers the pair's
        # sharded weights). A plain list, not submodules: nothing enters the state dict. None = off.
        self.layer_runners: list[Callable] | None = None
        # Inference: "none" | "cudagraph" | "torch_compile" (see fastwam.model.action_loop); the
        # static action loops are plain attributes (not modules: nothing enters the state dict).
        self.compile_mode = "none"
        self._action_loops: OrderedDict[tuple, ActionLoop] = OrderedDict()

    @classmethod
    def from_wan_pretrained(
        cls, config: FastWAMConfig, wan_dir: str | Path, dtype: torch.dtype = torch.float32
    ) -> FastWAM:
        """Start of training: pretrained Wan2.2 video DiT from ``<wan_dir>/transformer``; the action
        expert is initialised from it (``action_init="from_video"``) or randomly."""
        video = load_video_transformer(wan_dir, dtype=dtype)
        got = {
            k: getattr(video.config, k) for k in ("num_layers", "num_attention_heads", "attention_head_dim")
        }
        want = {k: getattr(config.video, k) for k in got}
        if got != want:
            raise ValueError(f"{wan_dir}/transformer config {got} does not match the model config {want}")
        return cls(config, video=video).to(dtype)

    # -- small helpers -----------------------------------------------------------------------------
    @property
    def dtype(self) -> torch.dtype:
        return self.expert.action_in.weight.dtype

    @property
    def device(self) -> torch.device:
        return self.expert.action_in.weight.device

    def context_tokens(self, text_embeds, text_mask, state) -> torch.Tensor:
        """[text (padding zeroed); state token] in model dtype: [B, L (+1), D_text]."""
        ctx = text_embeds.to(self.dtype)
        if text_mask is not None:
            ctx = ctx * text_mask.unsqueeze(-1).to(ctx.dtype)
        if self.state_proj is not None:
            if state is None:
                raise ValueError(
                    f"this model conditions on the state (state_dim={self.config.state_dim}): pass state"
                )
            if state.shape[-1] != self.config.state_dim:
                raise ValueError(f"state has {state.shape[-1]} values, model expects {self.config.state_dim}")
            ctx = torch.cat([ctx, self.state_proj(state.to(self.dtype)).unsqueeze(1)], dim=1)
        return ctx

    def token_grid(self, latents: torch.Tensor) -> tuple[int, int]:
        """Tokens per row and column of latents [B, C, F, h, w]."""
        return embed.token_grid(self.video, latents)

    def video_rope(self, num_frames: int, hp: int, wp: int) -> tuple[torch.Tensor, torch.Tensor]:
        """RoPE (cos, sin) of frames 0..num_frames-1 of an hp x wp token grid: [1, N, 1, head_dim]."""
        return embed.video_rope(self.video, num_frames, hp, wp)

    def action_rope(self, device) -> tuple[torch.Tensor, torch.Tensor]:
        """RoPE (cos, sin) of the action tokens: [1, H, 1, head_dim] (``action_expert.action_rope``)."""
        return action_rope(self.config.action_horizon, self.config.video.attention_head_dim, device)

    # -- the shared forward ------------------------------------------------------------------------
    def forward_tokens(
        self,
        video_latents: torch.Tensor,
        t_frames: torch.Tensor,
        video_rope,
        ctx: Context,
        actions: torch.Tensor | None = None,
        t_actions: torch.Tensor | None = None,
        mask: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Masked MoT over [video tokens; action tokens] (uncached; training / joint / IDM video).

        video_latents [B, C, F, h, w] (groups concatenated along frames), t_frames [B, F] in [0, 1],
        video_rope (cos, sin) per video token, actions [B, H, A] (or None), t_actions [B].
        Returns (video velocity [B, C, F, h, w], action velocity [B, H, A] or None).
        """
        vm, ex = self.video, self.expert
        xv = embed.patchify(vm, video_latents.to(self.dtype))
        t_tok = t_frames.repeat_interleave(xv.shape[1] // video_latents.shape[2], dim=1)
        temb_v, proj_v = embed.time_embedding(vm.condition_embedder, t_tok, xv)
        proj_v = proj_v.unflatten(2, (6, -1))  # [B, N, 6, D]: per token
        rope_v = embed.rope_tables(*video_rope)
        xa = proj_a = rope_a = None
        if actions is not None:
            xa = ex.action_in(actions.to(self.dtype))
            _, proj_a = embed.time_embedding(ex.condition_embedder, t_actions, xa)
            proj_a = proj_a.unflatten(1, (6, -1)).unsqueeze(1)  # [B, 1, 6, D]: per sample
            rope_a = embed.rope_tables(*self.action_rope(xa.device))
        for layer, (vb, ab) in enumerate(zip(vm.blocks, ex.blocks)):
            streams = [Stream(xv, proj_v, rope_v, **ctx.video_stream_kwargs(layer))]
            blocks = [vb]
            if xa is not None:
                streams.append(Stream(xa, proj_a, rope_a, **ctx.expert_stream_kwargs(layer)))
                blocks.append(ab)
            run = self.layer_runners[layer] if self.layer_runners is not None else shared_layer
            if self.gradient_checkpointing and torch.is_grad_enabled():
                new = checkpoint(run, blocks, streams, mask, use_reentrant=False)
            else:
                new = run(blocks, streams, mask)
            xv = new[0]
            xa = new[1] if xa is not None else None
        grid = (video_latents.shape[2], *self.token_grid(video_latents))
        video_v = embed.video_head(vm, xv, temb_v, grid)
        action_v = ex.proj_out(xa).float() if xa is not None else None  # the bare head
        return video_v, action_v

    # -- training ----------------------------------------------------------------------------------
    def training_loss(
        self,
        latents: torch.Tensor,
        actions: torch.Tensor,
        action_mask: torch.Tensor,
        latent_frame_mask: torch.Tensor,
        text_embeds: torch.Tensor,
        text_mask: torch.Tensor | None = None,
        state: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> dict[str, torch.Tensor]:
        """Flow-matching loss L = L_act + lambda_video L_vid for one batch.

        Batch (B samples):

        * latents [B, C, F, h, w]: normalised VAE latents (``WanComponents.encode_video``) of the
          chunk, F = 1 + future latent frames (1 + 2 for 9 pixel frames); frame 0 = current
          observation (kept clean, t = 0). no_cotrain ignores frames >= 1 (F = 1 allowed).
        * actions [B, H, A] normalised; action_mask [B, H] bool (False = padding past episode end).
        * latent_frame_mask [B, F] bool (``wan.latent_frame_mask`` of the pixel frame mask).
        * text_embeds [B, L, D_text] (``encode_text``), text_mask [B, L] bool or None.
        * state [B, S] normalised, required iff ``config.state_dim > 0``.

        Times: t_act [B] and t_vid [B] drawn independently from ``config.timestep_distribution``;
        video tokens get per-token times (0 on the first frame). IDM additionally feeds a second
        copy of the ground-truth future latents (noise-augmented with probability
        ``idm_noise_aug_prob``, t by ``idm_noise_aug_law``) that the actions attend to.
        Each loss is a per-sample mean over valid tokens, weighted by ``config.loss_weighting`` of
        the sample's t, averaged over the batch (a sample with no valid token contributes 0).
        Returns {"loss", "action_loss", "video_loss"} (scalars; video_loss = 0 for no_cotrain).
        """
        cfg = self.config
        b, _, f, h, w = latents.shape
        if actions.shape[0] != b or actions.shape[1:] != (cfg.action_horizon, cfg.action_dim):
            raise ValueError(
                f"actions must be [B={b}, {cfg.action_horizon}, {cfg.action_dim}], got {tuple(actions.shape)}"
            )
        if action_mask.shape != actions.shape[:2]:
            raise ValueError(
                f"action_mask must be {tuple(actions.shape[:2])}, got {tuple(action_mask.shape)}"
            )
        if latent_frame_mask.shape != (b, f):
            raise ValueError(f"latent_frame_mask must be {(b, f)}, got {tuple(latent_frame_mask.shape)}")
        rules = variant_rules(cfg.variant)
        cotrain = rules.video_loss
        if cotrain and f != cfg.num_latent_frames:
            raise ValueError(f"latents have {f} frames, config expects {cfg.num_latent_frames}")
        dev = latents.device
        raw = self.context_tokens(text_embeds, text_mask, state)
        ctx = Context(
            video_ctx=self.video.condition_embedder.text_embedder(raw),
            expert_ctx=self.expert.condition_embedder.text_embedder(raw),
        )
        t_act = self._sample_t(b, generator, dev)
        eps_a = torch.randn(actions.shape, generator=generator, device=dev, dtype=torch.float32)
        actions = actions.float()
        a_t = flow.add_noise(actions, eps_a, t_act)

        hp, wp = self.token_grid(latents)
        first = latents[:, :, :1].float()
        n0 = hp * wp
        if not cotrain:
            video_in, t_frames = first, torch.zeros(b, 1, device=dev)
            sizes = {"first": n0}
            rope = self.video_rope(1, hp, wp)
        else:
            fut = latents[:, :, 1:].float()
            nf = fut.shape[2]
            t_vid = self._sample_t(b, generator, dev)
            eps_v = torch.randn(fut.shape, generator=generator, device=dev, dtype=torch.float32)
            fut_t = flow.add_noise(fut, eps_v, t_vid)
            video_in = torch.cat([first, fut_t], dim=2)
            t_frames = torch.cat([torch.zeros(b, 1, device=dev), t_vid[:, None].expand(b, nf)], dim=1)
            sizes = {"first": n0, "future": n0 * nf}
            rope = self.video_rope(1 + nf, hp, wp)
            if rules.future_condition:
                t_aug = self._idm_aug_t(b, generator, dev)
                eps_c = torch.randn(fut.shape, generator=generator, device=dev, dtype=torch.float32)
                cond = flow.add_noise(fut, eps_c, t_aug)
                video_in = torch.cat([video_in, cond], dim=2)
                t_frames = torch.cat([t_frames, t_aug[:, None].expand(b, nf)], dim=1)
                sizes["cond"] = n0 * nf
                rope = tuple(torch.cat([r, r[:, n0:]], dim=1) for r in rope)
        sizes["action"] = cfg.action_horizon
        mask = build_mask(cfg.variant, sizes, device=dev)
        video_v, action_v = self.forward_tokens(video_in, t_frames, rope, ctx, a_t, t_act, mask)

        # Per sample over its valid tokens, weighted by the sample's t, then the batch mean (the authors').
        per_sample = flow.per_sample_mse(action_v, eps_a - actions, action_mask)
        action_loss = (per_sample * self._loss_weight(t_act)).mean()
        if cotrain:
            pred = video_v[:, :, 1 : 1 + nf].transpose(1, 2)  # [B, F-1, C, h, w]
            per_sample = flow.per_sample_mse(pred, (eps_v - fut).transpose(1, 2), latent_frame_mask[:, 1:])
            video_loss = (per_sample * self._loss_weight(t_vid)).mean()
        else:
            video_loss = torch.zeros((), device=dev)
        loss = action_loss + cfg.lambda_video * video_loss
        return {"loss": loss, "action_loss": action_loss.detach(), "video_loss": video_loss.detach()}

    def _idm_aug_t(self, n: int, generator, device) -> torch.Tensor:
        """IDM: the noise time of the ground-truth future latents the actions see ([n]; 0 = clean)."""
        cfg = self.config
        aug = torch.rand(n, generator=generator, device=device) < cfg.idm_noise_aug_prob
        if cfg.idm_noise_aug_law == "training_t":
            return self._sample_t(n, generator, device) * aug
        return torch.rand(n, generator=generator, device=device) * cfg.idm_noise_aug_max_t * aug

    def _loss_weight(self, t: torch.Tensor) -> torch.Tensor:
        return flow.loss_weight(t, self.config.loss_weighting, self.config.timestep_shift).to(t.device)

    def _sample_t(self, n: int, generator, device) -> torch.Tensor:
        cfg = self.config
        return flow.sample_t(
            n,
            cfg.timestep_distribution,
            shift=cfg.timestep_shift,
            mean=cfg.logit_normal_mean,
            std=cfg.logit_normal_std,
            generator=generator,
            device=device,
        )

    # -- inference: context -----------------------------------------------------------------------
    @torch.no_grad()
    def encode_instruction(self, text_embeds: torch.Tensor, text_mask: torch.Tensor | None = None) -> Context:
        """Per-instruction cache: both branches' per-layer cross-attention K/V of the text tokens."""
        raw = text_embeds.to(self.dtype)
        if text_mask is not None:
            raw = raw * text_mask.unsqueeze(-1).to(raw.dtype)
        return self._context_kv(raw)

    def _context_kv(self, raw: torch.Tensor) -> Context:
        def per_layer(branch):
            tokens = branch.condition_embedder.text_embedder(raw)
            return [cross_kv(BlockWeights.of(b), BlockConstants.of(b), tokens) for b in branch.blocks]

        return Context(video_kv=per_layer(self.video), expert_kv=per_layer(self.expert))

    @torch.no_grad()
    def with_state(self, text: Context, state: torch.Tensor | None) -> Context:
        """Append the state token's K/V (per call) to the cached instruction K/V."""
        if self.state_proj is None:
            return text
        if state is None:
            raise ValueError(
                f"this model conditions on the state (state_dim={self.config.state_dim}): pass state"
            )
        tok = self.state_proj(state.to(self.dtype)).unsqueeze(1)  # [B, 1, D_text]
        s = self._context_kv(tok)
        # The text K/V may have batch 1 (one instruction) while the state has batch B.
        b = tok.shape[0]

        def join(a, c):
            return [
                (torch.cat([ka.expand(b, -1, -1, -1), kc], 2), torch.cat([va.expand(b, -1, -1, -1), vc], 2))
                for (ka, va), (kc, vc) in zip(a, c)
            ]

        return Context(video_kv=join(text.video_kv, s.video_kv), expert_kv=join(text.expert_kv, s.expert_kv))

    # -- inference: the cached action loop ----------------------------------------------------------
    max_action_loops = 4

    def action_loop(
        self,
        prefix: torch.Tensor,
        ctx: Context,
        steps: int,
        cfg_scale: float,
        batch: int,
        compile: str | None = None,
        samples: int = 1,
    ) -> ActionLoop:
        """The static loop for these shapes (built once, reused while the shapes stay the same)."""
        mode = check_compile_mode(compile or self.compile_mode)
        ctx_len = ctx.expert_kv[0][0].shape[2]
        key = (
            tuple(prefix.shape), ctx_len, steps, float(cfg_scale), batch, samples, mode, self.device, self.dtype,
        )  # fmt: skip
        loop = self._action_loops.get(key)
        if loop is None:
            hp, wp = self.token_grid(prefix)
            n_prefix = prefix.shape[2] // self.video.config.patch_size[0] * hp * wp
            loop = ActionLoop(self, batch, n_prefix, ctx_len, steps, cfg_scale, compile=mode, samples=samples)
            self._action_loops[key] = loop
            while len(self._action_loops) > self.max_action_loops:
                self._action_loops.popitem(last=False)
        else:
            self._action_loops.move_to_end(key)
        return loop

    # -- inference: the variants --------------------------------------------------------------------
    @torch.no_grad()
    def infer(
        self,
        first_latents: torch.Tensor,
        cond: Context,
        uncond: Context | None = None,
        steps: int | None = None,
        cfg_scale: float | None = None,
        generator: torch.Generator | None = None,
        sync: Callable[[], None] | None = None,
        compile: str | None = None,
        samples: int | None = None,
        noise: torch.Tensor | None = None,
        sampler: Callable[[ActionLoop, torch.Tensor], torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """Actions [B, H, A] (normalised, fp32) from the first-frame latents [B, C, 1, h, w] and the
        context (``with_state(encode_instruction(...), state)``). Returns (actions, timings_ms) with
        keys "prefix" and "action" (``sync`` is called before each clock read, e.g. cuda.synchronize).

        The cached variants run the static ``ActionLoop`` (tested against the eager module-by-module
        reference to 1e-5); ``compile`` overrides ``self.compile_mode``.
        ``samples`` (default ``config.num_action_samples``): the actions are the mean of this many
        draws, sampled as one batch against one prefix pass (IDM: one imagined future for all).
        ``noise`` [B * samples, H, A] instead of drawing it from ``generator``; ``sampler(loop,
        noise)`` instead of ``ActionLoop.sample`` for the action stage of the cached variants (real-
        time chunking's guided sampler, ``rtc.infer_guided``)."""
        cfg = self.config
        rules = variant_rules(cfg.variant)
        steps = steps or cfg.num_inference_steps
        scale = cfg.cfg_scale if cfg_scale is None else cfg_scale
        samples = cfg.num_action_samples if samples is None else samples
        if samples < 1:
            raise ValueError(f"samples must be at least 1, got {samples}")
        if samples > 1 and not rules.cached_loop:
            raise ValueError(
                "several action samples per chunk need the cached action loop (fast_wam, no_cotrain, "
                "idm); joint denoises video and actions together"
            )
        if scale != 1.0 and uncond is None:
            raise ValueError("cfg_scale != 1 needs the unconditional context")
        ctx = cond if scale == 1.0 else Context.cat([cond, uncond])
        b = first_latents.shape[0]
        first_latents = first_latents.to(self.device, self.dtype)
        sync = sync or (lambda: None)
        sync()
        t0 = time.perf_counter()
        if not rules.cached_loop:
            actions = self._sample_joint(first_latents, ctx, steps, scale, generator)
            sync()
            return actions, {"prefix": 0.0, "action": (time.perf_counter() - t0) * 1e3}
        prefix, mask = first_latents, None
        if rules.inference == "imagined_future":
            prefix, mask = self._imagined_prefix(first_latents, ctx, steps, scale, generator)
        if scale != 1.0:
            prefix = torch.cat([prefix, prefix])
        loop = self.action_loop(prefix, ctx, steps, scale, b, compile=compile, samples=samples)
        loop.prefill(prefix, ctx, mask)
        sync()
        t1 = time.perf_counter()
        if noise is None:
            noise = self._randn((b * samples, cfg.action_horizon, cfg.action_dim), generator)
        actions = (sampler or ActionLoop.sample)(loop, noise.to(self.device))
        actions = actions.unflatten(0, (b, samples)).mean(1)  # [B, H, A]
        sync()
        t2 = time.perf_counter()
        return actions, {"prefix": (t1 - t0) * 1e3, "action": (t2 - t1) * 1e3}

    def _randn(self, shape, generator: torch.Generator | None) -> torch.Tensor:
        """fp32 noise on the model's device, drawn on the generator's device (a CPU generator
        gives the same numbers whatever device the model is on)."""
        dev = generator.device if generator is not None else self.device
        return torch.randn(shape, generator=generator, device=dev).to(self.device)

    def _future_noise(self, first: torch.Tensor, generator) -> torch.Tensor:
        b, c, _, h, w = first.shape
        shape = (b, c, self.config.future_latent_frames, h, w)
        return self._randn(shape, generator)

    def _imagined_prefix(self, first, ctx, steps, scale, generator) -> tuple[torch.Tensor, torch.Tensor]:
        """IDM's prefix: [first; imagined future] latents and the IDM mask over them."""
        future = self.sample_future_video(first, ctx, steps, scale, generator)
        prefix = torch.cat([first, future.to(self.dtype)], dim=2)
        n0 = prod(self.token_grid(prefix))
        mask = build_mask("idm", {"first": n0, "cond": n0 * future.shape[2]}, device=self.device)
        return prefix, mask

    @torch.no_grad()
    def sample_future_video(self, first, ctx, steps, scale, generator) -> torch.Tensor:
        """IDM stage 1: denoise the future latent frames (video branch only, masked) -> fp32."""
        fut = self._future_noise(first, generator)
        nf = fut.shape[2]
        hp, wp = self.token_grid(first)
        rope = self.video_rope(1 + nf, hp, wp)
        mask = build_mask("idm", {"first": hp * wp, "future": hp * wp * nf}, device=self.device)
        sig = flow.sigma_grid(steps, self.config.sample_shift, device=self.device)

        def velocity(x, i):
            def batch(xx):
                n = xx.shape[0]
                lat = torch.cat([_repeat_batch(first, n), xx.to(self.dtype)], dim=2)
                tf = torch.cat([torch.zeros(n, 1, device=self.device), sig[i].expand(n, nf)], dim=1)
                return self.forward_tokens(lat, tf, rope, ctx, mask=mask)[0][:, :, 1:].float()

            return flow.guided(batch, x, scale)

        return flow.euler(velocity, fut, sig)

    @torch.no_grad()
    def _sample_joint(self, first, ctx, steps, scale, generator) -> torch.Tensor:
        """Joint: video and actions denoised together, full masked pass per step; the Euler state
        is [future video; actions] flattened per sample."""
        cfg = self.config
        b = first.shape[0]
        fut = self._future_noise(first, generator)
        act = self._randn((b, cfg.action_horizon, cfg.action_dim), generator)
        nf = fut.shape[2]
        hp, wp = self.token_grid(first)
        rope = self.video_rope(1 + nf, hp, wp)
        mask = build_mask(
            "joint",
            {"first": hp * wp, "future": hp * wp * nf, "action": cfg.action_horizon},
            device=self.device,
        )
        n_fut = fut[0].numel()
        fut_shape = fut.shape[1:]
        sig = flow.sigma_grid(steps, cfg.sample_shift, device=self.device)

        def velocity(x, i):
            def batch(xx):
                n = xx.shape[0]
                fv = xx[:, :n_fut].view(n, *fut_shape)
                av = xx[:, n_fut:].view(n, cfg.action_horizon, cfg.action_dim)
                lat = torch.cat([_repeat_batch(first, n), fv.to(self.dtype)], dim=2)
                tf = torch.cat([torch.zeros(n, 1, device=self.device), sig[i].expand(n, nf)], dim=1)
                vv, va = self.forward_tokens(lat, tf, rope, ctx, av, sig[i].expand(n), mask)
                return torch.cat([vv[:, :, 1:].float().flatten(1), va.flatten(1)], dim=1)

            return flow.guided(batch, x, scale)

        state = flow.euler(velocity, torch.cat([fut.flatten(1), act.flatten(1)], dim=1), sig)
        return state[:, n_fut:].view_as(act)


def _repeat_batch(x: torch.Tensor, n: int) -> torch.Tensor:
    """[B, ...] -> [n, ...] by stacking copies (n = B, or 2B under CFG)."""
    return x if x.shape[0] == n else torch.cat([x] * (n // x.shape[0]))
