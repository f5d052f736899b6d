"""The static (graph-capture ready) action loop equals the eager reference path, call after call."""

from __future__ import annotations

import pytest
import torch

from fastwam.model import FastWAM
from fastwam.model.action_loop import ActionLoop, check_compile_mode
from fastwam.model.block import cached_block
from fastwam.model.fastwam import Context
from fastwam.model.masks import build_mask
from fastwam.model_config import preset

import model_reference as ref  # the eager oracle, beside the tests (see conftest.py)

B, HP, WP = 2, 2, 2  # tiny: 4x4 latents -> 2x2 tokens per frame
TOL = 1e-5  # fp32

# On CUDA the "cudagraph" / "torch_compile" modes really capture; on CPU they run the same static
# code eagerly. Inputs and noise are drawn on CPU generators, so every device sees the same numbers.
DEVICES = [
    "cpu",
    pytest.param(
        "cuda",
        marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine"),
    ),
]


@pytest.fixture(autouse=True)
def _exact_fp32_matmuls():
    # TF32 would make the fp32 comparisons on CUDA measure TF32 rounding, not the loop.
    prev = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = prev


def _model(variant="fast_wam", seed=0, device="cpu") -> FastWAM:
    torch.manual_seed(seed)
    return FastWAM(preset("tiny", variant=variant)).to(device).eval()


def _observation(model, seed):
    g = torch.Generator().manual_seed(seed)
    cfg = model.config
    first = torch.randn(B, cfg.video.in_channels, 1, 2 * HP, 2 * WP, generator=g)
    state = torch.randn(B, cfg.state_dim, generator=g)
    return first.to(model.device), state.to(model.device)


def _instruction(model, seed) -> tuple[Context, Context]:
    g = torch.Generator().manual_seed(seed)
    cfg = model.config
    text = torch.randn(1, cfg.text_max_length, cfg.video.text_dim, generator=g).to(model.device)
    mask = torch.arange(cfg.text_max_length, device=model.device)[None] < 5 + seed % 7
    return model.encode_instruction(text, mask), model.encode_instruction(torch.zeros_like(text), mask)


def _reference(model, first, cond, uncond, scale, seed) -> torch.Tensor:
    """Eager path: a fresh cache from build_action_cache + the module-by-module sample_actions."""
    ctx = cond if scale == 1.0 else Context.cat([cond, uncond])
    prefix = first if scale == 1.0 else torch.cat([first, first])
    cache = ref.build_action_cache(model, prefix, ctx)
    return ref.sample_actions(model, cache, B, cfg_scale=scale, generator=torch.Generator().manual_seed(seed))


def _check(model, mode, first, state, text, scale, seed, what):
    cond = model.with_state(text[0], state)
    uncond = model.with_state(text[1], state)
    got, _ = model.infer(
        first, cond, uncond, cfg_scale=scale, generator=torch.Generator().manual_seed(seed), compile=mode
    )
    expected = _reference(model, first, cond, uncond, scale, seed)
    diff = (got - expected).abs().max().item()
    assert diff <= TOL, f"{what}: optimized ({mode}) vs eager max abs diff {diff:.3e} > {TOL}"
    return got


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("mode", ["none", "cudagraph"])
@pytest.mark.parametrize("scale", [1.0, 2.5])
@torch.no_grad()
def test_static_loop_equals_eager_path_across_calls_observations_and_instructions(mode, scale, device):
    model = _model(device=device)
    towel, cup = _instruction(model, 1), _instruction(model, 2)
    outs = []
    # New observation every call, then a different instruction, then back: buffers refreshed each time.
    for i, (text, obs_seed) in enumerate([(towel, 10), (towel, 11), (cup, 11), (towel, 10)]):
        first, state = _observation(model, obs_seed)
        outs.append(_check(model, mode, first, state, text, scale, seed=3, what=f"call {i}"))
    assert len(model._action_loops) == 1  # one static loop served every call
    assert (outs[0] - outs[1]).abs().max() > 1e-3  # the observation matters
    assert (outs[1] - outs[2]).abs().max() > 1e-3  # the instruction matters
    assert torch.equal(outs[0], outs[3])  # nothing stale: same inputs, same actions


@pytest.mark.parametrize("device", DEVICES)
@torch.no_grad()
def test_capture_modes_give_the_same_actions_as_the_static_eager_loop(device):
    model = _model(device=device)
    first, state = _observation(model, 4)
    cond = model.with_state(_instruction(model, 1)[0], state)
    runs = {}
    for mode in ("none", "cudagraph"):
        runs[mode], _ = model.infer(first, cond, generator=torch.Generator().manual_seed(0), compile=mode)
    diff = (runs["none"] - runs["cudagraph"]).abs().max().item()
    assert diff <= TOL, f"cudagraph vs none max abs diff {diff:.3e}"


@pytest.mark.slow  # inductor compiles C++
@pytest.mark.parametrize("device", DEVICES)
@torch.no_grad()
def test_torch_compile_mode_equals_the_eager_path(device):
    """Inductor on CPU (reduce-overhead CUDA graphs on CUDA): compiled per-step function."""
    model = _model(device=device)
    text = _instruction(model, 1)
    for obs_seed in (20, 21):
        first, state = _observation(model, obs_seed)
        _check(model, "torch_compile", first, state, text, 1.0, seed=4, what=f"observation {obs_seed}")
    loop = next(iter(model._action_loops.values()))
    assert loop.mode == "torch_compile" and loop._layer is not cached_block  # compiled, no fallback


@pytest.mark.parametrize("device", DEVICES)
@torch.no_grad()
def test_bfloat16_loop_stays_within_bfloat16_rounding_of_the_eager_path(device):
    model = _model(device=device).to(torch.bfloat16)
    first, state = _observation(model, 9)
    cond = model.with_state(_instruction(model, 1)[0], state)
    got, _ = model.infer(first, cond, generator=torch.Generator().manual_seed(0), compile="cudagraph")
    expected = ref.sample_actions(
        model,
        ref.build_action_cache(model, first.to(torch.bfloat16), cond),
        B,
        generator=torch.Generator().manual_seed(0),
    )
    diff, scale = (got - expected).abs().max().item(), expected.abs().max().item()
    assert diff <= 1e-2 * max(1.0, scale), (
        f"bf16 optimized vs eager max abs diff {diff:.3e} (|ref| {scale:.2f})"
    )


@torch.no_grad()
def test_loop_follows_weight_updates():
    """The per-step modulation is precomputed: an in-place weight change must be picked up."""
    model = _model()
    first, state = _observation(model, 5)
    text = _instruction(model, 1)
    before = _check(model, "none", first, state, text, 1.0, seed=1, what="before")
    model.expert.blocks[0].scale_shift_table.add_(0.3)
    model.expert.condition_embedder.time_proj.weight.mul_(1.5)
    model.video.blocks[0].ffn.net[2].weight.mul_(0.5)
    after = _check(model, "none", first, state, text, 1.0, seed=1, what="after")
    assert (before - after).abs().max() > 1e-4


@torch.no_grad()
def test_loop_cache_holds_the_reference_prefix_kv():
    model = _model()
    first, state = _observation(model, 6)
    ctx = model.with_state(_instruction(model, 1)[0], state)
    expected = ref.build_action_cache(model, first, ctx)
    loop = model.action_loop(first, ctx, steps=3, cfg_scale=1.0, batch=B, compile="cudagraph")
    loop.prefill(first, ctx)
    n0 = expected.n_prefix
    for layer in range(len(expected.k)):
        assert torch.allclose(loop.cache.k[layer][:, :, :n0], expected.k[layer][:, :, :n0], atol=1e-6)
        assert torch.allclose(loop.cache.v[layer][:, :, :n0], expected.v[layer][:, :, :n0], atol=1e-6)
        assert torch.equal(loop.cache.expert_kv[layer][0], ctx.expert_kv[layer][0])
    other, _ = _observation(model, 7)
    with pytest.raises(ValueError, match="prefix"):
        loop.prefill(torch.cat([other, other], dim=2), ctx)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("mode", ["none", "cudagraph"])
@pytest.mark.parametrize("scale", [1.0, 2.5])
@torch.no_grad()
def test_several_draws_per_chunk_average_the_eager_draws_of_one_prefix(mode, scale, device):
    """samples=S: the mean of S eager chains, each from its own noise against the same prefix."""
    model = _model(device=device)
    first, state = _observation(model, 13)
    text = _instruction(model, 1)
    s = 3
    got, _ = model.infer(
        first,
        model.with_state(text[0], state),
        model.with_state(text[1], state),
        cfg_scale=scale,
        generator=torch.Generator().manual_seed(6),
        compile=mode,
        samples=s,
    )
    assert got.shape == (B, model.config.action_horizon, model.config.action_dim)
    # The reference: every observation repeated S times (draws of one observation adjacent), one
    # noise tensor [B * S, H, A] from the same generator, then the mean over each row's draws.
    rep_first, rep_state = first.repeat_interleave(s, 0), state.repeat_interleave(s, 0)
    cond, uncond = model.with_state(text[0], rep_state), model.with_state(text[1], rep_state)
    ctx = cond if scale == 1.0 else Context.cat([cond, uncond])
    prefix = rep_first if scale == 1.0 else torch.cat([rep_first, rep_first])
    draws = ref.sample_actions(
        model,
        ref.build_action_cache(model, prefix, ctx),
        B * s,
        cfg_scale=scale,
        generator=torch.Generator().manual_seed(6),
    ).unflatten(0, (B, s))
    diff = (got - draws.mean(1)).abs().max().item()
    assert diff <= TOL, f"mean of {s} draws: optimized ({mode}) vs eager max abs diff {diff:.3e}"
    assert (draws[:, 0] - draws[:, 1]).abs().max() > 1e-3  # the draws differ: the mean is not one draw
    loop = next(iter(model._action_loops.values()))
    assert loop.latents.shape[0] == B * (1 if scale == 1.0 else 2)  # one prefix pass per observation


@torch.no_grad()
def test_several_draws_need_the_cached_loop():
    model = _model("joint")
    first, state = _observation(model, 14)
    ctx = model.with_state(_instruction(model, 1)[0], state)
    with pytest.raises(ValueError, match="cached action loop"):
        model.infer(first, ctx, samples=2)
    with pytest.raises(ValueError, match="at least 1"):
        _model().infer(first, ctx, samples=0)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("samples", [1, 2])
@torch.no_grad()
def test_idm_actions_through_the_loop_equal_the_eager_path(device, samples):
    model = _model("idm", device=device)
    cfg = model.config
    first, state = _observation(model, 8)
    ctx = model.with_state(_instruction(model, 1)[0], state)
    got, _ = model.infer(
        first, ctx, generator=torch.Generator().manual_seed(2), compile="cudagraph", samples=samples
    )
    gen = torch.Generator().manual_seed(2)
    steps = cfg.num_inference_steps
    future = model.sample_future_video(first, ctx, steps, 1.0, gen)  # one imagined future per row
    prefix = torch.cat([first, future], dim=2).repeat_interleave(samples, 0)
    rep_ctx = model.with_state(_instruction(model, 1)[0], state.repeat_interleave(samples, 0))
    mask = build_mask("idm", {"first": HP * WP, "cond": HP * WP * future.shape[2]}, device=model.device)
    cache = ref.build_action_cache(model, prefix, rep_ctx, mask)
    expected = ref.sample_actions(model, cache, B * samples, generator=gen).unflatten(0, (B, samples)).mean(1)
    diff = (got - expected).abs().max().item()
    assert diff <= TOL, f"idm optimized vs eager max abs diff {diff:.3e}"


@pytest.mark.slow  # a second model built and looped: 2 s idle, 10-13 s on a busy 2-core machine
@torch.no_grad()
def test_blocks_without_a_cross_attention_norm_run_through_the_loop():
    """``cross_attn_norm=False`` makes diffusers' norm2 an Identity: the functional block skips it."""
    import dataclasses

    cfg = preset("tiny")
    torch.manual_seed(0)
    model = FastWAM(cfg.replace(video=dataclasses.asdict(cfg.video) | {"cross_attn_norm": False})).eval()
    assert isinstance(model.video.blocks[0].norm2, torch.nn.Identity)
    first, state = _observation(model, 12)
    for mode in ("none", "torch_compile"):
        _check(model, mode, first, state, _instruction(model, 1), 1.0, seed=5, what=f"no norm2 ({mode})")


def test_unknown_compile_mode_is_refused():
    with pytest.raises(ValueError, match="compile mode"):
        check_compile_mode("graphs")
    with pytest.raises(ValueError, match="compile mode"):
        ActionLoop(_model(), 1, 4, 5, 3, 1.0, compile="fast")
