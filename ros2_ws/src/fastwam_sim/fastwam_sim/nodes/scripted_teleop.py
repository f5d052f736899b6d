"""Scripted teleoperator: an operator node that folds the towel in the simulated R1 Lite.

It does what a person with a teleop rig and the keyboard helper does, through the same interfaces:
for each of `episodes` episodes (towel seeds seed, seed + 1, ...) it resets the scene through the
simulated robot's ~/reset_episode (a person placing the towel), starts a recording through the
recorder's services when `recorder` is set (fastwam_policy.recorder_client, the keyboard helper's
client too), performs the fold (fastwam_sim.ScriptedFolder) on the /motion_target command topics
(RELIABLE; arms with per-joint velocity caps), and after it stops the recording, labelled with the
success that the simulated robot reports on ~/episode (its scorer is the robot's sensor here).

It follows the simulated robot's clock (/clock, published every physics step): the fold's time and
every command stamp are simulated time, so a robot running `time_scale` times faster than real
time is operated at that speed and recorded with the stamps of a real-time run. It holds the start
pose until the recorder has started the episode, so a recording never misses the start of a fold;
a recorder that does not come up within `recorder_wait_s` is named in an error and the episode
runs unrecorded.
"""

from __future__ import annotations

import json

from rcl_interfaces.msg import ParameterDescriptor
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy
from rclpy.time import Time
from rosgraph_msgs.msg import Clock
from sensor_msgs.msg import JointState
from std_msgs.msg import String

from fastwam.robot_config import load_robot_config
from fastwam.shipped_configs import default_robot_config
from fastwam_msgs.srv import ResetEpisode
from fastwam_policy.recorder_client import RecorderClient
from fastwam_policy.spin import run_node
from fastwam_sim import ScriptedFolder, TowelFoldEnv
from fastwam_sim.episode_result import EpisodeResult

TELEOP_QOS = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
END_HOLD_S = 0.5  # the operator holds the home pose this long after the fold before stopping
SIM_WAIT_S = 60.0  # how long to wait for the simulated robot's reset service
POLL_S = 0.1  # how often a service that is not up yet is looked for


class ScriptedTeleopNode(Node):
    def __init__(self, **kwargs) -> None:
        super().__init__("scripted_teleop", **kwargs)
        p = self._declare
        config_path = str(
            p("robot_config", default_robot_config(), "robot config YAML: command topics, joints")
        )
        self.seed = int(p("seed", 0, "towel start pose seed of the first episode (episode i: seed + i)"))
        self.episodes = int(p("episodes", 1, "episodes to run; 0: keep going"))
        self.instruction = str(
            p("instruction", "fold the towel", "instruction the episodes are recorded with")
        )
        self.start_delay_s = float(
            p("start_delay_s", 1.0, "simulated seconds the operator waits after the recording started")
        )
        self.sim = str(p("sim", "/sim_robot", "the simulated robot node: its ~/reset_episode and ~/episode"))
        recorder = str(p("recorder", "", "recorder node whose services record each episode; empty: none"))
        recorder_wait_s = float(
            p(
                "recorder_wait_s",
                60.0,
                "how long to wait for the recorder's services before running an episode unrecorded (s)",
            )
        )
        if self.episodes < 0:
            raise ValueError(f"parameter episodes must be >= 0, got {self.episodes}")
        if self.start_delay_s < 0:
            raise ValueError(f"parameter start_delay_s must be >= 0, got {self.start_delay_s}")
        if not config_path:
            raise ValueError("parameter robot_config is empty: give a robot config YAML")
        self.config = load_robot_config(config_path)
        self.spec = self.config.robot
        # The operator's view of the scene: the towel pose of each episode's seed (as the person at
        # the rig sees it), never stepped.
        self._scene = TowelFoldEnv(self.spec, self.config.cameras.keys)
        self.command_pubs = {
            g: self.create_publisher(JointState, self.config.topics.command[g], TELEOP_QOS)
            for g in self.spec.action_groups
        }
        self.recorder_client = RecorderClient(self, recorder, wait_s=recorder_wait_s) if recorder else None
        self.reset_client = self.create_client(ResetEpisode, f"{self.sim}/reset_episode")
        self.create_subscription(String, f"{self.sim}/episode", self._on_score, 10)
        self.create_subscription(Clock, "/clock", self._on_clock, 10)
        self.period_ns = int(round(1e9 / self.config.control.rate_hz))

        self.results: list[EpisodeResult] = []
        self.finished = False  # all requested episodes are done
        self.recording_episode = ""
        # resetting (the robot's new scene) -> starting (the recorder's start; the start pose held)
        # -> folding -> stopping (the recorder's stop) -> resetting ... -> done
        self.phase = "resetting"
        self._now_ns: int | None = None  # the simulated robot's clock, last heard
        self._score: dict = {}  # the simulated robot's ~/episode for this episode, last heard
        self._folder: ScriptedFolder | None = None
        self._episode_index = -1
        self._episode_seed = self.seed
        self._fold_start_ns: int | None = None  # when the fold's clock started (robot clock)
        self._next_command_ns = 0
        self._reset_waited_s = 0.0
        self.get_logger().info(
            f"scripted teleop: {self.episodes or 'endless'} episode(s) from seed {self.seed}, "
            f"robot {self.sim}, recorder {recorder or 'none'}"
        )
        self._reset(self.seed)

    def _declare(self, name: str, default, description: str):
        """Declare a parameter with its description, read-only: every one is read once, at start-up."""
        descriptor = ParameterDescriptor(description=description, read_only=True)
        return self.declare_parameter(name, default, descriptor).value

    # -- episodes -------------------------------------------------------------------------------------
    def _reset(self, seed: int) -> None:
        """Ask the simulated robot for a new scene, polled until its service is up (the executor may
        be serving the robot itself, so it is never blocked)."""
        self.phase = "resetting"
        self._episode_seed = seed
        self._score = {}
        if self.reset_client.service_is_ready():
            future = self.reset_client.call_async(ResetEpisode.Request(seed=seed))
            future.add_done_callback(lambda f: self._on_reset(f.result()))
            return
        if self._reset_waited_s >= SIM_WAIT_S:
            self.get_logger().error(
                f"the simulated robot's {self.reset_client.srv_name} did not come up within {SIM_WAIT_S:g} s"
            )
            self.phase = "done"
            self.finished = True
            return
        timer = None

        def retry() -> None:
            self.destroy_timer(timer)
            self._reset_waited_s += POLL_S
            self._reset(seed)

        timer = self.create_timer(POLL_S, retry)

    def _on_reset(self, response) -> None:
        self._reset_waited_s = 0.0
        info = json.loads(response.episode)
        self._episode_index += 1
        self._score = info
        self._scene.reset(int(info["seed"]))
        self._folder = ScriptedFolder(self._scene)
        self.phase = "starting"
        if self.recorder_client is None:
            self._begin()
        else:
            self.recorder_client.start(self.instruction, self._on_started)

    def _on_started(self, response) -> None:
        if response is not None and response.success:
            self.recording_episode = response.episode
        elif response is not None:
            self.get_logger().error(f"recorder refused to start: {response.message}")
        self._begin()

    def _begin(self) -> None:
        """The fold's clock starts now (the recording, if any, runs)."""
        self.phase = "folding"
        self._fold_start_ns = self._now_ns  # None until the robot's clock is heard: set then

    def end_episode(self) -> None:
        """End the running episode: labelled with the robot's success, its recording stopped and saved."""
        if self.phase not in ("starting", "folding"):
            return
        start = self._fold_start_ns if self._fold_start_ns is not None else self._now_ns
        result = EpisodeResult(
            index=self._episode_index,
            seed=self._episode_seed,
            success=bool(self._score.get("succeeded", False)),
            progress=float(self._score.get("progress", 0.0)),
            duration_s=((self._now_ns or 0) - (start or 0)) / 1e9 if self.phase == "folding" else 0.0,
            completion_s=self._score.get("completion_s"),  # from the scene's reset
        )
        self.results.append(result)
        self.phase = "stopping"
        self.get_logger().info(
            f"episode {result.index} (seed {result.seed}) done: "
            f"{'SUCCESS' if result.success else 'no success'}, progress {result.progress:.2f}"
        )
        more = self.episodes == 0 or len(self.results) < self.episodes
        if self.recorder_client is not None and self.recording_episode:
            self.recorder_client.stop(True, result.success, lambda r: self._on_stopped(r, result, more))
        else:
            self._next(more)

    def _on_stopped(self, response, result: EpisodeResult, more: bool) -> None:
        if response is not None and response.success:
            result.recorded = response.episode
        else:
            self.get_logger().error(f"recorder refused to stop: {getattr(response, 'message', '')}")
        self.recording_episode = ""
        self._next(more)

    def _next(self, more: bool) -> None:
        if more:
            self._reset(self._episode_seed + 1)
        else:
            self.phase = "done"
            self.finished = True

    # -- the robot's clock and score ------------------------------------------------------------------
    def _on_score(self, msg: String) -> None:
        info = json.loads(msg.data)
        if info.get("seed") == self._episode_seed:
            self._score = info

    def _on_clock(self, msg: Clock) -> None:
        now = Time.from_msg(msg.clock).nanoseconds
        self._now_ns = now
        if self.phase == "folding" and self._fold_start_ns is None:
            self._fold_start_ns = now  # the fold began before the robot's clock was first heard
        if self.phase not in ("starting", "folding") or now < self._next_command_ns:
            return
        # Commands at the control rate on the robot's clock; after a stall, on from now.
        self._next_command_ns = max(self._next_command_ns + self.period_ns, now)
        t = 0.0  # starting: the start pose, held until the recording has started
        if self.phase == "folding":
            t = (now - self._fold_start_ns) / 1e9 - self.start_delay_s
            if t > self._folder.duration + END_HOLD_S:
                self.end_episode()
                return
        self._publish(self._folder.action(max(t, 0.0)), msg.clock)

    def _publish(self, action, stamp) -> None:
        for group, values in self.spec.split(action, self.spec.action_groups).items():
            msg = JointState()
            msg.header.stamp = stamp
            msg.name = list(self.spec.group(group).joints)
            msg.position = [float(v) for v in values]
            if group.startswith("arm"):  # the arms' command topics carry per-joint velocity caps
                msg.velocity = [float(v) for v in self.spec.group(group).max_velocity]
            self.command_pubs[group].publish(msg)


def main(args=None) -> None:
    run_node(ScriptedTeleopNode, args)


if __name__ == "__main__":
    main()
