"""Flow matching: t distributions, losses, training decrease per variant, CFG, Euler grid."""

from __future__ import annotations

import pytest
import torch

from fastwam.model import FastWAM, flow
from fastwam.model_config import preset

import model_reference as ref  # the eager oracle, beside the tests (see conftest.py)

B = 2


def _batch(cfg, seed=0, frames=None):
    g = torch.Generator().manual_seed(seed)
    f = frames or cfg.num_latent_frames
    latents = torch.randn(B, cfg.video.in_channels, f, 4, 4, generator=g)
    actions = torch.randn(B, cfg.action_horizon, cfg.action_dim, generator=g)
    action_mask = torch.ones(B, cfg.action_horizon, dtype=torch.bool)
    action_mask[1, -1] = False  # padding past the episode end
    frame_mask = torch.ones(B, f, dtype=torch.bool)
    text = torch.randn(B, cfg.text_max_length, cfg.video.text_dim, generator=g)
    text_mask = torch.ones(B, cfg.text_max_length, dtype=torch.bool)
    text_mask[:, 10:] = False
    state = torch.randn(B, cfg.state_dim, generator=g)
    return latents, actions, action_mask, frame_mask, text, text_mask, state


def test_timestep_distributions():
    g = torch.Generator().manual_seed(0)
    ln = flow.sample_t(4000, "logit_normal", generator=g)
    su = flow.sample_t(4000, "shifted_uniform", shift=5.0, generator=g)
    for t in (ln, su):
        assert bool(((t > 0) & (t < 1)).all())
    assert abs(ln.median().item() - 0.5) < 0.05
    # Median of the shifted uniform is the shifted median of U(0, 1): 5 * 0.5 / (1 + 4 * 0.5).
    assert abs(su.median().item() - 2.5 / 3.0) < 0.03
    with pytest.raises(ValueError, match="nope"):
        flow.sample_t(3, "nope")


def test_noise_target_and_per_sample_mse():
    y, eps = torch.ones(2, 3), torch.zeros(2, 3)
    assert torch.allclose(
        flow.add_noise(y, eps, torch.tensor([0.0, 0.25])), torch.tensor([[1.0] * 3, [0.75] * 3])
    )
    pred, target = torch.zeros(2, 3, 4), torch.zeros(2, 3, 4)
    pred[1, 2] = 100.0  # error only in a padded position
    pred[0, 0, 0] = 2.0  # sample 0: one error of 4 over 12 valid elements
    mask = torch.ones(2, 3, dtype=torch.bool)
    mask[1, 2] = False
    assert torch.allclose(flow.per_sample_mse(pred, target, mask), torch.tensor([4.0 / 12, 0.0]))
    assert flow.per_sample_mse(pred, target, torch.ones_like(mask))[1].item() == pytest.approx(
        100.0**2 * 4 / 12
    )
    assert flow.per_sample_mse(pred, target, torch.zeros_like(mask)).eq(0).all()  # nothing valid: 0


def test_timestep_bell_weight_is_the_authors_normalised_bell():
    assert torch.equal(flow.loss_weight(torch.tensor([0.1, 0.9]), "none"), torch.ones(2))
    # Their training grid: 1000 points phi(u), u = 1, 0.999, ..., 0.001 (the same law as sampling).
    u = torch.linspace(1.0, 0.0, 1001, dtype=torch.float64)[:-1]
    grid = flow.shift_sigma(u, 5.0)
    w = flow.loss_weight(grid, "timestep_bell", shift=5.0).double()
    assert abs(w.mean().item() - 1.0) < 1e-5  # normalised to mean one over the grid
    # Zero at the grid point farthest from 1/2 (t = 1, pure noise).
    assert w.min().item() == pytest.approx(0.0, abs=1e-6) and w[(grid - 0.5).abs().argmax()] == w.min()
    t = torch.linspace(0.0, 1.0, 101)
    bell = flow.loss_weight(t, "timestep_bell", shift=5.0)
    assert t[bell.argmax()].item() == pytest.approx(0.5)
    assert torch.allclose(bell, bell.flip(0), atol=1e-5)  # symmetric about t = 1/2
    with pytest.raises(ValueError, match="bogus"):
        flow.loss_weight(t, "bogus")


def test_idm_noise_augmentation_laws():
    n = 4000
    uniform = FastWAM(preset("tiny", variant="idm")).eval()
    t = uniform._idm_aug_t(n, torch.Generator().manual_seed(0), "cpu")
    assert abs((t == 0).float().mean().item() - 0.5) < 0.03  # p = 0.5 left clean
    assert t.max().item() <= 0.5  # U(0, idm_noise_aug_max_t)
    authors = FastWAM(
        preset("tiny", variant="idm", idm_noise_aug_law="training_t", timestep_distribution="shifted_uniform")
    ).eval()
    t = authors._idm_aug_t(n, torch.Generator().manual_seed(0), "cpu")
    noised = t[t > 0]
    assert abs(noised.numel() / n - 0.5) < 0.03
    # The training law (shifted uniform, shift 5): median 5 * 0.5 / (1 + 4 * 0.5) = 0.833.
    assert abs(noised.median().item() - 2.5 / 3.0) < 0.03 and noised.max().item() > 0.9
    with pytest.raises(ValueError, match="idm_noise_aug_law"):
        preset("tiny", idm_noise_aug_law="bogus")


def test_sigma_grid_runs_from_noise_to_data():
    sig = flow.sigma_grid(10, shift=5.0)
    assert sig.shape == (11,) and sig[0].item() == 1.0 and sig[-1].item() == 0.0
    assert bool((sig[1:] < sig[:-1]).all())


@pytest.mark.parametrize(
    "variant, weighting",
    [
        ("fast_wam", "none"),
        ("fast_wam", "timestep_bell"),
        ("joint", "none"),
        ("idm", "none"),
        ("no_cotrain", "none"),
    ],
)
def test_training_loss_decreases_on_a_fixed_batch(variant, weighting):
    torch.manual_seed(0)
    model = FastWAM(
        preset("tiny", variant=variant, timestep_distribution="shifted_uniform", loss_weighting=weighting)
    )
    batch = _batch(model.config)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(8):
        out = model.training_loss(*batch, generator=torch.Generator().manual_seed(0))
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
        losses.append(out["loss"].item())
    assert set(out) == {"loss", "action_loss", "video_loss"}
    assert all(v.ndim == 0 for v in out.values())
    if variant == "no_cotrain":
        assert out["video_loss"].item() == 0.0
    else:
        assert out["video_loss"].item() > 0.0
    assert losses[-1] < 0.8 * losses[0], losses


def test_no_cotrain_needs_no_future_frames_and_others_check_frames():
    torch.manual_seed(0)
    model = FastWAM(preset("tiny", variant="no_cotrain"))
    out = model.training_loss(*_batch(model.config, frames=1))
    assert out["video_loss"].item() == 0.0
    fast = FastWAM(preset("tiny"))
    with pytest.raises(ValueError, match="frames"):
        fast.training_loss(*_batch(fast.config, frames=1))
    batch = list(_batch(fast.config))
    batch[-1] = None
    with pytest.raises(ValueError, match="state"):
        fast.training_loss(*batch)


@torch.no_grad()
def test_cfg_scale_above_one_equals_the_manual_combination():
    torch.manual_seed(0)
    model = FastWAM(preset("tiny")).eval()
    cfg = model.config
    latents, _, _, _, text, _, state = _batch(cfg)
    first = latents[:, :, :1]
    cond = model.with_state(model.encode_instruction(text), state)
    uncond = model.with_state(model.encode_instruction(torch.zeros_like(text[:1])), state)
    a1, _ = model.infer(first, cond, uncond, cfg_scale=1.0, generator=torch.Generator().manual_seed(3))
    a3, _ = model.infer(first, cond, uncond, cfg_scale=3.0, generator=torch.Generator().manual_seed(3))
    assert (a1 - a3).abs().max().item() > 1e-3

    cache_c = ref.build_action_cache(model, first, cond)
    cache_u = ref.build_action_cache(model, first, uncond)
    x = torch.randn((B, cfg.action_horizon, cfg.action_dim), generator=torch.Generator().manual_seed(3))
    sig = flow.sigma_grid(cfg.num_inference_steps, cfg.sample_shift)
    for i in range(cfg.num_inference_steps):
        t = sig[i].expand(B)
        vc = ref.action_velocity(model, cache_c, x, t)
        vu = ref.action_velocity(model, cache_u, x, t)
        x = x + (sig[i + 1] - sig[i]) * (vu + 3.0 * (vc - vu))
    assert (a3 - x).abs().max().item() <= 1e-5
    with pytest.raises(ValueError, match="unconditional"):
        model.infer(first, cond, None, cfg_scale=2.0)


@pytest.mark.parametrize("variant", ["joint", "idm"])
@torch.no_grad()
def test_imagine_then_execute_variants_sample_with_and_without_cfg(variant):
    torch.manual_seed(0)
    model = FastWAM(preset("tiny", variant=variant)).eval()
    latents, _, _, _, text, _, state = _batch(model.config)
    cond = model.with_state(model.encode_instruction(text), state)
    uncond = model.with_state(model.encode_instruction(torch.zeros_like(text[:1])), state)
    outs = [
        model.infer(latents[:, :, :1], cond, uncond, cfg_scale=s, generator=torch.Generator().manual_seed(1))
        for s in (1.0, 2.0)
    ]
    for actions, timings in outs:
        assert actions.shape == (B, model.config.action_horizon, model.config.action_dim)
        assert bool(torch.isfinite(actions).all()) and set(timings) == {"prefix", "action"}
    assert (outs[0][0] - outs[1][0]).abs().max().item() > 1e-4


def test_gradient_checkpointing_gives_the_same_loss_and_gradients():
    torch.manual_seed(0)
    model = FastWAM(preset("tiny"))
    batch = _batch(model.config)
    grads = []
    for flag in (False, True):
        model.gradient_checkpointing = flag
        model.zero_grad()
        out = model.training_loss(*batch, generator=torch.Generator().manual_seed(0))
        out["loss"].backward()
        grads.append((out["loss"].item(), model.expert.blocks[0].attn1.to_q.weight.grad.clone()))
    assert grads[0][0] == pytest.approx(grads[1][0], abs=1e-6)
    assert torch.allclose(grads[0][1], grads[1][1], atol=1e-6)
