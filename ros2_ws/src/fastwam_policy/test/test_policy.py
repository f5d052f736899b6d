"""FastWAMPolicy: the inference API the ROS node uses."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fastwam.camera import CameraLayout, CameraView, composite_to_tensor
from fastwam.checkpoint import create_random_checkpoint
from fastwam.inference_device import CPU_THREADS
from fastwam.normalize import FeatureStats, NormalizationStats
from fastwam.policy import TIMING_KEYS, FastWAMPolicy, PolicyOutput
from fastwam.robot import JointGroup, RobotSpec

# Head camera on top, two wrist cameras below (the R1 Lite arrangement, tiny): 64x64 composite.
LAYOUT = CameraLayout(
    ((CameraView("head", 32, 64),), (CameraView("left", 32, 32), CameraView("right", 32, 32)))
)


def _robot() -> RobotSpec:
    arm = JointGroup("arm", ("a", "b", "c"), (-1.0,) * 3, (1.0,) * 3, (1.0,) * 3)
    grip = JointGroup("gripper", ("g",), (0.0,), (0.05,), (0.1,), "m")
    return RobotSpec("toy", (arm, grip), ("arm", "gripper"), ("arm",))


def _stats() -> NormalizationStats:
    def feat(mean, std):
        mean, std = np.asarray(mean, float), np.asarray(std, float)
        return FeatureStats(mean, std, mean - std, mean + std, mean - std, mean + std, 5)

    return NormalizationStats(
        {"action": feat([10, 20, 30, 0.02], [1, 2, 3, 0.01]), "state": feat([0, 0, 0], [1, 1, 1])}
    )


@pytest.fixture(scope="module")
def paths(tmp_path_factory):
    root = tmp_path_factory.mktemp("policy")
    create_random_checkpoint(root / "plain", "tiny", LAYOUT, _robot(), stats=None, seed=1)
    create_random_checkpoint(root / "stats", "tiny", LAYOUT, _robot(), stats=_stats(), seed=1)
    return root


@pytest.fixture(scope="module")
def policy(paths):
    return FastWAMPolicy.from_pretrained(paths / "plain")


def _images(seed=0, size=(48, 60)):
    rng = np.random.default_rng(seed)
    return {k: rng.integers(0, 256, (*size, 3), dtype=np.uint8) for k in ("head", "left", "right")}


def test_predict_shapes_timings_and_determinism(policy):
    assert policy.camera_layout == LAYOUT and policy.robot.action_dim == 4
    assert policy.action_horizon == 4 and policy.fps == 15.0
    out = policy.predict(_images(), np.zeros(3), "fold the towel", generator=torch.Generator().manual_seed(0))
    assert isinstance(out, PolicyOutput)
    assert out.actions.shape == (4, 4) and out.actions.dtype == np.float64
    assert set(out.timings_ms) == set(TIMING_KEYS) and all(v >= 0 for v in out.timings_ms.values())
    again = policy.predict(
        _images(), np.zeros(3), "fold the towel", generator=torch.Generator().manual_seed(0)
    )
    assert np.array_equal(out.actions, again.actions)
    other = policy.predict(
        _images(), np.zeros(3), "fold the towel", generator=torch.Generator().manual_seed(1)
    )
    assert not np.array_equal(out.actions, other.actions)
    moved = policy.predict(
        _images(), np.ones(3), "fold the towel", generator=torch.Generator().manual_seed(0)
    )
    assert not np.array_equal(out.actions, moved.actions)  # the state token reaches the actions


def test_predict_matches_the_model_called_directly(policy):
    images = _images(3, size=(32, 64))
    out = policy.predict(images, np.zeros(3), "open the drawer", generator=torch.Generator().manual_seed(0))
    comp, model = policy.components, policy.model
    video = composite_to_tensor(LAYOUT.compose(images))[None, :, None]
    embeds, mask = comp.encode_text(["open the drawer"])
    ctx = model.with_state(model.encode_instruction(embeds, mask), torch.zeros(1, 3))
    actions, _ = model.infer(comp.encode_video(video), ctx, generator=torch.Generator().manual_seed(0))
    np.testing.assert_allclose(out.actions, actions[0].double().numpy(), atol=1e-6)


def test_actions_are_unnormalized_with_the_checkpoint_stats(paths, policy):
    plain = policy
    scaled = FastWAMPolicy.from_pretrained(paths / "stats")
    args = (_images(), np.zeros(3), "stack the bowls")
    a = plain.predict(*args, generator=torch.Generator().manual_seed(0)).actions
    b = scaled.predict(*args, generator=torch.Generator().manual_seed(0)).actions
    # Same weights (seed 1) and state 0 == mean: only the action unnormalization differs.
    np.testing.assert_allclose(b, a * np.array([1, 2, 3, 0.01]) + np.array([10, 20, 30, 0.02]), atol=1e-9)


def test_instruction_embedding_is_cached(paths):
    policy = FastWAMPolicy.from_pretrained(paths / "plain")
    calls = []
    original = policy.components.encode_text
    policy.components.encode_text = lambda *a, **k: calls.append(a) or original(*a, **k)
    for _ in range(3):
        policy.predict(_images(), np.zeros(3), "fold the towel")
    policy.predict(_images(), np.zeros(3), "open the drawer")
    assert len(calls) == 2


def test_cfg_through_the_policy(paths):
    policy = FastWAMPolicy.from_pretrained(paths / "plain")
    args = (_images(), np.zeros(3), "fold the towel")
    base = policy.predict(*args, generator=torch.Generator().manual_seed(0)).actions
    policy.cfg_scale = 2.5
    guided = policy.predict(*args, generator=torch.Generator().manual_seed(0)).actions
    assert np.isfinite(guided).all() and not np.allclose(base, guided)


@pytest.mark.parametrize(
    ("mutate", "pattern"),
    [
        (lambda im, s: (dict(list(im.items())[:2]), s), "right"),
        (lambda im, s: ({**im, "head": im["head"].astype(np.float32)}, s), "head.*uint8"),
        (lambda im, s: ({**im, "left": im["left"][..., :2]}, s), "left.*HxWx3"),
        (lambda im, s: ({**im, "left": im["left"][0]}, s), "left.*HxWx3"),
        (lambda im, s: (im, np.array([0.0, np.nan, 0.0])), "NaN.*'b'"),
        (lambda im, s: (im, np.zeros(4)), "shape \\(3,\\)"),
        (lambda im, s: (im, None), "state is required"),
    ],
)
def test_bad_inputs_raise_value_errors_naming_the_problem(policy, mutate, pattern):
    images, state = mutate(_images(), np.zeros(3))
    with pytest.raises(ValueError, match=pattern):
        policy.predict(images, state, "fold the towel")


def test_bfloat16_inference_stays_close_to_float32(paths, policy):
    half = FastWAMPolicy.from_pretrained(paths / "plain", dtype=torch.bfloat16)
    assert half.model.dtype == torch.bfloat16
    args = (_images(), np.zeros(3), "fold the towel")
    a = policy.predict(*args, generator=torch.Generator().manual_seed(0)).actions
    b = half.predict(*args, generator=torch.Generator().manual_seed(0)).actions
    assert b.dtype == np.float64 and np.isfinite(b).all()
    assert np.abs(a - b).max() < 0.05 * max(1.0, np.abs(a).max())


def test_graph_capture_option_gives_the_eager_actions(paths, policy):
    """compile="cudagraph" (eager replay of the static buffers on CPU) == compile="none", call after
    call with new images, states and instructions."""
    captured = FastWAMPolicy.from_pretrained(paths / "plain", compile="cudagraph")
    assert captured.model.compile_mode == "cudagraph"
    for seed, instruction in ((0, "fold the towel"), (1, "fold the towel"), (2, "open the drawer")):
        args = (_images(seed), np.full(3, 0.1 * seed), instruction)
        a = policy.predict(*args, generator=torch.Generator().manual_seed(seed)).actions
        b = captured.predict(*args, generator=torch.Generator().manual_seed(seed)).actions
        diff = np.abs(a - b).max()
        assert diff <= 1e-4, f"call {seed}: cudagraph vs none max abs diff {diff:.3e} (physical units)"
    with pytest.raises(ValueError, match="compile mode"):
        FastWAMPolicy.from_pretrained(paths / "plain", compile="jit")


def test_cpu_inference_sets_its_thread_count_in_the_predicting_thread(paths):
    """One intra-op thread by default on CPU (fastwam.inference_device.CPU_THREADS: spin-waiting threads on a
    busy machine), set in the thread that predicts, as the policy node's worker thread does; None
    leaves torch's count; a count below 1 is refused."""
    import threading

    seen: dict[str, int] = {}

    def predict(policy, name):
        torch.set_num_threads(2)
        policy.predict(_images(), np.zeros(3), "fold the towel")
        seen[name] = torch.get_num_threads()

    for name, threads in (("default", CPU_THREADS), ("three", 3), ("torch", None)):
        policy = FastWAMPolicy.from_pretrained(paths / "plain", cpu_threads=threads)
        worker = threading.Thread(target=predict, args=(policy, name))
        worker.start()
        worker.join()
    assert seen == {"default": 1, "three": 3, "torch": 2}
    with pytest.raises(ValueError, match="cpu_threads"):
        FastWAMPolicy.from_pretrained(paths / "plain", cpu_threads=0)
