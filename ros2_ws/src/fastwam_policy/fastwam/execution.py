"""Chunk execution: turn predicted action chunks into a continuous, limited stream of joint targets.

The policy predicts a chunk of H targets from one observation; step i of the chunk is meant for
``stamp + i / rate`` where ``stamp`` is the capture time of the observation. Inference takes time,
so when a chunk arrives its first steps are already in the past. `ChunkExecutor` keeps the plan the
robot is following and, when a new chunk arrives:

1. aligns it to the present: the steps that elapsed since the observation stamp are skipped;
2. blends it into the remaining old plan over ``blend_steps`` steps (a linear cross-fade), so a
   chunk boundary is neither a jump nor a pause;
3. limits it: every target is clamped to the joint limits, and each step may move each joint by at
   most ``max_velocity / rate`` from the previous command.

The limited plan is computed when the chunk is merged and published as a trajectory. `step(now)`
then bounds each command once more by the time since the previous command: a joint's commanded
target never moves faster than its max_velocity, whatever the timing of the calls (a chunk that
lands a few ms after a control tick, a tick that runs early). With regular calls at the control
rate the commands are exactly the plan. Pure numpy, no ROS, no clock: callers pass times.

With real-time chunking (`fastwam.model.rtc`) the policy needs the plan the robot will follow while
it predicts: `targets_at` samples it at the new chunk's step times. Such chunks already continue
the plan, so they are merged with ``blend_steps = 0``; alignment and limits stay the same.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from fastwam.robot import RobotSpec


@dataclass(frozen=True)
class JointLimits:
    """Per-joint position limits and the largest change allowed in one control step, float64 [A]."""

    lower: np.ndarray
    upper: np.ndarray
    max_step: np.ndarray

    def __post_init__(self) -> None:
        shapes = {np.shape(self.lower), np.shape(self.upper), np.shape(self.max_step)}
        if len(shapes) != 1 or len(next(iter(shapes))) != 1:
            raise ValueError(f"joint limits need equal 1-D arrays, got shapes {sorted(shapes)}")
        if np.any(self.lower >= self.upper) or np.any(self.max_step <= 0):
            raise ValueError("joint limits need lower < upper and max_step > 0")

    @property
    def dim(self) -> int:
        return int(self.lower.shape[0])

    @classmethod
    def from_robot(cls, robot: RobotSpec, rate_hz: float) -> JointLimits:
        """Limits of the action joints; the per-step change is max_velocity / rate."""
        return cls(
            lower=robot.action_lower,
            upper=robot.action_upper,
            max_step=robot.action_max_velocity / float(rate_hz),
        )


def check_chunk(chunk: np.ndarray, action_dim: int) -> str | None:
    """Why a predicted chunk [H, A] must be discarded, or None when it is usable."""
    chunk = np.asarray(chunk)
    if chunk.ndim != 2 or chunk.shape[0] == 0 or chunk.shape[1] != action_dim:
        return f"chunk has shape {chunk.shape}, expected [H > 0, {action_dim}]"
    if not np.issubdtype(chunk.dtype, np.floating):
        return f"chunk has dtype {chunk.dtype}, expected floating point"
    bad = ~np.isfinite(chunk)
    if bad.any():
        steps, dims = np.nonzero(bad)
        return (
            f"chunk has {int(bad.sum())} non-finite values (NaN/Inf), first at step {int(steps[0])} "
            f"dim {int(dims[0])}"
        )
    return None


def steps_elapsed(stamp: float, now: float, rate_hz: float) -> int:
    """Index of the chunk step that belongs to `now` for a chunk predicted at `stamp` (>= 0)."""
    # Rounding to the nearest step: the step due now is the one whose time is closest to now.
    return max(0, int(math.floor((now - stamp) * rate_hz + 0.5)))


def blend(old: np.ndarray, new: np.ndarray, blend_steps: int) -> np.ndarray:
    """Cross-fade the start of `new` [N, A] from `old` [M, A] (the plan it replaces).

    Step j < blend_steps is (1 - w_j) old[j] + w_j new[j] with w_j = (j + 1) / (blend_steps + 1):
    the first step is already partly the new plan and the last blended step mostly new, so neither
    plan is followed past its time. Where `old` is shorter than the blend, its last step is held.
    """
    new = np.asarray(new, dtype=np.float64)
    out = new.copy()
    n = min(blend_steps, len(new))
    if n == 0 or len(old) == 0:
        return out
    old = np.asarray(old, dtype=np.float64)
    idx = np.minimum(np.arange(n), len(old) - 1)
    w = (np.arange(n, dtype=np.float64) + 1.0) / (blend_steps + 1.0)
    out[:n] = (1.0 - w[:, None]) * old[idx] + w[:, None] * new[:n]
    return out


def limit_plan(plan: np.ndarray, previous: np.ndarray, limits: JointLimits) -> np.ndarray:
    """Rate-limit `plan` [N, A] step by step starting from the command `previous` [A], then clamp.

    Each output differs from the one before (the first from `previous`) by at most max_step per
    joint, and lies inside the joint limits. Clamping comes last so a command is never outside the
    limits, even when `previous` was (a measured position slightly past a limit).
    """
    out = np.empty_like(np.asarray(plan, dtype=np.float64))
    current = np.asarray(previous, dtype=np.float64)
    for i, target in enumerate(plan):
        current = np.clip(target, current - limits.max_step, current + limits.max_step)
        current = np.clip(current, limits.lower, limits.upper)
        out[i] = current
    return out


@dataclass(frozen=True)
class MergeResult:
    """What happened to a chunk handed to `ChunkExecutor.merge`."""

    accepted: bool
    steps_skipped: int
    reason: str = ""  # why it was discarded, empty when accepted


class ChunkExecutor:
    """The plan being executed: the limited targets still to command, one per control step.

    Holding is the absence of a plan: `step` returns None and the robot keeps its last target.
    `last_command` is the last target returned by `step` (or the position given to `reset`); new
    plans start from it, so consecutive commands never differ by more than the per-step limit, and
    never by more than max_velocity times the time between them (`step`).

    `exhausted` tells a plan that ran out (every step commanded, no new chunk yet: the robot holds
    its last target because inference is slower than the plan) from a deliberate hold.
    """

    def __init__(self, limits: JointLimits, rate_hz: float, blend_steps: int, replan_steps_left: int):
        if rate_hz <= 0 or blend_steps < 0 or replan_steps_left < 1:
            raise ValueError(
                f"invalid execution settings: rate_hz={rate_hz}, blend_steps={blend_steps}, "
                f"replan_steps_left={replan_steps_left}"
            )
        self.limits = limits
        self.rate_hz = float(rate_hz)
        self.blend_steps = int(blend_steps)
        self.replan_steps_left = int(replan_steps_left)
        self._plan: np.ndarray | None = None  # [N, A] limited targets
        self._cursor = 0  # index of the next plan step to command
        self._plan_time = 0.0  # when plan step 0 was due (the merge's `now`)
        self._last: np.ndarray | None = None  # [A]
        self._last_time: float | None = None  # when `_last` was commanded (None: a reset position)
        self._exhausted_since: float | None = None  # the first `step` that found the plan used up
        # Monitoring: the raw chunk behind the current plan, and what was commanded against it.
        self.chunk: np.ndarray | None = None  # [H, A] as predicted
        self.chunk_offset = 0  # chunk step of plan step 0 (= steps skipped)
        self.executed: list[np.ndarray] = []  # commands returned since the current chunk was merged

    @property
    def last_command(self) -> np.ndarray | None:
        return None if self._last is None else self._last.copy()

    @property
    def plan(self) -> np.ndarray | None:
        """Targets still to be commanded [N, A], the next one first (None while holding)."""
        return None if self._plan is None else self._plan[self._cursor :].copy()

    @property
    def steps_left(self) -> int:
        return 0 if self._plan is None else len(self._plan) - self._cursor

    @property
    def exhausted(self) -> bool:
        """True when a merged plan has been commanded to its end and no chunk has replaced it."""
        return self._exhausted_since is not None

    def exhausted_for(self, now: float) -> float:
        """Seconds the robot has been holding the end of an exhausted plan (0 when not exhausted)."""
        return 0.0 if self._exhausted_since is None else max(0.0, now - self._exhausted_since)

    @property
    def needs_chunk(self) -> bool:
        """True when the next chunk should be requested (plan short or absent)."""
        return self.steps_left <= self.replan_steps_left

    def reset(self, position: np.ndarray) -> None:
        """Drop the plan and take `position` [A] (e.g. the measured joints) as the last command."""
        position = np.asarray(position, dtype=np.float64)
        if position.shape != (self.limits.dim,):
            raise ValueError(f"position has shape {position.shape}, expected ({self.limits.dim},)")
        if not np.isfinite(position).all():
            raise ValueError("position has non-finite values")
        self.hold()
        self._last = position.copy()
        self._last_time = None

    def clear(self) -> None:
        """Forget the plan and the last command: the next merge needs `reset` first."""
        self.hold()
        self._last = None
        self._last_time = None

    def hold(self) -> None:
        """Drop the plan: no further commands until a chunk is merged; the last command stays."""
        self._plan = None
        self._cursor = 0
        self._exhausted_since = None
        self.chunk = None
        self.executed = []

    def targets_at(self, times: np.ndarray) -> np.ndarray | None:
        """The plan's targets [n, A] at `times` (increasing), cut where the plan ends (n <= len).

        Plan step k is due at the merge time + k / rate; a time between steps takes the nearest step,
        a time before the plan its first step. None without a plan (nothing to continue)."""
        if self._plan is None:
            return None
        index = np.floor((np.asarray(times, dtype=np.float64) - self._plan_time) * self.rate_hz + 0.5)
        index = np.maximum(index.astype(np.int64), 0)
        index = index[index < len(self._plan)]
        return self._plan[index].copy()

    def merge(self, chunk: np.ndarray, stamp: float, now: float) -> MergeResult:
        """Align `chunk` [H, A] predicted at `stamp` to `now`, blend it into the plan, limit it.

        The first step of the resulting plan is the one due at `now`; the caller commands it
        right away (or at its next control tick). Needs a last command (see `reset`).
        """
        if self._last is None:
            raise RuntimeError("ChunkExecutor.merge before reset(): no starting position")
        problem = check_chunk(chunk, self.limits.dim)
        if problem is not None:
            self.hold()
            return MergeResult(False, 0, problem)
        chunk = np.asarray(chunk, dtype=np.float64)
        skipped = steps_elapsed(stamp, now, self.rate_hz)
        if skipped >= len(chunk):
            self.hold()
            return MergeResult(
                False,
                skipped,
                f"chunk arrived {now - stamp:.3f} s after its observation, past its last step "
                f"({len(chunk)} steps at {self.rate_hz:g} Hz)",
            )
        aligned = chunk[skipped:]
        # The plan being replaced, from the step due now; while holding, the last command.
        old = self._plan[self._cursor :] if self._plan is not None else self._last[None, :]
        if len(old) == 0:
            old = self._last[None, :]
        plan = limit_plan(blend(old, aligned, self.blend_steps), self._last, self.limits)
        self._plan, self._cursor, self._plan_time = plan, 0, float(now)
        self._exhausted_since = None
        self.chunk, self.chunk_offset, self.executed = chunk, skipped, []
        return MergeResult(True, skipped)

    def step(self, now: float) -> np.ndarray | None:
        """The command [A] for time `now` and advance, or None when there is no plan (hold).

        The plan's next target, moved from the previous command by at most max_velocity times the
        time since it (one control period at most: a late call does not jump to catch up), then
        clamped to the joint limits. The first command after `reset` may move one period's worth
        from the reset position. A call earlier than the previous command repeats it."""
        if self._plan is None:
            return None
        if self._cursor >= len(self._plan):
            if self._exhausted_since is None:
                self._exhausted_since = float(now)
            return None
        if self._last_time is None:
            fraction = 1.0
        else:
            fraction = min(max((now - self._last_time) * self.rate_hz, 0.0), 1.0)
        bound = self.limits.max_step * fraction
        command = np.clip(self._plan[self._cursor], self._last - bound, self._last + bound)
        command = np.clip(command, self.limits.lower, self.limits.upper)
        self._cursor += 1
        self._last, self._last_time = command, float(now)
        self.executed.append(command)
        return command.copy()
