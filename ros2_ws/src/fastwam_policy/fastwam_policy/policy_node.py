"""The Fast-WAM policy node: cameras + joint feedback -> action chunks -> R1 Lite joint targets.

A thin rclpy adapter over the ROS-free pieces: `fastwam.supervisor.Supervisor` (the states, what
may happen in each, and why), `fastwam.observation.InputTracker` (newest frame per camera, joint
state nearest the head frame, freshness), `fastwam.policy.FastWAMPolicy` (inference),
`fastwam.execution.ChunkExecutor` (alignment, blending, limits), `fastwam.image_decoding`
(decoding) and `fastwam.robot_config_match.check_fits` (the checkpoint against the robot config).

Threads. Subscriptions, services, the e-stop and the control timer run on the ROS executor; the
model runs on a worker thread, so everything stays live while it predicts. A replan starts when a
head-camera frame arrives and the plan is down to ``replan_steps_left`` steps: the worker decodes
that observation, predicts, and merges the chunk into the plan aligned to the present (steps that
elapsed since the frame's stamp are skipped) and blended over ``blend_steps``. When the last
command is at least half a period old, the first step of a new plan is commanded at once and the
control timer restarts from there (no latency from waiting for the next tick); otherwise the next
tick commands it. Every command is also bounded by the time since the previous one
(`ChunkExecutor.step`), so no joint target moves faster than max_velocity whatever the timing.
One lock guards the plan and every command.

Execution modes (parameter ``execution``): ``blend`` cross-fades each new chunk over the old plan
(``blend_steps`` of the robot config); ``rtc`` (real-time chunking, `fastwam.model.rtc`) samples the
new chunk as a continuation of the plan: its first d steps (the inference delay, the median of the
measured observation-to-merge latencies of recent chunks in control steps; warm-up runs never enter)
are guided to the plan the robot follows meanwhile, the overlap after them with decaying weights
(``rtc_schedule``, ``rtc_execution_horizon``), and the chunk replaces the plan without blending.
Alignment, joint limits and velocity limits are the same in both modes. Callback groups make the node safe on a
multi-threaded executor (a component container), but `main` and the single-process runner spin a
single-threaded one:
with the model on its own thread nothing needs more, and rclpy's MultiThreadedExecutor costs so
much Python per message (task objects, a wait-set rebuild per callback) that on a small CPU it
starves the model of the GIL (measured here: 3-5x slower inference, stale-camera holds).

States (fastwam_msgs/PolicyStatus): STARTING, DRY_RUN, EXECUTING, HOLDING, ESTOP, ERROR, decided by
`fastwam.supervisor.Supervisor` (what each means, the transition table, the input debounce, the
failure count that leads to ERROR); this node feeds it events and publishes what it says. EXECUTING
publishes one JointState per command topic at the control rate, plus the whole plan as a
JointTrajectory when a chunk lands; DRY_RUN the same predictions and monitoring, nothing on the
command or trajectory topics.

Motion is enabled by the ``motion_enabled`` parameter or ~/set_motion_enabled (both take the same
path; enabling is refused in STARTING, ERROR and ESTOP: `Supervisor.enable_refusal`). On enabling,
the plan restarts from the measured joint positions. Every command is clamped to the joint limits
and moves each joint by at most max_velocity / rate per step. Disabling, errors, e-stop and
shutdown stop commanding.

Topics (names from the robot config; ~ is this node's namespace): cameras (CompressedImage or
Image) and joint feedback in, BEST_EFFORT depth 1; R1 Lite JointState targets, ~/joint_trajectory,
~/action_chunk, ~/status (1 Hz and on a change of state or cause), ~/composite_image, ~/chunk_plot
out, reliable. A cause is the reason without its measured numbers (`fastwam.supervisor.cause`: a
frame's age changes every tick: it is a new value of the same cause, published at 1 Hz, not a
change); the log follows the same rule.
"""

from __future__ import annotations

import statistics
import sys
import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import rclpy
from builtin_interfaces.msg import Duration, Time
from rcl_interfaces.msg import ParameterDescriptor, SetParametersResult
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup, ReentrantCallbackGroup
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CompressedImage, Image, JointState
from std_msgs.msg import Bool, String
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

from fastwam import image_decoding
from fastwam.execution import ChunkExecutor, JointLimits
from fastwam.inference_device import CPU_THREADS, resolve_inference_device
from fastwam.model.rtc import DEFAULT_MAX_GUIDANCE_WEIGHT, SCHEDULES, ChunkGuide, delay_steps
from fastwam.model.variants import RTC_VARIANTS, variant_rules
from fastwam.observation import InputTracker, Observation, order_joint_positions
from fastwam.robot_config import RobotConfig, load_robot_config
from fastwam.robot_config_match import check_fits
from fastwam.shipped_configs import default_robot_config
from fastwam.supervisor import State, Supervisor, cause
from fastwam_msgs.msg import ActionChunk, PolicyStatus
from fastwam_msgs.srv import SetInstruction, SetMotionEnabled
from fastwam_policy.chunk_plot import render_chunk_plot
from fastwam_policy.spin import spin_until_shutdown

NODE_NAME = "fastwam_policy"
INPUT_QOS = QoSProfile(depth=1, history=HistoryPolicy.KEEP_LAST, reliability=ReliabilityPolicy.BEST_EFFORT)
OUTPUT_QOS = QoSProfile(depth=10, history=HistoryPolicy.KEEP_LAST, reliability=ReliabilityPolicy.RELIABLE)
IMAGE_QOS = QoSProfile(depth=1, history=HistoryPolicy.KEEP_LAST, reliability=ReliabilityPolicy.RELIABLE)
ESTOP_QOS = QoSProfile(
    depth=10,
    history=HistoryPolicy.KEEP_LAST,
    reliability=ReliabilityPolicy.RELIABLE,
    durability=DurabilityPolicy.VOLATILE,
)
LATENCY_WINDOW = 50  # chunks in the latency median / p95
DELAY_WINDOW = 10  # chunks in the RTC inference-delay estimate
EXECUTION_MODES = ("blend", "rtc")


@dataclass(frozen=True)
class _Request:
    observation: Observation
    instruction: str
    generation: int  # instruction generation: results of an older one are dropped


def _seconds(stamp: Time) -> float:
    return stamp.sec + stamp.nanosec * 1e-9


def _to_time(seconds: float) -> Time:
    ns = int(round(seconds * 1e9))
    return Time(sec=ns // 1_000_000_000, nanosec=ns % 1_000_000_000)


def _to_duration(seconds: float) -> Duration:
    ns = int(round(seconds * 1e9))
    return Duration(sec=ns // 1_000_000_000, nanosec=ns % 1_000_000_000)


class FastWAMPolicyNode(Node):
    """See the module docstring. Construct with ``parameter_overrides=[Parameter(...)]`` in-process."""

    def __init__(self, **kwargs):
        super().__init__(NODE_NAME, **kwargs)
        self._declare_parameters()
        config_path = self.get_parameter("robot_config").value or default_robot_config()
        self.config: RobotConfig = load_robot_config(config_path)
        robot, control = self.config.robot, self.config.control
        self.period = 1.0 / control.rate_hz
        self._execution = str(self.get_parameter("execution").value)
        if self._execution not in EXECUTION_MODES:
            raise ValueError(
                f"parameter 'execution' must be one of {EXECUTION_MODES}, got {self._execution!r}"
            )
        self._rtc_schedule = str(self.get_parameter("rtc_schedule").value)
        if self._rtc_schedule not in SCHEDULES:
            raise ValueError(
                f"parameter 'rtc_schedule' must be one of {SCHEDULES}, got {self._rtc_schedule!r}"
            )
        self._rtc_horizon = int(self.get_parameter("rtc_execution_horizon").value)
        self._rtc_beta = float(self.get_parameter("rtc_max_guidance_weight").value)
        self._added_latency = float(self.get_parameter("added_latency_s").value)
        if self._rtc_beta < 0 or self._added_latency < 0:
            raise ValueError(
                f"parameters 'rtc_max_guidance_weight' ({self._rtc_beta}) and 'added_latency_s' "
                f"({self._added_latency}) must be >= 0"
            )

        self._lock = threading.RLock()
        groups = list(dict.fromkeys([*robot.action_groups, *robot.state_groups]))
        self._tracker = InputTracker(
            self.config.cameras.keys, {g: len(robot.group(g).joints) for g in groups}, self.config.freshness
        )
        self._plan = ChunkExecutor(
            JointLimits.from_robot(robot, control.rate_hz),
            control.rate_hz,
            # An RTC chunk already continues the plan: a cross-fade would only pull it off it.
            0 if self._execution == "rtc" else control.blend_steps,
            control.replan_steps_left,
        )
        # The state machine (guarded by _lock): mode, e-stop latch, error, holds, failure count.
        self._supervisor = Supervisor(self._plan, bool(self.get_parameter("motion_enabled").value))
        self._instruction = str(self.get_parameter("instruction").value)
        self._generation = 0
        self._replan_now = False
        self._request: _Request | None = None
        self._chunks_predicted = 0
        self._steps_executed = 0
        self._last_step_time = -1.0
        self._latencies: deque[float] = deque(maxlen=LATENCY_WINDOW)
        self._delays: deque[float] = deque(maxlen=DELAY_WINDOW)  # observation stamp -> merge, s
        self._published_state: tuple[int, str, bool] | None = None
        self._logged_state: tuple[int, str] | None = None
        self._policy = None
        self._generator = None

        control_group = MutuallyExclusiveCallbackGroup()
        input_group = ReentrantCallbackGroup()
        command_group = MutuallyExclusiveCallbackGroup()
        monitor_group = MutuallyExclusiveCallbackGroup()

        topics = self.config.topics
        self._command_pubs = {
            g: self.create_publisher(JointState, topics.command[g], OUTPUT_QOS) for g in robot.action_groups
        }
        self._trajectory_pub = self.create_publisher(JointTrajectory, topics.joint_trajectory, OUTPUT_QOS)
        self._chunk_pub = self.create_publisher(ActionChunk, "~/action_chunk", OUTPUT_QOS)
        self._status_pub = self.create_publisher(PolicyStatus, "~/status", OUTPUT_QOS)
        # The same status as one line of text: RViz and Foxglove show strings, not PolicyStatus.
        self._status_text_pub = self.create_publisher(String, "~/status_text", OUTPUT_QOS)
        self._composite_pub = self.create_publisher(Image, "~/composite_image", IMAGE_QOS)
        self._plot_pub = self.create_publisher(Image, "~/chunk_plot", IMAGE_QOS)

        self._camera_topics = {k: c.topic for k, c in topics.cameras.items()}
        for key, cam in topics.cameras.items():
            msg_type = CompressedImage if cam.transport == "compressed" else Image
            self.create_subscription(
                msg_type,
                cam.topic,
                lambda msg, key=key: self._on_camera(key, msg),
                INPUT_QOS,
                callback_group=input_group,
            )
        for group in groups:
            self.create_subscription(
                JointState,
                topics.feedback[group],
                lambda msg, group=group: self._on_joints(group, msg),
                INPUT_QOS,
                callback_group=input_group,
            )
        self.create_subscription(Bool, "~/estop", self._on_estop, ESTOP_QOS, callback_group=command_group)
        self.create_service(
            SetInstruction, "~/set_instruction", self._on_set_instruction, callback_group=command_group
        )
        self.create_service(
            SetMotionEnabled,
            "~/set_motion_enabled",
            self._on_set_motion_enabled,
            callback_group=command_group,
        )
        self.add_on_set_parameters_callback(self._on_set_parameters)
        self._control_timer = self.create_timer(
            self.period, self._on_control_tick, callback_group=control_group
        )
        self.create_timer(1.0, self._publish_status, callback_group=monitor_group)
        self.create_timer(0.5, self._publish_plot, callback_group=monitor_group)

        self._decoder = ThreadPoolExecutor(
            max_workers=len(self.config.cameras.keys), thread_name_prefix="decode"
        )
        self._wake = threading.Condition(self._lock)
        self._worker = threading.Thread(target=self._run_worker, name="fastwam_inference", daemon=True)
        self._worker.start()
        self.get_logger().info(
            f"robot config {config_path}; checkpoint {self.get_parameter('checkpoint').value}; "
            f"control {control.rate_hz:g} Hz; dry-run until motion is enabled"
        )

    # ---- parameters --------------------------------------------------------------------------
    def _declare_parameters(self) -> None:
        def declare(name, default, description, read_only=True):
            self.declare_parameter(
                name, default, ParameterDescriptor(description=description, read_only=read_only)
            )

        declare("checkpoint", "", "Fast-WAM checkpoint directory (checkpoint.json + model.safetensors)")
        declare(
            "robot_config",
            "",
            "Robot config YAML (robot spec, cameras, topics, control, freshness); "
            "default: the shipped r1_lite.yaml (fastwam.shipped_configs)",
        )
        declare("instruction", "", "Language instruction the policy is conditioned on", read_only=False)
        declare(
            "motion_enabled",
            False,
            "Command the robot (true) or only predict and publish monitoring (false, dry-run)",
            read_only=False,
        )
        declare("device", "auto", "Torch device for inference: auto (cuda if available), cpu, cuda, cuda:N")
        declare(
            "dtype",
            "auto",
            "Inference dtype: auto (bfloat16 on cuda, float32 on cpu), float32, bfloat16, float16",
        )
        declare(
            "compile",
            "auto",
            "How the cached prefix + action loop run: auto (torch_compile on cuda, none on cpu), none "
            "(eager), cudagraph (CUDA graphs), torch_compile (inductor-fused layers in CUDA graphs; "
            "compiles during the warm-up runs, falls back to eager if compilation fails)",
        )
        declare(
            "cpu_threads",
            CPU_THREADS,
            "Torch intra-op threads for inference on CPU (0: torch's default, every core). One by "
            "default: on a busy machine more threads spin-wait on each other (fastwam.inference_device.CPU_THREADS)",
        )
        declare("seed", 0, "Seed of the sampler's noise generator (flow matching starts from noise)")
        declare(
            "action_samples",
            0,
            "Sampler draws averaged into each chunk, all from one pass of the video branch "
            "(0: the checkpoint's num_action_samples)",
        )
        declare("warmup_runs", 1, "Inference runs on blank images at start-up before the node is ready")
        declare(
            "execution",
            "blend",
            "How a new chunk joins the plan being executed: blend (cross-fade over the robot config's "
            "blend_steps) or rtc (real-time chunking: the chunk is sampled as a continuation of the plan, "
            "the steps executed during inference frozen to it; eager sampling, slower per chunk)",
        )
        declare(
            "rtc_execution_horizon",
            0,
            "rtc: how many leading steps of a new chunk are guided towards the plan (frozen for the "
            "measured inference delay, then decaying, then free); 0: as far as the plan still reaches",
        )
        declare(
            "rtc_schedule",
            "exp",
            "rtc: how the guidance decays after the frozen delay: exp (the paper's soft mask), linear, "
            "ones (the whole overlap fully guided) or zeros (only the delay)",
        )
        declare(
            "rtc_max_guidance_weight",
            DEFAULT_MAX_GUIDANCE_WEIGHT,
            "rtc: the guidance weight's clip beta (the paper uses 5; 0 turns guidance off). Larger "
            "follows the plan more closely; too large for the step size (beta * step > 2) overshoots",
        )
        declare(
            "added_latency_s",
            0.0,
            "Seconds added to every inference before its chunk is merged, to evaluate the execution "
            "modes under a slower computer (0 on a robot)",
        )

    def _on_set_parameters(self, params: list[Parameter]) -> SetParametersResult:
        with self._lock:
            for p in params:
                if p.name == "motion_enabled" and p.value is True and not self._supervisor.motion_enabled:
                    refusal = self._supervisor.enable_refusal()
                    if refusal:
                        return SetParametersResult(successful=False, reason=refusal)
                if p.name == "instruction" and not isinstance(p.value, str):
                    return SetParametersResult(successful=False, reason="instruction must be a string")
            for p in params:
                if p.name == "motion_enabled":
                    self._set_motion(bool(p.value))
                elif p.name == "instruction" and p.value != self._instruction:
                    self._instruction = p.value
                    self._generation += 1  # a chunk in flight for the old instruction is dropped
                    self._replan_now = True
                    self.get_logger().info(f"instruction: {p.value!r}")
        self._publish_status(only_on_change=True)
        return SetParametersResult(successful=True)

    def _set_motion(self, enabled: bool) -> None:
        if self._supervisor.set_motion(enabled):
            self.get_logger().info("motion enabled" if enabled else "motion disabled (dry-run)")

    # ---- services and e-stop -----------------------------------------------------------------
    def _on_set_instruction(self, request, response):
        result = self.set_parameters([Parameter("instruction", Parameter.Type.STRING, request.instruction)])[
            0
        ]
        response.success = result.successful
        response.message = result.reason or f"instruction set to {request.instruction!r}"
        return response

    def _on_set_motion_enabled(self, request, response):
        result = self.set_parameters(
            [Parameter("motion_enabled", Parameter.Type.BOOL, bool(request.enabled))]
        )[0]
        response.success = result.successful
        response.message = result.reason or ("motion enabled" if request.enabled else "motion disabled")
        return response

    def _on_estop(self, msg: Bool) -> None:
        with self._lock:
            if not self._supervisor.estop(msg.data):
                return
            if msg.data:
                self.get_logger().error("EMERGENCY STOP: commanding stopped, latched until ~/estop false")
            else:
                self.get_logger().warning("emergency stop released: dry-run; enable motion again to move")
        if self.get_parameter("motion_enabled").value:
            self.set_parameters([Parameter("motion_enabled", Parameter.Type.BOOL, False)])
        self._publish_status(only_on_change=True)

    # ---- inputs ------------------------------------------------------------------------------
    def _now(self) -> float:
        return self.get_clock().now().nanoseconds * 1e-9

    def _on_camera(self, key: str, msg) -> None:
        now = self._now()
        stamp = _seconds(msg.header.stamp) or now  # an unstamped driver: arrival time
        try:
            image_decoding.check(msg)
        except image_decoding.ImageError as error:
            with self._lock:
                self._tracker.reject_frame(key, now, f"{self._camera_topics[key]}: {error}")
            self.get_logger().warning(f"camera {key!r}: {error}", throttle_duration_sec=2.0)
            return
        with self._lock:
            self._tracker.add_frame(key, stamp, now, msg)
            if key == self._tracker.reference:
                self._maybe_request(now)

    def _on_joints(self, group: str, msg: JointState) -> None:
        now = self._now()
        stamp = _seconds(msg.header.stamp) or now
        topic = self.config.topics.feedback[group]
        try:
            positions = order_joint_positions(
                msg.name, msg.position, self.config.robot.group(group).joints, topic
            )
        except ValueError as error:
            with self._lock:
                self._tracker.reject_joints(group, str(error))
            self.get_logger().warning(f"joint state {group!r}: {error}", throttle_duration_sec=2.0)
            return
        with self._lock:
            self._tracker.add_joints(group, stamp, positions)

    def _maybe_request(self, now: float) -> None:
        """Hand the newest observation to the worker if a chunk is due (caller holds the lock)."""
        if not self._supervisor.may_request:
            return
        if not (self._plan.needs_chunk or self._replan_now):
            return
        observation = self._tracker.observation(now)
        if isinstance(observation, list):
            return  # no new chunk; the control tick holds and reports why
        self._supervisor.busy = True
        self._replan_now = False
        self._request = _Request(observation, self._instruction, self._generation)
        self._wake.notify()

    # ---- control -----------------------------------------------------------------------------
    def _commanding(self) -> bool:
        return self._supervisor.commanding and self.context.ok()

    def _on_control_tick(self) -> None:
        with self._lock:
            now = self._now()
            if now - self._last_step_time >= 0.5 * self.period:  # a chunk just stepped: not twice
                self._control_step(now)
        self._publish_status(only_on_change=True)

    def _control_step(self, now: float) -> None:
        """Command the plan's next step (caller holds the lock)."""
        if not self._supervisor.live:
            return
        problems = self._tracker.problems(now)
        if not self._supervisor.judge_inputs(problems, self._tracker.has_invalid_input()):
            return  # inputs bad (debounced): the plan is held, the robot keeps its last target
        command = self._plan.step(now)
        self._last_step_time = now
        if command is None:
            return
        self._steps_executed += 1
        if self._commanding():
            self._publish_command(command, now)

    def _publish_command(self, command: np.ndarray, now: float) -> None:
        robot = self.config.robot
        stamp = _to_time(now)
        for group, values in robot.split(command, robot.action_groups).items():
            joints = robot.group(group)
            msg = JointState(name=list(joints.joints), position=values.tolist())
            msg.header.stamp = stamp
            if joints.unit == "rad":  # arms: per-joint velocity caps; grippers read position[0] only
                msg.velocity = list(joints.max_velocity)
            self._command_pubs[group].publish(msg)

    def _trajectory(self, targets: np.ndarray, stamp: float) -> JointTrajectory:
        msg = JointTrajectory(joint_names=list(self.config.robot.action_joint_names))
        msg.header.stamp = _to_time(stamp)
        msg.points = [
            JointTrajectoryPoint(positions=row.tolist(), time_from_start=_to_duration(i * self.period))
            for i, row in enumerate(targets)
        ]
        return msg

    # ---- worker ------------------------------------------------------------------------------
    def _run_worker(self) -> None:
        try:
            self._load_model()
        except Exception as error:  # any failure here is reported, never raised into the executor
            with self._lock:
                self._supervisor.fail(f"start-up failed: {type(error).__name__}: {error}")
            self.get_logger().error(self._supervisor.error)
            self._publish_status(only_on_change=True)
            return
        while True:
            with self._lock:
                while self._request is None and not self._supervisor.shutting_down:
                    self._wake.wait(timeout=1.0)
                if self._supervisor.shutting_down:
                    return
                request, self._request = self._request, None
            try:
                self._infer(request)
            except Exception as error:  # a bug, or the context shutting down under us: stop commanding
                with self._lock:
                    if not self._supervisor.shutting_down and self.context.ok():
                        self._supervisor.fail(
                            f"internal error in the inference worker: {type(error).__name__}: {error}"
                        )
                        self.get_logger().error(self._supervisor.error)
            finally:
                with self._lock:
                    self._supervisor.busy = False

    def _load_model(self) -> None:
        import torch

        from fastwam.policy import FastWAMPolicy

        checkpoint = self.get_parameter("checkpoint").value
        if not checkpoint:
            raise ValueError("parameter 'checkpoint' is empty")
        run = resolve_inference_device(
            self.get_parameter("device").value,
            self.get_parameter("dtype").value,
            self.get_parameter("compile").value,
            torch.cuda.is_available(),
        )
        device = run.device
        self.get_logger().info(f"loading {checkpoint} on {device} ({run.dtype}, compile {run.compile})")
        threads = int(self.get_parameter("cpu_threads").value)
        if threads < 0:
            raise ValueError(f"parameter 'cpu_threads' must be >= 0, got {threads}")
        policy = FastWAMPolicy.from_pretrained(
            checkpoint,
            device=device,
            dtype=getattr(torch, run.dtype),
            compile=run.compile,
            cpu_threads=threads or None,
        )
        # Action dims map to joints through the checkpoint's robot spec, checked against the config.
        check_fits(policy.robot, policy.camera_layout, self.config.robot, self.config.cameras)
        if abs(policy.fps - self.config.control.rate_hz) > 1e-6:
            raise ValueError(
                f"checkpoint predicts steps at {policy.fps:g} Hz, control rate is "
                f"{self.config.control.rate_hz:g} Hz"
            )
        if self._execution == "rtc" and not variant_rules(policy.config.variant).realtime_chunking:
            raise ValueError(
                f"execution 'rtc' needs a cached-prefix checkpoint ({', '.join(RTC_VARIANTS)}), this one is "
                f"{policy.config.variant!r}: use execution 'blend'"
            )
        samples = int(self.get_parameter("action_samples").value)
        if samples < 0:
            raise ValueError(f"parameter 'action_samples' must be >= 0, got {samples}")
        if samples:
            policy.num_action_samples = samples
        generator = torch.Generator(device=device).manual_seed(int(self.get_parameter("seed").value))
        with self._lock:
            self._supervisor.loading("warming up")
        self._publish_status(only_on_change=True)
        robot = self.config.robot
        images = {
            view.key: np.zeros((view.height, view.width, 3), np.uint8)
            for row in self.config.cameras.rows
            for view in row
        }
        middle = {g: (np.array(robot.group(g).lower) + robot.group(g).upper) / 2 for g in robot.state_groups}
        state = robot.join(middle, robot.state_groups) if robot.state_groups else None
        for _ in range(max(0, int(self.get_parameter("warmup_runs").value))):
            out = policy.predict(images, state, self._instruction, generator=generator)
            if out.actions.shape != (policy.action_horizon, robot.action_dim):
                raise ValueError(f"warm-up chunk has shape {out.actions.shape}")
        with self._lock:
            self._policy, self._generator = policy, generator
            if self._supervisor.loaded() is State.EXECUTING:  # motion_enabled:=true at start-up
                self.get_logger().info("motion enabled")
        self.get_logger().info(
            f"ready: horizon {policy.action_horizon} steps at {policy.fps:g} Hz, "
            f"{policy.num_action_samples} sampler draw(s) per chunk, execution {self._execution}"
        )
        self._publish_status(only_on_change=True)

    def _infer(self, request: _Request) -> None:
        observation, robot = request.observation, self.config.robot
        keys = self.config.cameras.keys
        decoded = dict(zip(keys, self._decoder.map(self._decode, [observation.frames[k] for k in keys])))
        failed = {k: v for k, v in decoded.items() if isinstance(v, str)}
        if failed:
            with self._lock:
                for key, message in failed.items():
                    self._tracker.frame_failed(key, observation.frames[key].seq, message)
            return
        state = robot.join(observation.joints, robot.state_groups) if robot.state_groups else None
        guide = self._guide(observation.stamp) if self._execution == "rtc" else None
        try:
            out = self._policy.predict(
                decoded, state, request.instruction, generator=self._generator, guide=guide
            )
            actions, timings = out.actions, out.timings_ms
            if self._added_latency > 0:
                time.sleep(self._added_latency)
        except Exception as error:  # the model must not take the node down; repeated failure: ERROR
            with self._lock:
                self._chunks_predicted += 1
                self._supervisor.inference_failed(error)
                failed = self._supervisor.mode is State.ERROR
            self.get_logger().error(self._supervisor.hold_reason)
            if failed and self.get_parameter("motion_enabled").value:
                self.set_parameters([Parameter("motion_enabled", Parameter.Type.BOOL, False)])
            self._publish_status(only_on_change=True)
            return
        with self._lock:
            self._chunks_predicted += 1
            sequence = self._chunks_predicted
            if request.generation != self._generation or not self._supervisor.live:
                return
            now = self._now()
            if self._plan.last_command is None:
                measured = self._tracker.latest_joints()
                start = measured if measured is not None else observation.joints
                self._plan.reset(robot.join(start, robot.action_groups))
            result = self._plan.merge(actions, observation.stamp, now)
            self._delays.append(now - observation.stamp)
            if not result.accepted:
                self._supervisor.chunk_discarded(f"chunk {sequence} discarded: {result.reason}")
                self.get_logger().warning(self._supervisor.hold_reason, throttle_duration_sec=2.0)
            else:
                self._supervisor.chunk_accepted()
                self._latencies.append(float(timings.get("total", 0.0)))
                if self._commanding():
                    self._trajectory_pub.publish(self._trajectory(self._plan.plan, now))
                # The step due now goes out at once and the timer restarts from here, unless a
                # command went out less than half a period ago: then the next tick sends it (a
                # command right after another is bounded to a tiny move anyway, ChunkExecutor.step).
                if now - self._last_step_time >= 0.5 * self.period:
                    self._control_step(now)
                    self._control_timer.reset()
                self._chunk_pub.publish(self._chunk_msg(request, actions, timings, sequence, result, now))
        self._publish_status(only_on_change=True)
        # Monitoring after the chunk is applied: composing and drawing stay off the latency path.
        with self._lock:
            if self._supervisor.shutting_down:
                return
            show = self._composite_pub.get_subscription_count() > 0
        if show:
            self._publish_image(self._composite_pub, self.config.cameras.compose(decoded), observation.stamp)
        if result.accepted:
            self._publish_plot()

    def _guide(self, stamp: float) -> ChunkGuide | None:
        """The RTC guide for a chunk predicted from an observation at `stamp`: the plan at the
        chunk's step times, the delay from recent latencies. None without a plan to continue."""
        horizon, rate = self._policy.action_horizon, self.config.control.rate_hz
        with self._lock:
            targets = self._plan.targets_at(stamp + np.arange(horizon) / rate)
            delays = list(self._delays)
        if targets is None or len(targets) == 0:
            return None
        d = delay_steps(delays, rate, horizon)
        return ChunkGuide.for_plan(targets, d, self._rtc_horizon, horizon, self._rtc_schedule, self._rtc_beta)

    def _decode(self, frame) -> np.ndarray | str:
        try:
            return image_decoding.decode(frame.payload)
        except image_decoding.ImageError as error:
            return str(error)

    # ---- monitoring --------------------------------------------------------------------------
    def _chunk_msg(self, request, actions, timings, sequence, result, now) -> ActionChunk:
        msg = ActionChunk(
            instruction=request.instruction, sequence=sequence, steps_skipped=result.steps_skipped
        )
        msg.header.stamp = _to_time(request.observation.stamp)
        msg.trajectory = self._trajectory(actions, request.observation.stamp)
        # When the chunk was applied: its first command went out with exactly this stamp.
        msg.trajectory.header.stamp = _to_time(now)
        for key in ("preprocess", "text_encode", "vae_encode", "prefix", "action", "total"):
            setattr(msg, f"{key}_ms", float(timings.get(key, 0.0)))
        return msg

    def _publish_status(self, only_on_change: bool = False) -> None:
        with self._lock:
            if self._supervisor.shutting_down:
                return
            now = self._now()
            state, reason = self._supervisor.status(now)
            motion_enabled = self._supervisor.motion_enabled
            key = (state, cause(reason), motion_enabled)
            if only_on_change and key == self._published_state:
                return
            self._published_state = key
            msg = PolicyStatus(state=int(state), reason=reason, motion_enabled=motion_enabled)
            msg.header.stamp = _to_time(now)
            msg.instruction = self._instruction
            if self._latencies:
                ordered = sorted(self._latencies)
                msg.latency_median_ms = float(statistics.median(ordered))
                msg.latency_p95_ms = float(ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))])
            msg.camera_names = list(self.config.cameras.keys)
            msg.camera_ages_s = [float(a) for a in self._tracker.camera_ages(now)]
            msg.camera_rates_hz = [float(r) for r in self._tracker.camera_rates(now)]
            msg.chunks_predicted = self._chunks_predicted
            msg.steps_executed = self._steps_executed
            self._status_pub.publish(msg)
            self._status_text_pub.publish(String(data=status_line(msg)))
            logged = (state, cause(reason))
            changed, previous, self._logged_state = logged != self._logged_state, self._logged_state, logged
        if changed:
            text = f"state {state.name}{': ' + reason if reason else ''}"
            # rclpy loggers fix the severity and the throttling per call site: one call per kind.
            # An exhausted plan can come and go with every chunk on a slow computer: its lines, and
            # the EXECUTING that ends it, at most every 5 s (the status topic has every change).
            exhausted = reason.startswith("plan exhausted") or (
                previous is not None and previous[1].startswith("plan exhausted")
            )
            if exhausted and state is State.HOLDING:
                self.get_logger().warning(text, throttle_duration_sec=5.0)
            elif exhausted and state is State.EXECUTING:
                self.get_logger().info(text, throttle_duration_sec=5.0)
            elif state in (State.HOLDING, State.ESTOP, State.ERROR):
                self.get_logger().warning(text)
            else:
                self.get_logger().info(text)

    def _publish_plot(self) -> None:
        with self._lock:
            if self._supervisor.shutting_down or self._plan.chunk is None:
                return
            if self._plot_pub.get_subscription_count() == 0:
                return
            chunk, executed, offset = self._plan.chunk, np.array(self._plan.executed), self._plan.chunk_offset
        robot = self.config.robot
        image = render_chunk_plot(
            chunk, executed, offset, robot.action_joint_names, robot.action_lower, robot.action_upper
        )
        self._publish_image(self._plot_pub, image, self._now())

    def _publish_image(self, publisher, rgb: np.ndarray, stamp: float) -> None:
        msg = Image(height=rgb.shape[0], width=rgb.shape[1], encoding="rgb8", is_bigendian=0)
        msg.header.stamp = _to_time(stamp)
        msg.step = rgb.shape[1] * 3
        msg.data = np.ascontiguousarray(rgb).tobytes()  # from bytes: fast (an ndarray is ~100x slower)
        publisher.publish(msg)

    # ---- shutdown ----------------------------------------------------------------------------
    def destroy_node(self):
        with self._lock:
            self._supervisor.shutdown()  # no command from here on
            self._wake.notify_all()
        self._worker.join(timeout=10.0)
        self._decoder.shutdown(wait=False)
        return super().destroy_node()


def status_line(msg: PolicyStatus) -> str:
    """One human-readable line of a PolicyStatus, e.g. for an RViz text overlay."""
    parts = [State(msg.state).name + (f" ({msg.reason})" if msg.reason else "")]
    parts.append("motion enabled" if msg.motion_enabled else "dry-run")
    if msg.latency_median_ms:
        parts.append(f"latency {msg.latency_median_ms:.0f}/{msg.latency_p95_ms:.0f} ms (median/p95)")
    parts.append(f"chunks {msg.chunks_predicted}")
    ages = ", ".join(f"{n} {a:.2f}s" for n, a in zip(msg.camera_names, msg.camera_ages_s))
    if ages:
        parts.append(f"camera ages {ages}")
    return " | ".join(parts)


def main(args=None) -> int:
    rclpy.init(args=args)
    try:
        node = FastWAMPolicyNode()
    except Exception as error:  # bad robot config / parameters: a clear message, no traceback spam
        print(f"[{NODE_NAME}] cannot start: {type(error).__name__}: {error}", file=sys.stderr)
        rclpy.try_shutdown()
        return 1
    try:
        spin_until_shutdown(node)
    finally:
        node.destroy_node()
        rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
