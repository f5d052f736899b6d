"""Real-time chunking (fastwam.model.rtc): the soft mask schedules against their definitions, the
clipped guidance weight, guidance off = plain sampling (model and policy), and a chunk guided by a
previous plan that disagrees with it follows that plan over the frozen delay."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from fastwam.model import FastWAM, rtc
from fastwam.model.flow import sigma_grid
from fastwam.model_config import preset

import model_reference as reference  # the eager oracle, beside the tests (see conftest.py)

H, A = 16, 6
SIG = sigma_grid(10, 5.0).tolist()


# -- the mask and the weight --------------------------------------------------------------------
def _paper_weights(d: int, end: int, horizon: int, schedule: str) -> list[float]:
    """Element by element from the definitions (paper: W_i = 1 for i < d, c_i (e^c_i - 1) / (e - 1)
    for d <= i < H - s with c_i = (H - s - i) / (H - s - d + 1), 0 after; end = H - s)."""
    out = []
    for i in range(horizon):
        if schedule == "ones":
            out.append(1.0 if i < end else 0.0)
        elif i < d:
            out.append(1.0)
        elif i >= end or schedule == "zeros":
            out.append(0.0)
        else:
            c = (end - i) / (end - d + 1)
            out.append(c if schedule == "linear" else c * (math.exp(c) - 1) / (math.e - 1))
    return out


@pytest.mark.parametrize("schedule", rtc.SCHEDULES)
@pytest.mark.parametrize(("d", "end"), [(0, 8), (3, 10), (5, 5), (4, 16), (0, 0)])
def test_prefix_weights_match_their_definitions(schedule, d, end):
    np.testing.assert_allclose(rtc.prefix_weights(d, end, H, schedule), _paper_weights(d, end, H, schedule))


def test_prefix_weights_known_values_and_caps():
    np.testing.assert_allclose(rtc.prefix_weights(2, 6, 8, "linear"), [1, 1, 0.8, 0.6, 0.4, 0.2, 0, 0])
    np.testing.assert_allclose(rtc.prefix_weights(2, 6, 8, "zeros"), [1, 1, 0, 0, 0, 0, 0, 0])
    np.testing.assert_allclose(rtc.prefix_weights(2, 6, 8, "ones"), [1, 1, 1, 1, 1, 1, 0, 0])
    exp = rtc.prefix_weights(2, 6, 8, "exp")
    assert exp[2] == pytest.approx(0.8 * math.expm1(0.8) / (math.e - 1)) and (np.diff(exp[1:7]) < 0).all()
    # The delay is capped at the end of the overlap, the overlap at the horizon.
    np.testing.assert_allclose(rtc.prefix_weights(9, 4, 8, "linear"), [1, 1, 1, 1, 0, 0, 0, 0])
    np.testing.assert_allclose(rtc.prefix_weights(0, 99, 4, "ones"), [1, 1, 1, 1])
    with pytest.raises(ValueError, match="schedule"):
        rtc.prefix_weights(1, 4, 8, "cosine")


def test_guidance_weight_is_the_papers_clipped_weight():
    # tau = 1 - t; (1 - tau) / (tau r^2) with r^2 = (1 - tau)^2 / (tau^2 + (1 - tau)^2).
    for t in (0.2, 0.5, 0.7):
        tau = 1 - t
        r2 = (1 - tau) ** 2 / (tau**2 + (1 - tau) ** 2)
        assert rtc.guidance_weight(t, 100.0) == pytest.approx((1 - tau) / (tau * r2))
    assert rtc.guidance_weight(0.5, 100.0) == pytest.approx(2.0)
    assert rtc.guidance_weight(0.9, 5.0) == 5.0  # 9.1 clipped
    assert rtc.guidance_weight(1.0, 5.0) == 5.0 and rtc.guidance_weight(0.0, 5.0) == 5.0  # infinite
    assert rtc.guidance_weight(0.5, 0.0) == 0.0


def test_guide_for_a_plan_ends_the_weights_where_the_plan_ends():
    plan = np.ones((5, A))
    guide = rtc.ChunkGuide.for_plan(plan, delay=2, execution_horizon=0, horizon=H, schedule="ones")
    np.testing.assert_allclose(guide.weights, [1] * 5 + [0] * (H - 5))
    guide = rtc.ChunkGuide.for_plan(plan, delay=2, execution_horizon=3, horizon=H, schedule="ones")
    np.testing.assert_allclose(guide.weights, [1] * 3 + [0] * (H - 3))
    target, weights = guide.padded(H, "cpu")
    assert target.shape == (H, A) and weights.shape == (H, 1) and target[5:].abs().sum() == 0
    with pytest.raises(ValueError, match="non-finite"):
        rtc.ChunkGuide(np.full((2, A), np.nan), np.ones(H))


def test_delay_steps_is_the_rounded_up_median_latency():
    assert rtc.delay_steps([], 15.0, 32) == 0
    assert rtc.delay_steps([0.2], 15.0, 32) == 3  # 3.0 steps
    assert rtc.delay_steps([0.21, 5.0, 0.19, 0.2, 0.22], 15.0, 32) == 4  # one slow chunk ignored
    assert rtc.delay_steps([10.0], 15.0, 32) == 31


# -- guided sampling with the model -------------------------------------------------------------
@pytest.fixture(scope="module")
def model_and_cache():
    torch.manual_seed(0)
    # Ten steps, as the shipped configs sample (the tiny preset's three are too coarse for beta 5).
    model = FastWAM(preset("tiny", action_horizon=H, action_dim=A, state_dim=0, num_inference_steps=10))
    model = model.eval()
    cfg = model.config
    g = torch.Generator().manual_seed(1)
    first = torch.randn(1, cfg.video.in_channels, 1, 4, 4, generator=g)
    text = torch.randn(1, cfg.text_max_length, cfg.video.text_dim, generator=g)
    ctx = model.with_state(model.encode_instruction(text), None)
    return model, first, ctx


def _noise(seed: int, n: int = 1) -> torch.Tensor:
    return torch.randn(n, H, A, generator=torch.Generator().manual_seed(seed))


def _guided(model, first, ctx, target, weights, beta, noise, samples=1):
    actions, _ = rtc.infer_guided(
        model, first, ctx, None, torch.as_tensor(target).float(), torch.as_tensor(weights).float()[:, None],
        beta, noise=noise, samples=samples,
    )  # fmt: skip
    return actions[0]


def test_guidance_weight_zero_and_zero_mask_equal_plain_sampling(model_and_cache):
    model, first, ctx = model_and_cache
    noise = _noise(2)
    # Plain sampling: the static loop of FastWAM.infer, from the same noise (generator seed 2).
    plain = model.infer(first, ctx, generator=torch.Generator().manual_seed(2), samples=1)[0][0]
    target = torch.randn(H, A)
    weights = rtc.prefix_weights(4, 12, H, "exp")
    # beta = 0: the plain velocity, no backward pass.
    assert torch.equal(_guided(model, first, ctx, target, weights, 0.0, noise), plain)
    # beta > 0 but a mask of zeros: the vector-Jacobian product runs and contributes nothing.
    zero = _guided(model, first, ctx, target, np.zeros(H), 5.0, noise)
    assert (zero - plain).abs().max().item() <= 1e-6
    # The eager module-by-module reference draws the same chunk.
    eager = reference.sample_actions(model, reference.build_action_cache(model, first, ctx), 1, noise=noise)
    assert (eager[0] - plain).abs().max().item() <= 1e-4


def test_frozen_prefix_follows_the_previous_plan(model_and_cache):
    """The previous plan is another draw (another mode of a multimodal policy). Guided, the new
    chunk's first d steps equal it up to what PiGDM guidance leaves. For a velocity that does not
    depend on x the frozen steps' error shrinks by |1 - |dt_i| w_i| per Euler step: a factor
    0.012 over this grid (10 steps, shift 5, beta 5); the random expert's Jacobian leaves 0.045
    here. The bound is 0.1 of the unguided disagreement."""
    model, first, ctx = model_and_cache
    cache = reference.build_action_cache(model, first, ctx)
    previous = reference.sample_actions(model, cache, 1, noise=_noise(10))[0]
    free = reference.sample_actions(model, cache, 1, noise=_noise(11))[0]
    d, end = 4, 10
    weights = rtc.prefix_weights(d, end, H, "exp")
    guided = _guided(model, first, ctx, previous, weights, 5.0, _noise(11))
    unguided_err = (free[:d] - previous[:d]).abs().max().item()
    guided_err = (guided[:d] - previous[:d]).abs().max().item()
    assert unguided_err > 0.5  # the two draws do disagree
    ideal = np.prod([abs(1 - (a - b) * rtc.guidance_weight(a, 5.0)) for a, b in zip(SIG[:-1], SIG[1:])])
    assert ideal < 0.02
    assert guided_err <= 0.1 * unguided_err, (guided_err, unguided_err)
    # Stronger clipping follows it more closely; the free tail is left to the model.
    strong = _guided(model, first, ctx, previous, weights, 10.0, _noise(11))
    assert (strong[:d] - previous[:d]).abs().max().item() < guided_err
    assert (guided[end:] - previous[end:]).abs().max().item() > 10 * guided_err
    # Several draws: each is guided, so their mean follows the plan too.
    mean = _guided(model, first, ctx, previous, weights, 5.0, _noise(11, 3), samples=3)
    assert (mean[:d] - previous[:d]).abs().max().item() <= 0.1 * unguided_err


def test_guidance_differentiates_the_action_expert_only(model_and_cache):
    model, first, ctx = model_and_cache
    steps = model.config.num_inference_steps
    loop = model.action_loop(first, ctx, steps, 1.0, 1)
    loop.prefill(first, ctx)
    cache = loop.cache
    n0 = cache.n_prefix
    prefix_k = [k[:, :, :n0].clone() for k in cache.k]
    sig = sigma_grid(steps, model.config.sample_shift)
    assert torch.equal(loop.sigmas, sig)
    out = rtc.sample_guided(loop.velocity, _noise(3), sig, torch.zeros(H, A), torch.ones(H, 1), 5.0)
    assert torch.isfinite(out).all() and not out.requires_grad
    assert all(torch.equal(k[:, :, :n0], p) for k, p in zip(cache.k, prefix_k))  # constant prefix
    assert all(p.grad is None for p in model.parameters())  # a VJP in x, no parameter gradients


def test_cfg_guided_with_zero_weight_equals_plain_cfg_sampling():
    torch.manual_seed(0)
    model = FastWAM(preset("tiny", action_horizon=H, action_dim=A, state_dim=0, cfg_scale=2.0)).eval()
    cfg = model.config
    g = torch.Generator().manual_seed(1)
    first = torch.randn(1, cfg.video.in_channels, 1, 4, 4, generator=g)
    cond = model.encode_instruction(torch.randn(1, cfg.text_max_length, cfg.video.text_dim, generator=g))
    uncond = model.encode_instruction(torch.zeros(1, cfg.text_max_length, cfg.video.text_dim))
    noise = _noise(4)
    from fastwam.model.fastwam import Context

    plain = model.infer(first, cond, uncond, generator=torch.Generator().manual_seed(4))[0][0]
    guided, _ = rtc.infer_guided(
        model, first, cond, uncond, torch.zeros(H, A), torch.zeros(H, 1), 5.0, noise=noise
    )
    assert (guided[0] - plain).abs().max().item() <= 1e-6
    cache = reference.build_action_cache(model, torch.cat([first, first]), Context.cat([cond, uncond]))
    eager = reference.sample_actions(model, cache, 1, noise=noise)[0]
    assert (eager - plain).abs().max().item() <= 1e-5  # the static loop against the eager reference


def test_policy_predict_with_a_guide(tmp_path):
    """FastWAMPolicy.predict(guide=...) in physical units: beta 0 gives the plain chunk (the static
    loop against the eager guided path), a guide pulls the first steps to the plan it carries."""
    from fastwam.camera import CameraLayout
    from fastwam.checkpoint import create_random_checkpoint
    from fastwam.policy import FastWAMPolicy
    from fastwam.robot import JointGroup, RobotSpec

    group = JointGroup("arm", tuple(f"j{i}" for i in range(A)), (-2.0,) * A, (2.0,) * A, (1.0,) * A)
    robot = RobotSpec("r", (group,), ("arm",), ("arm",))
    layout = CameraLayout.row(("head",), 32, 32)
    path = create_random_checkpoint(tmp_path / "ckpt", "tiny", layout, robot, action_horizon=H)
    policy = FastWAMPolicy.from_pretrained(path)
    policy.num_inference_steps = 10
    images = {"head": np.full((32, 32, 3), 128, np.uint8)}
    state = np.zeros(A)

    def predict(guide=None, seed=5):
        g = torch.Generator().manual_seed(seed)
        return policy.predict(images, state, "fold", generator=g, guide=guide).actions

    plain = predict()
    plan = predict(seed=6)
    off = rtc.ChunkGuide.for_plan(plan, 4, 10, H, "exp", max_guidance_weight=0.0)
    np.testing.assert_allclose(predict(off), plain, atol=1e-4)
    on = rtc.ChunkGuide.for_plan(plan, 4, 10, H, "exp", max_guidance_weight=5.0)
    guided = predict(on)
    assert guided.shape == (H, A)
    assert np.abs(guided[:4] - plan[:4]).max() <= 0.1 * np.abs(plain[:4] - plan[:4]).max()
