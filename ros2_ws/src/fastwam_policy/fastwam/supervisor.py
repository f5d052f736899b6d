"""The policy node's supervisor: which state the node is in, what it may do, and why. ROS-free.

The node (`fastwam_policy.policy_node`) reports these states in fastwam_msgs/PolicyStatus (the
values of `State` are the message's STATE_* constants), highest priority first:

    ERROR      model failed to load, checkpoint does not match the robot config, or inference
               failed `max_failures` (3) times in a row. Nothing is commanded; restart the node.
    STARTING   loading the checkpoint and running the warm-up inference. Nothing is commanded.
    ESTOP      ~/estop received true. Commanding stops at once; latched until ~/estop false, after
               which the node is in dry-run and motion must be enabled again.
    HOLDING    an input is missing, stale, skewed or invalid, or the last chunk was discarded
               (NaN/Inf, too late, inference error). No new chunk, no command: the robot keeps its
               last target. The reason names the stream and the limit. Leaves when inputs recover.
               Invalid messages hold at once; age and skew must fail on two consecutive control
               ticks (a tick that runs late would otherwise judge frames whose callbacks wait).
               Also while motion is enabled and there is nothing to command: no chunk yet since
               enabling or recovering, or the plan exhausted before the next chunk landed
               (inference slower than the plan lasts); the reason says which.
    EXECUTING  motion enabled: commands go out at the control rate.
    DRY_RUN    motion disabled (the default): the same predictions and execution bookkeeping,
               nothing commanded.

Two layers make these six. The *mode* (STARTING, DRY_RUN, EXECUTING, ESTOP, ERROR) is a latch: it
changes only on an event, through the rows of `TRANSITIONS`. HOLDING is not a latch but a condition
of the inputs and the plan, re-judged whenever the state is asked for (`HOLDS`): it shows instead of
DRY_RUN or EXECUTING while one of its guards holds and ends, with no event, when none does.

The supervisor owns the facts behind both (e-stop latch, error, failure count, input problems and
their debounce, the last hold reason, whether a chunk is being predicted) and applies each event's
effect on the plan (`fastwam.execution.ChunkExecutor`): e-stop, errors, bad inputs and shutdown hold
it; enabling motion and releasing the e-stop clear it (the next chunk starts from the measured
joints). It takes no lock: the node calls it under its own.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Callable
from dataclasses import dataclass

from fastwam.execution import ChunkExecutor

MAX_INFERENCE_FAILURES = 3  # consecutive; then ERROR
ESTOP_REASON = "emergency stop latched (~/estop)"
_NUMBER = re.compile(r"-?\d+(\.\d+)?(e-?\d+)?")


class State(enum.IntEnum):
    """What the node is doing; the values are fastwam_msgs/PolicyStatus's STATE_* constants."""

    STARTING = 0
    DRY_RUN = 1
    EXECUTING = 2
    HOLDING = 3
    ESTOP = 4
    ERROR = 5


class Event(enum.Enum):
    LOADED = "loaded"  # checkpoint loaded and warmed up
    ENABLE = "enable"  # motion enabled (parameter or service), after `enable_refusal` said yes
    DISABLE = "disable"
    ESTOP = "estop"  # ~/estop true
    RELEASE = "release"  # ~/estop false
    FAIL = "fail"  # start-up failed, too many inference failures, or an internal error
    SHUTDOWN = "shutdown"  # the node is being destroyed


@dataclass(frozen=True)
class Transition:
    """From `source`, on `event`, go to `target` if `guard` (None: always) holds of the supervisor."""

    source: State
    event: Event
    target: State
    guard: Callable[[Supervisor], bool] | None = None


def estop_latched(s: Supervisor) -> bool:
    return s.estop_latched


def motion_requested(s: Supervisor) -> bool:
    return s.motion_requested


# Rows of one (source, event) are tried in order; the first whose guard holds is taken. An event
# without a row in the current mode changes no mode (e.g. DISABLE in DRY_RUN). ERROR has no row out.
TRANSITIONS: tuple[Transition, ...] = (
    # An e-stop received while loading is latched and shown once loaded; so is a motion request
    # (the motion_enabled parameter at start-up), unless the e-stop came too.
    Transition(State.STARTING, Event.LOADED, State.ESTOP, estop_latched),
    Transition(State.STARTING, Event.LOADED, State.EXECUTING, motion_requested),
    Transition(State.STARTING, Event.LOADED, State.DRY_RUN),
    Transition(State.DRY_RUN, Event.ENABLE, State.EXECUTING),
    Transition(State.EXECUTING, Event.DISABLE, State.DRY_RUN),
    Transition(State.DRY_RUN, Event.ESTOP, State.ESTOP),
    Transition(State.EXECUTING, Event.ESTOP, State.ESTOP),
    Transition(State.ESTOP, Event.RELEASE, State.DRY_RUN),  # released is not re-enabled
    Transition(State.STARTING, Event.FAIL, State.ERROR),
    Transition(State.DRY_RUN, Event.FAIL, State.ERROR),
    Transition(State.EXECUTING, Event.FAIL, State.ERROR),
    Transition(State.ESTOP, Event.FAIL, State.ERROR),
    Transition(State.EXECUTING, Event.SHUTDOWN, State.DRY_RUN),  # nothing commands after shutdown
)
LIVE = frozenset({State.DRY_RUN, State.EXECUTING})  # predicting and stepping the plan


def _inputs_bad(s: Supervisor, now: float) -> str:
    return "; ".join(s.problems)


def _chunk_dropped(s: Supervisor, now: float) -> str:
    return s.hold_reason


def _plan_exhausted(s: Supervisor, now: float) -> str:
    if not s.plan.exhausted:
        return ""
    waiting = "the next chunk is being predicted" if s.busy else "no chunk requested yet"
    return (
        f"plan exhausted {s.plan.exhausted_for(now):.1f} s ago: holding the last target; {waiting} "
        f"(inference slower than the {s.plan.replan_steps_left} steps left at the request)"
    )


def _no_plan(s: Supervisor, now: float) -> str:
    return "no plan: holding the last target until a chunk lands" if s.plan.plan is None else ""


@dataclass(frozen=True)
class Hold:
    """In a mode of `modes`, show HOLDING while `reason` (supervisor, now) is not empty."""

    modes: frozenset[State]
    reason: Callable[[Supervisor, float], str]


# Tried in order; the first non-empty reason is the one shown.
HOLDS: tuple[Hold, ...] = (
    Hold(LIVE, _inputs_bad),
    Hold(LIVE, _chunk_dropped),
    Hold(frozenset({State.EXECUTING}), _plan_exhausted),  # inference slower than the plan lasts
    Hold(frozenset({State.EXECUTING}), _no_plan),  # enabled or recovered, no chunk landed yet
)


def cause(reason: str) -> str:
    """The reason without its numbers: what a status or a log line changes on. A frame's age
    changes every tick: a new value of the same cause (published at 1 Hz), not a change."""
    return _NUMBER.sub("#", reason)


class Supervisor:
    """The node's state machine over the plan it executes. See the module docstring."""

    def __init__(
        self,
        plan: ChunkExecutor,
        motion_requested: bool = False,
        max_failures: int = MAX_INFERENCE_FAILURES,
    ):
        if max_failures < 1:
            raise ValueError(f"max_failures must be >= 1, got {max_failures}")
        self.plan = plan
        self.max_failures = max_failures
        self.mode = State.STARTING
        self.starting = "loading checkpoint"  # what STARTING is doing
        self.error = ""
        self.estop_latched = False
        self.motion_requested = motion_requested  # applied when loaded
        self.shutting_down = False
        self.problems: list[str] = []  # input problems acted on (debounced)
        self._problems_pending = False  # a timing problem seen on the last tick, not yet acted on
        self.hold_reason = ""  # the last chunk was discarded or inference failed
        self.failures = 0  # consecutive inference failures
        self.busy = False  # a chunk is being predicted

    # ---- the table ----------------------------------------------------------------------------
    def _fire(self, event: Event) -> Transition | None:
        for row in TRANSITIONS:
            if row.source is self.mode and row.event is event and (row.guard is None or row.guard(self)):
                self.mode = row.target
                return row
        return None

    # ---- guards -------------------------------------------------------------------------------
    @property
    def live(self) -> bool:
        """Loaded, no e-stop, no error, not shutting down: predict, merge chunks, step the plan."""
        return self.mode in LIVE and not self.shutting_down

    @property
    def motion_enabled(self) -> bool:
        return self.mode is State.EXECUTING

    @property
    def commanding(self) -> bool:
        """The plan's steps go out to the robot (the node also needs its context up)."""
        return self.mode is State.EXECUTING and not self.shutting_down

    @property
    def may_request(self) -> bool:
        """A new chunk may be handed to the model now (one at a time)."""
        return self.live and not self.busy

    def enable_refusal(self) -> str:
        """Why motion cannot be enabled now ('' when it can)."""
        if self.mode is State.ERROR:
            return f"cannot enable motion: node in ERROR ({self.error})"
        if self.estop_latched:
            return "cannot enable motion: emergency stop latched (publish false on ~/estop first)"
        if self.mode is State.STARTING:
            return f"cannot enable motion: node still starting ({self.starting})"
        return ""

    # ---- events -------------------------------------------------------------------------------
    def loading(self, step: str) -> None:
        """What start-up is doing now (the STARTING reason)."""
        self.starting = step

    def loaded(self) -> State:
        """The model is ready: the mode it leads to (EXECUTING when motion was requested)."""
        row = self._fire(Event.LOADED)
        if row is not None and row.target is State.EXECUTING:
            self.plan.clear()  # start from the measured joints
        return self.mode

    def set_motion(self, enabled: bool) -> bool:
        """Enable or disable motion (after `enable_refusal` when enabling); True when it changed."""
        self.motion_requested = enabled
        row = self._fire(Event.ENABLE if enabled else Event.DISABLE)
        if row is not None and row.target is State.EXECUTING:
            self.plan.clear()  # restart from the measured joints, not from the dry-run plan
        return row is not None

    def estop(self, engaged: bool) -> bool:
        """Latch (True) or release (False) the e-stop; True when the latch changed. Latching holds
        the plan whatever the mode; releasing clears it and leaves motion disabled."""
        if engaged and not self.estop_latched:
            self.estop_latched = True
            self.plan.hold()
            self._fire(Event.ESTOP)
            return True
        if not engaged and self.estop_latched:
            self.estop_latched = False
            self.plan.clear()
            self._fire(Event.RELEASE)
            return True
        return False

    def fail(self, reason: str) -> None:
        """An unrecoverable error: ERROR with `reason`, the plan held."""
        self.error = reason
        self.plan.hold()
        self._fire(Event.FAIL)

    def judge_inputs(self, problems: list[str], invalid: bool) -> bool:
        """A control tick's input problems (`fastwam.observation.InputTracker.problems`; `invalid`:
        some stream's newest message was unusable). True when the plan may be stepped; otherwise
        the plan is held. Invalid input holds at once; age and skew only when the previous tick saw
        problems too (a tick that runs late, this process descheduled, sees frames as old before
        their pending callbacks have run)."""
        if problems and not invalid and not self._problems_pending:
            self._problems_pending, problems = True, []
        elif not problems:
            self._problems_pending = False
        self.problems = list(problems)
        if problems:
            self.plan.hold()  # the robot keeps its last target
            return False
        return True

    def inference_failed(self, error: BaseException) -> bool:
        """An inference raised: hold; True when this failure made it `max_failures` in a row (ERROR)."""
        self.failures += 1
        self.hold_reason = f"inference failed: {type(error).__name__}: {error}"
        self.plan.hold()
        if self.failures >= self.max_failures:
            self.fail(f"{self.failures} consecutive inference failures; last: {error}")
            return True
        return False

    def chunk_discarded(self, reason: str) -> None:
        self.hold_reason = reason

    def chunk_accepted(self) -> None:
        self.hold_reason = ""
        self.failures = 0

    def shutdown(self) -> None:
        """No command from here on."""
        self.shutting_down = True
        self.plan.hold()
        self._fire(Event.SHUTDOWN)

    # ---- the state shown ----------------------------------------------------------------------
    def status(self, now: float) -> tuple[State, str]:
        """The state and its reason at time `now` (the node's clock: an exhausted plan's age)."""
        if self.mode is State.ERROR:
            return State.ERROR, self.error
        if self.mode is State.STARTING:
            return State.STARTING, self.starting
        if self.mode is State.ESTOP:
            return State.ESTOP, ESTOP_REASON
        for hold in HOLDS:
            if self.mode in hold.modes:
                reason = hold.reason(self, now)
                if reason:
                    return State.HOLDING, reason
        return self.mode, ""
