"""Fast-WAM and its controlled variants (fast_wam, joint, idm, no_cotrain) in one module.

Trainable parts: the Wan2.2 video DiT (``self.video``, a stock diffusers ``WanTransformer3DModel``
whose submodules are driven by ``fastwam.model.mot``), the action expert (``self.expert``) and the
optional state token projection (``self.state_proj``: Linear state_dim -> text_dim, one extra
context token appended to the instruction embedding; both branches see it through cross-attention).

Positions (RoPE): video tokens use Wan's 3-D (frame, row, column) positions; action token j uses
a 1-D RoPE over the whole head dim at position j (``action_expert.action_rope``, as the authors'
code), so actions have identical positions in training (future frames present) and in Fast-WAM
inference (first frame only). The action head is a bare Linear (no norm or modulation).

Inference (``infer``):

* fast_wam / no_cotrain: one video pass over the clean first-frame latents (t = 0, no mask: the
  first frame sees only itself) fills per-layer K/V buffers ``[B, heads, N_prefix + H, head_dim]``;
  each of the N Euler steps runs only the action expert, writes its K/V into the buffer tail and
  attends to the whole buffer (no mask: actions see first frame + actions). ``infer`` runs this
  as a static ``ActionLoop`` (``fastwam.model.action_loop``: per-step modulation precomputed,
  preallocated buffers, optional CUDA graphs / torch.compile); ``build_action_cache`` +
  ``sample_actions`` are the eager reference it is tested against.
* joint: each step runs the full masked MoT over [first frame, noisy future video, noisy actions]
  and updates video and actions together (the imagine-then-execute reference: no caching).
* idm: N steps of masked video-only denoising of the future frames, then a prefix pass over
  [first frame, generated future] (cached as above) and N action-expert steps.

Classifier-free guidance: unconditional = the empty instruction (``""`` through the text encoder,
without the prompt template), state token kept; the conditional and unconditional passes run as
one batch of 2B; ``v = v_u + s (v_c - v_u)``; s = 1.0 skips the unconditional pass.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from fastwam.config import FastWAMConfig
from fastwam.model import flow
from fastwam.model.action_expert import ActionExpert, action_rope, init_expert_from_video
from fastwam.model.action_loop import ActionLoop, check_compile_mode
from fastwam.model.masks import build_mask
from fastwam.model.mot import Stream, cross_kv, post_attention, pre_attention, prefix_kv, shared_layer
from fastwam.model.wan import build_video_transformer, load_video_transformer

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
    rope: tuple[torch.Tensor, torch.Tensor]  # action RoPE [1, H, 1, head_dim]


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

    def _layer_pairs(self):
        return zip(self.video.blocks, self.expert.blocks)

    def _raw_context(self, text_embeds, text_mask, state) -> torch.Tensor:
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

    def _time_embed(self, embedder, t: torch.Tensor, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """t in [0, 1], any shape S -> temb [*S, D], temb_proj [*S, 6 D] (diffusers' dtype handling)."""
        shape = t.shape
        ts = embedder.timesteps_proj((t * flow.TIMESTEP_SCALE).flatten()).unflatten(0, shape)
        emb_dtype = next(iter(embedder.time_embedder.parameters())).dtype
        if ts.dtype != emb_dtype:
            ts = ts.to(emb_dtype)
        temb = embedder.time_embedder(ts).type_as(like)
        return temb, embedder.time_proj(embedder.act_fn(temb))

    def _video_embed(self, latents: torch.Tensor, t_frames: torch.Tensor):
        """latents [B, C, F, h, w], per-frame t [B, F] -> tokens [B, N, D], temb [B, N, D],
        temb_proj [B, N, 6, D], tokens per frame."""
        vm = self.video
        x = vm.patch_embedding(latents.to(self.dtype)).flatten(2).transpose(1, 2).contiguous()
        per_frame = x.shape[1] // latents.shape[2]
        t_tok = t_frames.repeat_interleave(per_frame, dim=1)
        temb, proj = self._time_embed(vm.condition_embedder, t_tok, x)
        return x, temb, proj.unflatten(2, (6, -1)), per_frame

    def _video_rope(self, num_frames: int, hp: int, wp: int):
        """RoPE of frames 0..num_frames-1 of an hp x wp token grid: [1, N, 1, head_dim] each."""
        p_t, p_h, p_w = self.video.config.patch_size
        return self.video.rope(torch.empty(1, 1, num_frames * p_t, hp * p_h, wp * p_w, device="meta"))

    def _video_out(self, x: torch.Tensor, temb: torch.Tensor, grid: tuple[int, int, int]) -> torch.Tensor:
        vm = self.video
        shift, scale = (vm.scale_shift_table.unsqueeze(0) + temb.unsqueeze(2)).chunk(2, dim=2)
        x = (vm.norm_out(x.float()) * (1 + scale.squeeze(2)) + shift.squeeze(2)).type_as(x)
        x = vm.proj_out(x)
        p_t, p_h, p_w = vm.config.patch_size
        f, hp, wp = grid
        x = x.reshape(x.shape[0], f, hp, wp, p_t, p_h, p_w, -1).permute(0, 7, 1, 4, 2, 5, 3, 6)
        return x.flatten(6, 7).flatten(4, 5).flatten(2, 3)

    def _action_rope(self, device) -> tuple[torch.Tensor, torch.Tensor]:
        return action_rope(self.config.action_horizon, self.config.video.attention_head_dim, device)

    def _action_out(self, x: torch.Tensor) -> torch.Tensor:
        return self.expert.proj_out(x).float()

    def _grid(self, latents: torch.Tensor) -> tuple[int, int]:
        _, p_h, p_w = self.video.config.patch_size
        return latents.shape[-2] // p_h, latents.shape[-1] // p_w

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
        video_rope per video token, actions [B, H, A] (or None), t_actions [B].
        Returns (video velocity [B, C, F, h, w], action velocity [B, H, A] or None).
        """
        xv, temb_v, proj_v, _ = self._video_embed(video_latents, t_frames)
        xa = proj_a = rope_a = None
        if actions is not None:
            xa = self.expert.action_in(actions.to(self.dtype))
            _, proj_a = self._time_embed(self.expert.condition_embedder, t_actions, xa)
            proj_a = proj_a.unflatten(1, (6, -1))
            rope_a = self._action_rope(xa.device)
        for layer, (vb, ab) in enumerate(self._layer_pairs()):
            streams = [Stream(xv, proj_v, video_rope, **ctx.video_stream_kwargs(layer))]
            blocks = [vb]
            if xa is not None:
                streams.append(Stream(xa, proj_a, rope_a, **ctx.expert_stream_kwargs(layer)))
                blocks.append(ab)
            run = self.layer_runners[layer] if self.layer_runners is not None else _layer_outputs
            if self.gradient_checkpointing and torch.is_grad_enabled():
                new = checkpoint(run, blocks, streams, mask, use_reentrant=False)
            else:
                new = run(blocks, streams, mask)
            xv = new[0]
            xa = new[1] if xa is not None else None
        f = video_latents.shape[2]
        video_v = self._video_out(xv, temb_v, (f, *self._grid(video_latents)))
        action_v = self._action_out(xa) if xa is not None else None
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
        cotrain = cfg.variant != "no_cotrain"
        if cotrain and f != cfg.num_latent_frames:
            raise ValueError(f"latents have {f} frames, config expects {cfg.num_latent_frames}")
        dev = latents.device
        raw = self._raw_context(text_embeds, text_mask, state)
        ctx = Context(
            video_ctx=self.video.condition_embedder.text_embedder(raw),
            expert_ctx=self.expert.condition_embedder.text_embedder(raw),
        )
        t_act = self._sample_t(b, generator, dev)
        eps_a = torch.randn(actions.shape, generator=generator, device=dev, dtype=torch.float32)
        actions = actions.float()
        a_t = flow.add_noise(actions, eps_a, t_act)

        hp, wp = self._grid(latents)
        first = latents[:, :, :1].float()
        n0 = hp * wp
        if not cotrain:
            video_in, t_frames = first, torch.zeros(b, 1, device=dev)
            sizes = {"first": n0}
            rope = self._video_rope(1, hp, wp)
        else:
            fut = latents[:, :, 1:].float()
            nf = fut.shape[2]
            t_vid = self._sample_t(b, generator, dev)
            eps_v = torch.randn(fut.shape, generator=generator, device=dev, dtype=torch.float32)
            fut_t = flow.add_noise(fut, eps_v, t_vid)
            video_in = torch.cat([first, fut_t], dim=2)
            t_frames = torch.cat([torch.zeros(b, 1, device=dev), t_vid[:, None].expand(b, nf)], dim=1)
            sizes = {"first": n0, "future": n0 * nf}
            rope = self._video_rope(1 + nf, hp, wp)
            if cfg.variant == "idm":
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
        cv = self.video.condition_embedder.text_embedder(raw)
        ca = self.expert.condition_embedder.text_embedder(raw)
        return Context(
            video_kv=[cross_kv(vb.attn2, cv) for vb in self.video.blocks],
            expert_kv=[cross_kv(ab.attn2, ca) for ab in self.expert.blocks],
        )

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

    # -- inference: cached action loop --------------------------------------------------------------
    @torch.no_grad()
    def build_action_cache(
        self,
        prefix_latents: torch.Tensor,
        ctx: Context,
        prefix_mask: torch.Tensor | None = None,
        out: ActionCache | None = None,
        rope: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> ActionCache:
        """Run the video branch once over clean prefix latents [B, C, F, h, w] (t = 0) and keep each
        layer's K/V in buffers with room for the H action tokens.

        Only what the cache needs is computed: every prefix token has t = 0, so the timestep
        embedding and the modulation are computed once per sample (not per token); the last
        layer contributes only its K/V (no query, attention output, cross-attention or FFN), and
        the output head never runs. ``out``: write into these preallocated buffers (static
        addresses for graph capture) instead of allocating; ``rope``: precomputed prefix RoPE."""
        b, _, f, h, w = prefix_latents.shape
        hp, wp = self._grid(prefix_latents)
        vm = self.video
        x = vm.patch_embedding(prefix_latents.to(self.dtype)).flatten(2).transpose(1, 2).contiguous()
        zeros = torch.zeros(b, device=prefix_latents.device)
        _, proj = self._time_embed(vm.condition_embedder, zeros, x)
        proj = proj.unflatten(1, (6, -1))  # [B, 6, D]: the same for every token
        rope = rope if rope is not None else self._video_rope(f, hp, wp)
        n_prefix = x.shape[1]
        n_layers = len(vm.blocks)
        if out is None:
            heads = vm.config.num_attention_heads
            hd = vm.config.attention_head_dim
            n_all = n_prefix + self.config.action_horizon
            out = ActionCache(
                k=[x.new_empty(b, heads, n_all, hd) for _ in range(n_layers)],
                v=[x.new_empty(b, heads, n_all, hd) for _ in range(n_layers)],
                n_prefix=n_prefix,
                expert_kv=ctx.expert_kv,
                rope=self._action_rope(x.device),
            )
        elif out.n_prefix != n_prefix:
            raise ValueError(f"cache buffers hold {out.n_prefix} prefix tokens, the prefix has {n_prefix}")
        for layer, vb in enumerate(vm.blocks):
            s = Stream(x, proj, rope, **ctx.video_stream_kwargs(layer))
            if layer == n_layers - 1:
                k, v = prefix_kv(vb, s)
            else:
                (x,), ((k, v),) = shared_layer([vb], [s], prefix_mask)
            out.k[layer][:, :, :n_prefix].copy_(k)
            out.v[layer][:, :, :n_prefix].copy_(v)
        return out

    # No @torch.no_grad(): real-time chunking (fastwam.model.rtc) differentiates it in x; its callers
    # here (sample_actions, infer) run under no_grad.
    def action_velocity(self, cache: ActionCache, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """One action-expert evaluation against the cache: x [B, H, A], t [B] -> velocity [B, H, A].

        Static shapes, no data-dependent control flow: capturable with CUDA graphs."""
        ex = self.expert
        h = ex.action_in(x.to(self.dtype))
        _, proj = self._time_embed(ex.condition_embedder, t, h)
        proj = proj.unflatten(1, (6, -1))
        n0 = cache.n_prefix
        for layer, ab in enumerate(ex.blocks):
            s = Stream(h, proj, cache.rope, context_kv=cache.expert_kv[layer])
            q, k, v, mods = pre_attention(ab, s)
            cache.k[layer][:, :, n0:].copy_(k)
            cache.v[layer][:, :, n0:].copy_(v)
            o = F.scaled_dot_product_attention(q, cache.k[layer], cache.v[layer])
            h = post_attention(ab, s, o, q, mods)
        return self._action_out(h)

    def _guided(self, fn: Callable, x: torch.Tensor, scale: float) -> torch.Tensor:
        """fn(x_batch) on [x; x] (cond; uncond) when scale != 1, combined with CFG."""
        if scale == 1.0:
            return fn(x)
        v = fn(torch.cat([x, x]))
        vc, vu = v.chunk(2)
        return flow.cfg_combine(vc, vu, scale)

    @torch.no_grad()
    def sample_actions(
        self,
        cache: ActionCache,
        batch_size: int,
        steps: int | None = None,
        cfg_scale: float | None = None,
        generator: torch.Generator | None = None,
        noise: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Euler integration of the action flow from t = 1 to 0 against a cache -> [B, H, A] (fp32).
        With cfg_scale != 1 the cache must hold [cond; uncond] (batch 2B)."""
        cfg = self.config
        steps = steps or cfg.num_inference_steps
        scale = cfg.cfg_scale if cfg_scale is None else cfg_scale
        shape = (batch_size, cfg.action_horizon, cfg.action_dim)
        x = noise if noise is not None else self._randn(shape, generator)
        x = x.float()
        sig = flow.sigma_grid(steps, cfg.sample_shift, device=self.device)
        for i in range(steps):
            t = sig[i].expand(x.shape[0] * (1 if scale == 1.0 else 2))
            v = self._guided(lambda xx, t=t: self.action_velocity(cache, xx, t), x, scale)
            x = x + (sig[i + 1] - sig[i]) * v
        return x

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
            hp, wp = self._grid(prefix)
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
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """Actions [B, H, A] (normalised, fp32) from the first-frame latents [B, C, 1, h, w] and the
        context (``with_state(encode_instruction(...), state)``). Returns (actions, timings_ms) with
        keys "prefix" and "action" (``sync`` is called before each clock read, e.g. cuda.synchronize).

        The cached variants run the static ``ActionLoop`` (same numbers as ``build_action_cache`` +
        ``sample_actions``, tested to 1e-5); ``compile`` overrides ``self.compile_mode``.
        ``samples`` (default ``config.num_action_samples``): the actions are the mean of this many
        draws, sampled as one batch against one prefix pass (IDM: one imagined future for all)."""
        cfg = self.config
        steps = steps or cfg.num_inference_steps
        scale = cfg.cfg_scale if cfg_scale is None else cfg_scale
        samples = cfg.num_action_samples if samples is None else samples
        if samples < 1:
            raise ValueError(f"samples must be at least 1, got {samples}")
        if samples > 1 and cfg.variant == "joint":
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
        if cfg.variant in ("fast_wam", "no_cotrain"):
            prefix = first_latents if scale == 1.0 else torch.cat([first_latents, first_latents])
            mask = None
        elif cfg.variant == "joint":
            t1 = t0
            actions = self._sample_joint(first_latents, ctx, steps, scale, generator)
        else:
            future = self._sample_future_video(first_latents, ctx, steps, scale, generator)
            prefix = torch.cat([first_latents, future.to(self.dtype)], dim=2)
            hp, wp = self._grid(prefix)
            mask = build_mask(
                "idm", {"first": hp * wp, "cond": hp * wp * future.shape[2]}, device=self.device
            )
            if scale != 1.0:
                prefix = torch.cat([prefix, prefix])
        if cfg.variant != "joint":
            loop = self.action_loop(prefix, ctx, steps, scale, b, compile=compile, samples=samples)
            loop.prefill(prefix, ctx, mask)
            sync()
            t1 = time.perf_counter()
            shape = (b * samples, cfg.action_horizon, cfg.action_dim)
            actions = loop.sample(self._randn(shape, generator))
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

    @torch.no_grad()
    def _sample_future_video(self, first, ctx, steps, scale, generator) -> torch.Tensor:
        """IDM stage 1: denoise the future latent frames (video branch only, masked)."""
        fut = self._future_noise(first, generator)
        nf = fut.shape[2]
        hp, wp = self._grid(first)
        rope = self._video_rope(1 + nf, hp, wp)
        mask = build_mask("idm", {"first": hp * wp, "future": hp * wp * nf}, device=self.device)
        sig = flow.sigma_grid(steps, self.config.sample_shift, device=self.device)
        for i in range(steps):

            def fn(xx, t=sig[i]):
                n = xx.shape[0]
                lat = torch.cat([_repeat_batch(first, n), xx.to(self.dtype)], dim=2)
                tf = torch.cat([torch.zeros(n, 1, device=self.device), t.expand(n, nf)], dim=1)
                return self.forward_tokens(lat, tf, rope, ctx, mask=mask)[0][:, :, 1:].float()

            fut = fut + (sig[i + 1] - sig[i]) * self._guided(fn, fut, scale)
        return fut

    @torch.no_grad()
    def _sample_joint(self, first, ctx, steps, scale, generator) -> torch.Tensor:
        """Joint: video and actions denoised together, full masked pass per step."""
        cfg = self.config
        b = first.shape[0]
        fut = self._future_noise(first, generator)
        act = self._randn((b, cfg.action_horizon, cfg.action_dim), generator)
        nf = fut.shape[2]
        hp, wp = self._grid(first)
        rope = self._video_rope(1 + nf, hp, wp)
        mask = build_mask(
            "joint",
            {"first": hp * wp, "future": hp * wp * nf, "action": cfg.action_horizon},
            device=self.device,
        )
        n_fut = fut[0].numel()
        fut_shape = fut.shape[1:]
        sig = flow.sigma_grid(steps, cfg.sample_shift, device=self.device)
        for i in range(steps):

            def fn(xx, t=sig[i]):
                n = xx.shape[0]
                fv = xx[:, :n_fut].view(n, *fut_shape)
                av = xx[:, n_fut:].view(n, cfg.action_horizon, cfg.action_dim)
                lat = torch.cat([_repeat_batch(first, n), fv.to(self.dtype)], dim=2)
                tf = torch.cat([torch.zeros(n, 1, device=self.device), t.expand(n, nf)], dim=1)
                vv, va = self.forward_tokens(lat, tf, rope, ctx, av, t.expand(n), mask)
                return torch.cat([vv[:, :, 1:].float().flatten(1), va.flatten(1)], dim=1)

            state = torch.cat([fut.flatten(1), act.flatten(1)], dim=1)
            state = state + (sig[i + 1] - sig[i]) * self._guided(fn, state, scale)
            fut = state[:, :n_fut].view_as(fut)
            act = state[:, n_fut:].view_as(act)
        return act


def _layer_outputs(blocks, streams, mask):
    return shared_layer(blocks, streams, mask)[0]


def _repeat_batch(x: torch.Tensor, n: int) -> torch.Tensor:
    """[B, ...] -> [n, ...] by stacking copies (n = B, or 2B under CFG)."""
    return x if x.shape[0] == n else torch.cat([x] * (n // x.shape[0]))
