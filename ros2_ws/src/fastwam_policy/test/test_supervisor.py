"""The policy node's supervisor without ROS or a model: every row of the transition table, the
holds, the input debounce, the failure count to ERROR, e-stop precedence, resolving `auto`, and
the same states and plan effects as the node's flag logic it replaced, over a long random run."""

from __future__ import annotations

import random

import numpy as np
import pytest

from fastwam import supervisor as sv
from fastwam.execution import ChunkExecutor, JointLimits
from fastwam.inference_device import InferenceDevice, resolve_inference_device
from fastwam.supervisor import (
    ESTOP_REASON,
    HOLDS,
    TRANSITIONS,
    Event,
    State,
    Supervisor,
    Transition,
    cause,
)

RATE = 10.0
LATE = "camera 'head': frame 0.51 s old > max_camera_age_s 0.3"  # a timing problem (debounced)


def plan() -> ChunkExecutor:
    limits = JointLimits(np.full(2, -1.0), np.full(2, 1.0), np.full(2, 0.5))
    return ChunkExecutor(limits, RATE, blend_steps=0, replan_steps_left=3)


def merge(p: ChunkExecutor, now: float, steps: int = 8) -> None:
    if p.last_command is None:
        p.reset(np.zeros(2))
    assert p.merge(np.full((steps, 2), 0.1), now, now).accepted


def in_mode(mode: State, **kwargs) -> Supervisor:
    """A supervisor brought to `mode` through its events."""
    s = Supervisor(plan(), **kwargs)
    if mode is State.STARTING:
        return s
    if mode is State.ERROR:
        s.fail("start-up failed: boom")
        return s
    s.loaded()
    if mode is State.EXECUTING:
        assert s.set_motion(True)
    elif mode is State.ESTOP:
        assert s.estop(True)
    assert s.mode is mode
    return s


EVENTS = {
    Event.LOADED: lambda s: s.loaded(),
    Event.ENABLE: lambda s: s.set_motion(True),
    Event.DISABLE: lambda s: s.set_motion(False),
    Event.ESTOP: lambda s: s.estop(True),
    Event.RELEASE: lambda s: s.estop(False),
    Event.FAIL: lambda s: s.fail("internal error in the inference worker: KeyError: 'x'"),
    Event.SHUTDOWN: lambda s: s.shutdown(),
}


def reach_source(row: Transition) -> Supervisor:
    """A supervisor in `row.source` where `row` is the first row whose guard holds."""
    if row.guard is sv.estop_latched:
        s = in_mode(State.STARTING)
        s.estop(True)
    elif row.guard is sv.motion_requested:
        s = in_mode(State.STARTING, motion_requested=True)
    else:
        s = in_mode(row.source)
    if row.event is Event.RELEASE:
        assert s.estop_latched
    return s


@pytest.mark.parametrize("row", TRANSITIONS, ids=lambda r: f"{r.source.name}-{r.event.value}-{r.target.name}")
def test_every_row_of_the_table_is_taken(row):
    s = reach_source(row)
    assert s.mode is row.source
    EVENTS[row.event](s)
    assert s.mode is row.target


def test_every_event_without_a_row_leaves_the_mode():
    for mode in (State.STARTING, State.DRY_RUN, State.EXECUTING, State.ESTOP, State.ERROR):
        for event, fire in EVENTS.items():
            if any(r.source is mode and r.event is event for r in TRANSITIONS):
                continue
            s = in_mode(mode)
            fire(s)
            assert s.mode is mode, (mode, event)
    assert not any(r.source is State.ERROR for r in TRANSITIONS)  # ERROR: restart the node
    assert not any(State.HOLDING in (r.source, r.target) for r in TRANSITIONS)  # a condition, not a mode


def test_the_code_follows_the_table(monkeypatch):
    """The table is what decides: without its RELEASE row a released e-stop stays ESTOP."""
    s = in_mode(State.ESTOP)
    rows = tuple(r for r in TRANSITIONS if r.event is not Event.RELEASE)
    monkeypatch.setattr(sv, "TRANSITIONS", rows)
    assert s.estop(False) and not s.estop_latched
    assert s.mode is State.ESTOP


def test_starting_reasons_and_refusals():
    s = Supervisor(plan())
    assert s.status(0.0) == (State.STARTING, "loading checkpoint")
    assert s.enable_refusal() == "cannot enable motion: node still starting (loading checkpoint)"
    s.loading("warming up")
    assert s.status(0.0) == (State.STARTING, "warming up")
    assert not (s.live or s.may_request or s.commanding or s.motion_enabled)
    assert s.loaded() is State.DRY_RUN and s.enable_refusal() == "" and s.live and s.may_request
    s.busy = True
    assert not s.may_request


def test_motion_enables_from_measured_joints_and_disables():
    s = in_mode(State.DRY_RUN)
    merge(s.plan, 0.0)
    assert not s.set_motion(False)  # already disabled: no change
    assert s.set_motion(True) and s.motion_enabled and s.commanding
    assert s.plan.last_command is None and s.plan.plan is None  # cleared: restarts from the joints
    assert not s.set_motion(True)
    merge(s.plan, 1.0)
    assert s.set_motion(False) and s.mode is State.DRY_RUN
    assert s.plan.plan is not None  # disabling keeps the dry-run bookkeeping


def test_motion_requested_at_start_up_is_applied_when_loaded():
    s = Supervisor(plan(), motion_requested=True)
    s.plan.reset(np.zeros(2))
    assert s.loaded() is State.EXECUTING and s.plan.last_command is None
    s = Supervisor(plan(), motion_requested=True)
    s.set_motion(False)  # the parameter set back before loading finished
    assert s.loaded() is State.DRY_RUN


def test_estop_takes_precedence_and_latches():
    s = in_mode(State.EXECUTING)
    merge(s.plan, 0.0)
    s.judge_inputs(["joints 'arm_left': invalid"], invalid=True)
    s.chunk_discarded("chunk 3 discarded: non-finite values")
    assert s.status(0.0)[0] is State.HOLDING
    assert s.estop(True) and not s.estop(True)
    assert s.status(0.0) == (State.ESTOP, ESTOP_REASON)
    assert not (s.motion_enabled or s.live or s.commanding) and s.plan.plan is None
    assert "emergency stop latched" in s.enable_refusal()
    s.set_motion(True)  # refused by the node; the table has no row either
    assert s.mode is State.ESTOP
    assert s.estop(False) and s.mode is State.DRY_RUN and not s.motion_enabled
    assert s.plan.last_command is None  # cleared: enabling again restarts from the joints


def test_estop_while_starting_is_shown_once_loaded_and_refuses_enabling():
    s = Supervisor(plan(), motion_requested=True)
    s.estop(True)
    assert s.status(0.0) == (State.STARTING, "loading checkpoint")
    assert "emergency stop latched" in s.enable_refusal()  # the e-stop's refusal before STARTING's
    assert s.loaded() is State.ESTOP


def test_error_takes_precedence_over_estop_and_is_final():
    s = in_mode(State.ESTOP)
    s.fail("3 consecutive inference failures; last: boom")
    assert s.status(0.0) == (State.ERROR, "3 consecutive inference failures; last: boom")
    assert (
        s.enable_refusal()
        == "cannot enable motion: node in ERROR (3 consecutive inference failures; last: boom)"
    )
    for fire in EVENTS.values():
        fire(s)
    assert s.mode is State.ERROR and not s.live


def test_timing_problems_hold_on_the_second_consecutive_tick_invalid_input_at_once():
    s = in_mode(State.EXECUTING)
    merge(s.plan, 0.0)
    assert s.judge_inputs([LATE], invalid=False)  # one late tick: judged again next tick
    assert s.status(0.0) == (State.EXECUTING, "") and s.plan.plan is not None
    assert not s.judge_inputs([LATE], invalid=False)
    assert s.status(0.0) == (State.HOLDING, LATE) and s.plan.plan is None
    assert s.judge_inputs([], invalid=False)
    merge(s.plan, 1.0)
    assert s.status(1.0) == (State.EXECUTING, "")
    assert s.judge_inputs([LATE], invalid=False)  # recovered: the next late tick is forgiven again
    assert s.judge_inputs([], invalid=False) and s.judge_inputs([LATE], invalid=False)
    both = [LATE, "joints 'torso': position has 3 values, expected 4"]
    assert not s.judge_inputs(both, invalid=True)  # an unusable message: no second look
    assert s.status(1.0) == (State.HOLDING, "; ".join(both))
    assert s.mode is State.EXECUTING  # a hold is not a mode: recovering needs no event


def test_input_problems_show_in_dry_run_too():
    s = in_mode(State.DRY_RUN)
    assert not s.judge_inputs(["camera 'head': no frame received"], invalid=True)
    assert s.status(0.0) == (State.HOLDING, "camera 'head': no frame received")


def test_failures_in_a_row_lead_to_error_and_an_accepted_chunk_resets_the_count():
    s = in_mode(State.EXECUTING)
    merge(s.plan, 0.0)
    assert not s.inference_failed(RuntimeError("boom"))
    assert s.status(0.0) == (State.HOLDING, "inference failed: RuntimeError: boom") and s.plan.plan is None
    assert not s.inference_failed(RuntimeError("boom"))
    s.chunk_accepted()
    assert s.failures == 0 and s.hold_reason == ""
    assert not s.inference_failed(ValueError("a"))
    assert not s.inference_failed(ValueError("b"))
    s.chunk_discarded("chunk 9 discarded: arrived late")  # a discarded chunk does not reset the count
    assert s.status(0.0) == (State.HOLDING, "chunk 9 discarded: arrived late")
    assert s.inference_failed(ValueError("c"))
    assert s.status(0.0) == (State.ERROR, "3 consecutive inference failures; last: c")
    assert not s.motion_enabled
    s = Supervisor(plan(), max_failures=1)
    s.loaded()
    assert s.inference_failed(OSError("x")) and s.mode is State.ERROR
    with pytest.raises(ValueError, match="max_failures"):
        Supervisor(plan(), max_failures=0)


def test_nothing_to_command_holds_only_when_executing():
    s = in_mode(State.EXECUTING)
    assert s.status(0.0) == (State.HOLDING, "no plan: holding the last target until a chunk lands")
    merge(s.plan, 0.0, steps=2)
    assert s.status(0.0) == (State.EXECUTING, "")
    for t in (0.0, 0.1, 0.2):
        s.plan.step(t)
    s.busy = True
    state, reason = s.status(1.45)
    assert state is State.HOLDING and reason == (
        "plan exhausted 1.2 s ago: holding the last target; the next chunk is being predicted "
        "(inference slower than the 3 steps left at the request)"
    )
    s.busy = False
    assert "no chunk requested yet" in s.status(1.45)[1]
    assert s.set_motion(False) and s.status(1.45) == (State.DRY_RUN, "")  # dry-run: nothing to hold
    assert [h.modes for h in HOLDS][2:] == [frozenset({State.EXECUTING})] * 2


def test_shutdown_stops_everything():
    s = in_mode(State.EXECUTING)
    merge(s.plan, 0.0)
    s.shutdown()
    assert s.shutting_down and not (s.live or s.commanding or s.may_request or s.motion_enabled)
    assert s.plan.plan is None


def test_cause_drops_the_numbers():
    assert cause(LATE) == "camera 'head': frame # s old > max_camera_age_s #"
    assert cause("plan exhausted 1.2e-3 s ago") == cause("plan exhausted 4 s ago")


def test_state_values_are_the_status_message_constants():
    msg = pytest.importorskip("fastwam_msgs.msg")
    for state in State:
        assert getattr(msg.PolicyStatus, f"STATE_{state.name}") == state.value


@pytest.mark.parametrize(
    ("given", "cuda", "expected"),
    [
        (("auto", "auto", "auto"), False, InferenceDevice("cpu", "float32", "none")),
        (("auto", "auto", "auto"), True, InferenceDevice("cuda", "bfloat16", "torch_compile")),
        (("cuda:1", "auto", "auto"), True, InferenceDevice("cuda:1", "bfloat16", "torch_compile")),
        (("cpu", "auto", "auto"), True, InferenceDevice("cpu", "float32", "none")),
        (("cuda", "float16", "cudagraph"), True, InferenceDevice("cuda", "float16", "cudagraph")),
        (("cpu", "bfloat16", "none"), False, InferenceDevice("cpu", "bfloat16", "none")),
    ],
)
def test_auto_resolves_for_the_machine(given, cuda, expected):
    assert resolve_inference_device(*given, cuda_available=cuda) == expected


def test_an_unknown_dtype_names_the_parameter():
    with pytest.raises(
        ValueError,
        match=r"parameter 'dtype' must be auto or one of \['bfloat16', 'float16', 'float32'\], got 'fp8'",
    ):
        resolve_inference_device("cpu", "fp8", "auto", cuda_available=False)


# ---- the same behaviour as the flags it replaced ----------------------------------------------
class FlagNode:
    """The policy node's state logic before the supervisor (git 77d3b00 policy_node.py: _state,
    _enable_refusal, _set_motion, _on_estop, _control_step, _infer, _run_worker), kept as the oracle."""

    def __init__(self, motion_param: bool):
        self.plan = plan()
        self.ready, self.starting, self.error, self.estop = False, "loading checkpoint", "", False
        self.motion_enabled, self.motion_requested, self.shutting_down = False, motion_param, False
        self.problems, self.problems_pending, self.hold_reason = [], False, ""
        self.failures, self.busy = 0, False

    def refusal(self) -> str:
        if self.error:
            return f"cannot enable motion: node in ERROR ({self.error})"
        if self.estop:
            return "cannot enable motion: emergency stop latched (publish false on ~/estop first)"
        if not self.ready:
            return f"cannot enable motion: node still starting ({self.starting})"
        return ""

    def set_motion(self, enabled: bool) -> None:
        if enabled and not self.motion_enabled:
            self.plan.clear()
            self.motion_enabled = True
        elif not enabled and self.motion_enabled:
            self.motion_enabled = False
        self.motion_requested = enabled

    def loaded(self) -> None:
        self.ready = True
        if self.motion_requested and not self.estop:
            self.set_motion(True)

    def on_estop(self, data: bool) -> bool:
        if data and not self.estop:
            self.estop, self.motion_enabled = True, False
            self.plan.hold()
        elif not data and self.estop:
            self.estop = False
            self.plan.clear()
        else:
            return False
        return True

    def live(self) -> bool:
        return self.ready and not (self.error or self.estop or self.shutting_down)

    def judge(self, problems: list[str], invalid: bool) -> bool:
        if problems and not invalid and not self.problems_pending:
            self.problems_pending, problems = True, []
        elif not problems:
            self.problems_pending = False
        self.problems = problems
        if problems:
            self.plan.hold()
        return not problems

    def inference_failed(self, error: Exception) -> None:
        self.failures += 1
        self.hold_reason = f"inference failed: {type(error).__name__}: {error}"
        self.plan.hold()
        if self.failures >= sv.MAX_INFERENCE_FAILURES:
            self.error = f"{self.failures} consecutive inference failures; last: {error}"
            self.motion_enabled = False

    def fail(self, reason: str) -> None:  # the worker's internal error (and start-up's, plan empty)
        self.error, self.motion_enabled = reason, False
        self.plan.hold()

    def state(self, now: float) -> tuple[int, str]:
        if self.error:
            return State.ERROR, self.error
        if not self.ready:
            return State.STARTING, self.starting
        if self.estop:
            return State.ESTOP, ESTOP_REASON
        if self.problems:
            return State.HOLDING, "; ".join(self.problems)
        if self.hold_reason:
            return State.HOLDING, self.hold_reason
        if self.motion_enabled:
            if self.plan.exhausted:
                waiting = "the next chunk is being predicted" if self.busy else "no chunk requested yet"
                return State.HOLDING, (
                    f"plan exhausted {self.plan.exhausted_for(now):.1f} s ago: holding the last target; "
                    f"{waiting} (inference slower than the {self.plan.replan_steps_left} steps left "
                    "at the request)"
                )
            if self.plan.plan is None:
                return State.HOLDING, "no plan: holding the last target until a chunk lands"
            return State.EXECUTING, ""
        return State.DRY_RUN, ""


def _drive(seed: int, steps: int) -> int:
    """Random node events to both; returns how many distinct states were seen. The node's
    parameter layer (the motion_enabled parameter, set back to false on e-stop and ERROR) is
    the same for both, as it is the same code in the node."""
    rng = random.Random(seed)
    param = rng.random() < 0.5
    old, s = FlagNode(param), Supervisor(plan(), param)
    old_param = new_param = param
    started = False
    now, seen = 0.0, set()
    for _ in range(steps):
        now += rng.choice((0.0, 0.05, 0.1, 0.3))
        event = rng.choice(
            ("load", "enable", "disable", "estop", "release", "tick", "tick", "tick", "chunk", "chunk",
             "bad_chunk", "infer_fail", "request", "done", "crash", "starting")
        )  # fmt: skip
        if event == "load" and not started:
            started = True
            if rng.random() < 0.1:
                old.fail("start-up failed: OSError: no checkpoint")
                s.fail("start-up failed: OSError: no checkpoint")
            else:
                old.loaded()
                s.loaded()
        elif event == "starting" and not started:
            old.starting = "warming up"
            s.loading("warming up")
        elif event in ("enable", "disable"):  # the parameter / service path
            want = event == "enable"
            refused_old = want and not old.motion_enabled and old.refusal()
            refused_new = want and not s.motion_enabled and s.enable_refusal()
            assert refused_old == refused_new
            if not refused_old:
                old.set_motion(want)
                s.set_motion(want)
                old_param = new_param = want
        elif event in ("estop", "release"):
            changed = old.on_estop(event == "estop")
            assert s.estop(event == "estop") == changed
            if changed and old_param:
                old.set_motion(False)
                s.set_motion(False)
                old_param = new_param = False
        elif event == "tick":
            assert s.live == old.live()
            if old.live():
                problems = rng.choice(([], [], [LATE], ["joints 'arm_left': missing"]))
                invalid = bool(problems) and problems[0].startswith("joints")
                ok = old.judge(problems, invalid)
                assert s.judge_inputs(problems, invalid) == ok
                if ok:
                    a, b = old.plan.step(now), s.plan.step(now)
                    assert (a is None and b is None) or np.array_equal(a, b)
        elif event in ("chunk", "bad_chunk"):
            assert s.live == old.live()
            if old.live():
                for p in (old.plan, s.plan):
                    if p.last_command is None:
                        p.reset(np.zeros(2))
                chunk = np.full((6, 2), 0.2 if event == "chunk" else np.nan)
                ra, rb = old.plan.merge(chunk, now, now), s.plan.merge(chunk, now, now)
                assert ra == rb
                if ra.accepted:
                    old.hold_reason, old.failures = "", 0
                    s.chunk_accepted()
                else:
                    old.hold_reason = f"chunk 1 discarded: {ra.reason}"
                    s.chunk_discarded(f"chunk 1 discarded: {ra.reason}")
        elif event == "infer_fail" and started:
            error = RuntimeError(f"boom {rng.randint(0, 9)}")
            old.inference_failed(error)
            s.inference_failed(error)
            if old.error and old_param:
                old.set_motion(False)
                s.set_motion(False)
                old_param = new_param = False
        elif event == "request":
            assert s.may_request == (old.live() and not old.busy)
            if s.may_request:
                old.busy = s.busy = True
        elif event == "done":
            old.busy = s.busy = False
        elif event == "crash" and started and rng.random() < 0.2:
            old.fail("internal error in the inference worker: KeyError: 'x'")
            s.fail("internal error in the inference worker: KeyError: 'x'")
        assert s.status(now) == old.state(now), event
        assert s.motion_enabled == old.motion_enabled and old_param == new_param
        assert s.commanding == (old.motion_enabled and old.live())
        for a, b in ((old.plan.plan, s.plan.plan), (old.plan.last_command, s.plan.last_command)):
            assert (a is None and b is None) or np.array_equal(a, b)
        seen.add(s.status(now)[0])
    return len(seen)


def test_same_states_and_plan_as_the_flag_logic_it_replaced():
    # Many short runs (start-up is reached early and often) and a few long ones; ms each.
    seen = [_drive(seed, 60) for seed in range(300)] + [_drive(1000 + seed, 3000) for seed in range(5)]
    assert max(seen) == len(State)  # every state was reached and compared
