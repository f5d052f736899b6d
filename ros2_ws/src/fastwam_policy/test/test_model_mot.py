"""Exactness of the decomposed MoT: stock diffusers equivalence, K/V cache, masks, sizes."""

from __future__ import annotations

import pytest
import torch

from fastwam.model import FastWAM, flow
from fastwam.model.action_expert import resize_tensor
from fastwam.model.fastwam import Context
from fastwam.model.masks import GROUPS, MASK_RULES, build_mask, group_slices
from fastwam.model.variants import INFERENCE_MODES, RTC_VARIANTS, VARIANT_RULES, variant_rules
from fastwam.model_config import VARIANTS, preset

import model_reference as reference  # the eager oracle, beside the tests (see conftest.py)

B, HP, WP = 2, 2, 2  # tiny: 64x64 composite -> 4x4 latents -> 2x2 tokens per frame


def _model(variant="fast_wam", seed=0, **kw) -> FastWAM:
    torch.manual_seed(seed)
    return FastWAM(preset("tiny", variant=variant, **kw)).eval()


def _inputs(model, seed=1):
    g = torch.Generator().manual_seed(seed)
    cfg = model.config
    latents = torch.randn(B, cfg.video.in_channels, cfg.num_latent_frames, 2 * HP, 2 * WP, generator=g)
    text = torch.randn(B, cfg.text_max_length, cfg.video.text_dim, generator=g)
    state = torch.randn(B, cfg.state_dim, generator=g)
    return latents, text, state


def _plain_context(model, raw) -> Context:
    return Context(
        video_ctx=model.video.condition_embedder.text_embedder(raw),
        expert_ctx=model.expert.condition_embedder.text_embedder(raw),
    )


@torch.no_grad()
def test_decomposed_video_path_equals_stock_diffusers_forward():
    model = _model()
    latents, text, state = _inputs(model)
    raw = model.context_tokens(text, None, state)
    for frames, t in ((1, 0.0), (model.config.num_latent_frames, 0.37)):
        lat = latents[:, :, :frames]
        t_frames = torch.full((B, frames), t)
        t_frames[:, 0] = 0.0
        t_tokens = t_frames.repeat_interleave(HP * WP, dim=1) * 1000.0
        stock = model.video(lat, timestep=t_tokens, encoder_hidden_states=raw).sample
        ours, _ = model.forward_tokens(
            lat, t_frames, model.video_rope(frames, HP, WP), _plain_context(model, raw)
        )
        assert ours.shape == stock.shape
        assert (ours - stock).abs().max().item() <= 1e-5


@torch.no_grad()
def test_cached_fast_wam_equals_uncached_masked_joint_pass_per_step_and_after_10_steps():
    model = _model()
    cfg = model.config
    latents, text, state = _inputs(model)
    first = latents[:, :, :1]
    raw = model.context_tokens(text, None, state)
    plain = _plain_context(model, raw)
    cached_ctx = model.with_state(model.encode_instruction(text), state)
    cache = reference.build_action_cache(model, first, cached_ctx)

    # Reference: one uncached masked pass over [first frame, noisy future video, actions].
    nf = cfg.future_latent_frames
    g = torch.Generator().manual_seed(5)
    future = torch.randn(B, cfg.video.in_channels, nf, 2 * HP, 2 * WP, generator=g)
    video_in = torch.cat([first, future], dim=2)
    rope = model.video_rope(1 + nf, HP, WP)
    mask = build_mask("fast_wam", {"first": HP * WP, "future": HP * WP * nf, "action": cfg.action_horizon})

    steps = 10
    sig = torch.linspace(1.0, 0.0, steps + 1)
    x_cached = torch.randn(B, cfg.action_horizon, cfg.action_dim, generator=g)
    x_ref = x_cached.clone()
    for i in range(steps):
        t = sig[i].expand(B)
        v_cached = reference.action_velocity(model, cache, x_cached, t)
        t_frames = torch.cat([torch.zeros(B, 1), t[:, None].expand(B, nf)], dim=1)
        _, v_ref = model.forward_tokens(video_in, t_frames, rope, plain, x_ref, t, mask)
        assert (v_cached - v_ref).abs().max().item() <= 1e-5, f"step {i}"
        x_cached = x_cached + (sig[i + 1] - sig[i]) * v_cached
        x_ref = x_ref + (sig[i + 1] - sig[i]) * v_ref
    assert (x_cached - x_ref).abs().max().item() <= 1e-5

    # The sampler (flow.euler, the one Euler loop of the model) is the Euler loop written out.
    noise = torch.randn(B, cfg.action_horizon, cfg.action_dim, generator=g)
    sig = model_sigmas(model, 3)
    sampled = flow.euler(
        lambda x, i: reference.action_velocity(model, cache, x, sig[i].expand(B)), noise, sig
    )
    x = noise.clone()
    for i in range(3):
        x = x + (sig[i + 1] - sig[i]) * reference.action_velocity(model, cache, x, sig[i].expand(B))
    assert torch.allclose(sampled, x, atol=1e-6)
    assert torch.allclose(reference.sample_actions(model, cache, B, steps=3, noise=noise), x, atol=1e-6)


@torch.no_grad()
def test_static_loop_velocity_equals_the_uncached_masked_joint_pass():
    """The production cached path (ActionLoop: prefix through ``block.cached_block``, precomputed
    modulation) against the production uncached MoT forward, at every step of the loop's grid."""
    model = _model()
    cfg = model.config
    latents, text, state = _inputs(model)
    first = latents[:, :, :1]
    plain = _plain_context(model, model.context_tokens(text, None, state))
    cached_ctx = model.with_state(model.encode_instruction(text), state)
    loop = model.action_loop(first, cached_ctx, steps=cfg.num_inference_steps, cfg_scale=1.0, batch=B)
    loop.prefill(first, cached_ctx)
    nf = cfg.future_latent_frames
    g = torch.Generator().manual_seed(7)
    video_in = torch.cat([first, torch.randn(B, cfg.video.in_channels, nf, 2 * HP, 2 * WP, generator=g)], 2)
    rope = model.video_rope(1 + nf, HP, WP)
    mask = build_mask("fast_wam", {"first": HP * WP, "future": HP * WP * nf, "action": cfg.action_horizon})
    x = torch.randn(B, cfg.action_horizon, cfg.action_dim, generator=g)
    for i in range(cfg.num_inference_steps):
        t = loop.sigmas[i].expand(B)
        t_frames = torch.cat([torch.zeros(B, 1), t[:, None].expand(B, nf)], dim=1)
        _, v_ref = model.forward_tokens(video_in, t_frames, rope, plain, x, t, mask)
        assert (loop.velocity(x, i) - v_ref).abs().max().item() <= 1e-5, f"step {i}"
        x = x + (loop.sigmas[i + 1] - loop.sigmas[i]) * v_ref


def model_sigmas(model, steps):
    from fastwam.model.flow import sigma_grid

    return sigma_grid(steps, model.config.sample_shift)


@torch.no_grad()
def test_removing_the_mask_changes_the_actions():
    model = _model()
    cfg = model.config
    latents, text, state = _inputs(model)
    ctx = _plain_context(model, model.context_tokens(text, None, state))
    nf = cfg.future_latent_frames
    rope = model.video_rope(1 + nf, HP, WP)
    t_frames = torch.cat([torch.zeros(B, 1), torch.full((B, nf), 0.5)], dim=1)
    actions = torch.randn(B, cfg.action_horizon, cfg.action_dim)
    mask = build_mask("fast_wam", {"first": HP * WP, "future": HP * WP * nf, "action": cfg.action_horizon})
    vm, am = model.forward_tokens(latents, t_frames, rope, ctx, actions, torch.full((B,), 0.5), mask)
    vu, au = model.forward_tokens(latents, t_frames, rope, ctx, actions, torch.full((B,), 0.5), None)
    assert (am - au).abs().max().item() > 1e-3
    assert (vm - vu).abs().max().item() > 1e-3
    # Future video does not reach the actions under the mask: changing it leaves them unchanged.
    other = latents.clone()
    other[:, :, 1:] += 1.0
    _, am2 = model.forward_tokens(other, t_frames, rope, ctx, actions, torch.full((B,), 0.5), mask)
    assert (am - am2).abs().max().item() <= 1e-6


DEFINITIONS = {
    # (query, key) pairs allowed, straight from the paper / issue text.
    "fast_wam": {
        ("first", "first"),
        ("future", "first"),
        ("future", "future"),
        ("action", "first"),
        ("action", "action"),
    },
    "joint": {
        ("first", "first"),
        ("future", "first"),
        ("future", "future"),  # video never attends to actions (the authors' joint mask)
        ("action", "first"),
        ("action", "future"),
        ("action", "action"),
    },
    "idm": {
        ("first", "first"),
        ("future", "first"),
        ("future", "future"),
        ("cond", "first"),
        ("cond", "cond"),
        ("action", "first"),
        ("action", "cond"),
        ("action", "action"),
    },
}
DEFINITIONS["no_cotrain"] = DEFINITIONS["fast_wam"]


@pytest.mark.parametrize("variant", sorted(MASK_RULES))
def test_each_variant_mask_matches_its_definition_group_by_group(variant):
    sizes = {"first": 3, "future": 5, "action": 4}
    if variant == "idm":
        sizes["cond"] = 5
    mask = build_mask(variant, sizes)
    slices = group_slices(sizes)
    assert mask.shape == (sum(sizes.values()),) * 2
    for q in slices:
        for k in slices:
            block = mask[slices[q], slices[k]]
            allowed = (q, k) in DEFINITIONS[variant]
            assert bool(block.all()) if allowed else not bool(block.any()), (variant, q, k)
    assert list(slices) == [g for g in GROUPS if g in sizes]


def test_every_variant_has_rules_that_agree_with_its_mask():
    """variants.VARIANT_RULES and masks.MASK_RULES describe the same variants, and the rules say
    what the masks do: a ground-truth future the actions see is the ``cond`` group; joint's actions
    see the future video (so nothing can be cached before sampling)."""
    assert set(VARIANT_RULES) == set(MASK_RULES) == set(VARIANTS)
    for name, rules in VARIANT_RULES.items():
        assert rules.inference in INFERENCE_MODES
        assert rules.future_condition == ("cond" in MASK_RULES[name]), name
        assert (rules.inference == "joint") == ("future" in MASK_RULES[name]["action"]), name
        assert rules.cached_loop == (rules.inference != "joint")
    assert [v for v, r in VARIANT_RULES.items() if not r.video_loss] == ["no_cotrain"]
    # RTC keeps the prefix fixed while it guides: only the variants whose prefix is the observation.
    assert RTC_VARIANTS == ("fast_wam", "no_cotrain")
    with pytest.raises(ValueError, match="bogus"):
        variant_rules("bogus")


def test_mask_rejects_unknown_groups_and_variants():
    with pytest.raises(ValueError, match="cond"):
        build_mask("fast_wam", {"first": 1, "cond": 1})
    with pytest.raises(ValueError, match="bogus"):
        build_mask("bogus", {"first": 1})


def test_full_size_parameter_counts_on_meta_device():
    with torch.device("meta"):
        model = FastWAM(preset("wan22-5b", action_init="random", state_dim=14))
    video = sum(p.numel() for p in model.video.parameters())
    expert = sum(p.numel() for p in model.expert.parameters())
    assert abs(video - 4_999_787_712) / 4_999_787_712 < 0.01
    assert abs(expert - 1.0e9) / 1.0e9 < 0.05
    blk = model.expert.blocks[0].attn1
    assert (blk.to_q.in_features, blk.to_q.out_features) == (1024, 3072)
    assert (blk.to_out[0].in_features, blk.to_out[0].out_features) == (3072, 1024)
    assert len(model.expert.blocks) == len(model.video.blocks) == 30


def test_resize_init_interpolates_and_rescales_shrinking_inputs():
    src = torch.arange(12.0).view(3, 4)  # [out=3, in=4]
    out = resize_tensor(src, (3, 2), scale_by_width=True)
    # Along the input dim: endpoints kept (align_corners), times sqrt(4 / 2).
    assert torch.allclose(out, torch.tensor([[0.0, 3.0], [4.0, 7.0], [8.0, 11.0]]) * 2**0.5)
    grown = resize_tensor(torch.tensor([0.0, 2.0]), (3,), scale_by_width=False)
    assert torch.allclose(grown, torch.tensor([0.0, 1.0, 2.0]))
    model = _model()
    # Expert tensors that exist in the video DiT are resized copies, e.g. the norm_q weights (same size).
    assert torch.equal(model.expert.blocks[1].attn1.norm_q.weight, model.video.blocks[1].attn1.norm_q.weight)
    # The blocks' modulation tables get the width ratio too (24 -> 16: sqrt(24 / 16)), biases do not.
    table = resize_tensor(model.video.blocks[0].scale_shift_table, (1, 6, 16), scale_by_width=False)
    assert torch.allclose(model.expert.blocks[0].scale_shift_table, table * (24 / 16) ** 0.5)
    bias = resize_tensor(model.video.blocks[0].attn1.to_out[0].bias, (16,), scale_by_width=False)
    assert torch.allclose(model.expert.blocks[0].attn1.to_out[0].bias, bias)
    random_model = _model(action_init="random")
    assert not torch.equal(
        random_model.expert.blocks[1].attn1.to_q.weight,
        resize_tensor(random_model.video.blocks[1].attn1.to_q.weight, (24, 16), True),
    )


def test_the_action_head_is_a_bare_linear_not_taken_from_the_video_head():
    torch.manual_seed(0)
    a = FastWAM(preset("tiny")).expert
    assert not hasattr(a, "norm_out") and not hasattr(a, "scale_shift_table")
    torch.manual_seed(0)
    video = FastWAM(preset("tiny")).video
    # from_video init leaves the head at PyTorch's random init: not a resize of the latent-patch head.
    assert not torch.allclose(a.proj_out.weight, resize_tensor(video.proj_out.weight, (4, 16), True))
    x = torch.randn(2, 3, a.dim)
    assert torch.equal(a.proj_out(x), x @ a.proj_out.weight.T + a.proj_out.bias)


def test_action_rope_is_1d_over_the_whole_head_dim_at_positions_0_to_h_minus_1():
    model = _model()
    cos, sin = model.action_rope("cpu")
    h, d = model.config.action_horizon, model.config.video.attention_head_dim
    assert cos.shape == sin.shape == (1, h, 1, d)
    # Interleaved pairs: angle of pair i at position p is p / 10000^(2i / d).
    angle = torch.arange(h, dtype=torch.float64)[:, None] / 10000.0 ** (torch.arange(0, d, 2) / d)
    assert torch.allclose(cos[0, :, 0, 0::2].double(), torch.cos(angle), atol=1e-6)
    assert torch.allclose(sin[0, :, 0, 1::2].double(), torch.sin(angle), atol=1e-6)
    assert torch.equal(cos[0, 0, 0], torch.ones(d))  # position 0: no rotation
