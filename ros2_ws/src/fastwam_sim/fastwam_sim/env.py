"""TowelFoldEnv: the simulated R1 Lite at a table with a towel, stepped in simulated time.

The task: pick up the towel's two near corners (left arm left corner, right arm right corner),
carry them over the far corners and let go. Only the towel's start pose is random (seeded);
success needs both corners released within `fold_tolerance` of their far corners, which an idle
or randomly moving robot does not achieve: a corner is only picked up by a gripper that closes
right at it, low over the table, and has to be carried a towel's depth to a spot it can see only
in the camera images.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from fastwam.robot import RobotSpec
from fastwam_sim import render
from fastwam_sim.dynamics import JointTracker
from fastwam_sim.kinematics import ArmKinematics
from fastwam_sim.towel import Towel, TowelPose

ARMS = ("left", "right")
CAMERAS = ("head", "wrist_left", "wrist_right")
GRIPPER_OPEN = 0.05  # m, the R1 Lite's stroke
# Towel start poses: demonstrations use seeds from 0, evaluation seeds from here (held out).
EVAL_SEED = 100_000
# Rendered camera size in the runner, the simulation experiment and its ROS-free tools: the policy's
# layout is at most 256x320 per view, so 480x640 renders would only cost 4x the CPU.
SIM_IMAGE_SIZE = (240, 320)


def image_size_arg(text: str) -> tuple[int, int]:
    """argparse type for a simulated camera size "HxW"."""
    try:
        height, width = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"image size must be HEIGHTxWIDTH (e.g. 240x320), got {text!r}"
        ) from None
    if height <= 0 or width <= 0:
        raise argparse.ArgumentTypeError(f"image size must be positive, got {text!r}")
    return height, width


def add_image_size_argument(parser: argparse.ArgumentParser, help: str) -> None:
    """The --image-size HEIGHTxWIDTH option of the simulated cameras (default SIM_IMAGE_SIZE), as the
    runner, the rollouts and the grasp probe take it."""
    parser.add_argument("--image-size", type=image_size_arg, default=SIM_IMAGE_SIZE, help=help)


@dataclass(frozen=True)
class SimParams:
    # Towel start pose ranges: centre x, y (m) and yaw (rad), sampled uniformly per seed.
    towel_x: tuple[float, float] = (0.37, 0.45)
    towel_y: tuple[float, float] = (-0.05, 0.05)
    towel_yaw: tuple[float, float] = (-0.26, 0.26)
    towel_depth: float = 0.26
    towel_width: float = 0.36
    fold_tolerance: float = 0.04  # m, each near corner from its far corner
    grasp_radius: float = 0.045  # m, fingertip to corner (xy) when the gripper closes
    grasp_height: float = 0.04  # m, highest fingertip that can still pinch the cloth
    gripper_closed_below: float = 0.012  # m: closing past this pinches
    gripper_open_above: float = 0.03  # m: opening past this lets go
    tau: float = 0.1  # s, joint tracking time constant
    physics_dt: float = 1.0 / 60.0
    shoulder: tuple[float, float, float] = (0.0, 0.20, 0.42)  # left; the right one is mirrored in y
    home_tip: tuple[float, float, float] = (0.24, 0.24, 0.16)  # left; mirrored for the right arm
    image_height: int = 480
    image_width: int = 640
    head_camera: tuple[float, float, float] = (-0.16, 0.0, 0.86)
    head_target: tuple[float, float, float] = (0.40, 0.0, 0.0)
    head_focal: float = 560.0  # px at 640 wide
    wrist_focal: float = 300.0


def _mirror(point: Sequence[float], arm: str) -> tuple[float, float, float]:
    x, y, z = point
    return (x, y if arm == "left" else -y, z)


class TowelFoldEnv:
    """The simulated robot and scene. Not thread-safe: the ROS node serializes access."""

    def __init__(
        self, spec: RobotSpec, camera_keys: Sequence[str] = CAMERAS, params: SimParams | None = None
    ):
        self.spec = spec
        self.params = params or SimParams()
        missing = [
            g for g in (f"{p}_{a}" for a in ARMS for p in ("arm", "gripper")) if g not in spec._by_name
        ]
        if missing:
            raise ValueError(f"simulated R1 Lite needs joint groups {missing} in robot spec {spec.name!r}")
        for arm in ARMS:
            if len(spec.group(f"arm_{arm}").joints) != 6 or len(spec.group(f"gripper_{arm}").joints) != 1:
                raise ValueError(f"simulated R1 Lite: arm_{arm} needs 6 joints and gripper_{arm} 1")
        if sorted(camera_keys) != sorted(CAMERAS):
            raise ValueError(
                f"simulated R1 Lite renders cameras {list(CAMERAS)}, layout has {list(camera_keys)}"
            )
        self.kinematics = {arm: ArmKinematics(_mirror(self.params.shoulder, arm)) for arm in ARMS}
        self.home = {
            arm: self.kinematics[arm].inverse(np.array(_mirror(self.params.home_tip, arm))) for arm in ARMS
        }
        scale = self.params.image_width / 640.0
        self.head_camera = render.Camera.look_at(
            self.params.head_camera,
            self.params.head_target,
            self.params.head_focal * scale,
            self.params.image_height,
            self.params.image_width,
        )
        self._head_background: np.ndarray | None = None
        self.reset(0)

    # -- episode -------------------------------------------------------------------------------
    def reset(self, seed: int) -> None:
        """New episode: arms at home with grippers open, towel at a pose drawn from `seed`."""
        p = self.params
        rng = np.random.default_rng(seed)
        pose = TowelPose.sample(rng, {"x": p.towel_x, "y": p.towel_y, "yaw": p.towel_yaw})
        self.seed = seed
        self.towel = Towel(pose, p.towel_depth, p.towel_width)
        self.trackers = {}
        for arm in ARMS:
            self.trackers[f"arm_{arm}"] = JointTracker(self.spec.group(f"arm_{arm}"), self.home[arm], p.tau)
            self.trackers[f"gripper_{arm}"] = JointTracker(
                self.spec.group(f"gripper_{arm}"), [GRIPPER_OPEN], p.tau
            )
        self.time = 0.0

    # -- commands and dynamics -----------------------------------------------------------------
    def command(self, group: str, position: Sequence[float], velocity: Sequence[float] | None = None) -> None:
        """A /motion_target command for one joint group (targets, optional velocity caps)."""
        if group not in self.trackers:
            raise ValueError(f"simulated R1 Lite has no commandable joint group {group!r}")
        self.trackers[group].command(position, velocity)

    def command_action(self, action: np.ndarray) -> None:
        """A whole action vector laid out as the spec's action groups."""
        for group, values in self.spec.split(
            np.asarray(action, dtype=np.float64), self.spec.action_groups
        ).items():
            self.command(group, values)

    def step(self, duration: float) -> None:
        """Advance simulated time by `duration` seconds in physics steps."""
        n = max(1, int(round(duration / self.params.physics_dt)))
        dt = duration / n
        for _ in range(n):
            for arm in ARMS:
                gripper = self.trackers[f"gripper_{arm}"]
                before = gripper.position[0]
                self.trackers[f"arm_{arm}"].step(dt)
                gripper.step(dt)
                self._interact(arm, before, gripper.position[0])
            self.time += dt

    def _interact(self, arm: str, before: float, after: float) -> None:
        p = self.params
        tip = self.tip(arm)
        if before >= p.gripper_closed_below > after:
            self.towel.grasp(arm, tip, p.grasp_radius, p.grasp_height)
        elif after > p.gripper_open_above:
            self.towel.release(arm)
        self.towel.carry(arm, tip)

    # -- state ---------------------------------------------------------------------------------
    def positions(self, group: str) -> np.ndarray:
        return self.trackers[group].position.copy()

    def velocities(self, group: str) -> np.ndarray:
        return self.trackers[group].velocity.copy()

    def state(self) -> np.ndarray:
        """Joint positions laid out as the spec's state groups."""
        return self.spec.join({g: self.positions(g) for g in self.spec.state_groups}, self.spec.state_groups)

    def tip(self, arm: str) -> np.ndarray:
        return self.kinematics[arm].tip(self.trackers[f"arm_{arm}"].position)

    @property
    def success(self) -> bool:
        return self.towel.folded(self.params.fold_tolerance)

    @property
    def progress(self) -> float:
        return self.towel.progress()

    # -- rendering -----------------------------------------------------------------------------
    def render(self) -> dict[str, np.ndarray]:
        """Camera key -> uint8 RGB [image_height, image_width, 3]."""
        if self._head_background is None:
            self._head_background = self._background(self.head_camera)
        images = {"head": self._draw(self._head_background.copy(), self.head_camera)}
        for arm in ARMS:
            camera = self.wrist_camera(arm)
            images[f"wrist_{arm}"] = self._draw(self._background(camera), camera)
        return images

    def wrist_camera(self, arm: str) -> render.Camera:
        """Camera on the wrist, a little behind the gripper, looking down and ahead past the fingers."""
        points = self.kinematics[arm].points(self.trackers[f"arm_{arm}"].position)
        ahead = np.array([np.cos(points["yaw"]), np.sin(points["yaw"]), 0.0])
        return render.Camera.look_at(
            points["wrist"] - 0.05 * ahead + np.array([0.0, 0.0, 0.02]),
            points["tip"] + 0.05 * ahead,
            self.params.wrist_focal * self.params.image_width / 640.0,
            self.params.image_height,
            self.params.image_width,
            up=ahead,
        )

    def _background(self, camera: render.Camera) -> np.ndarray:
        image = np.empty((camera.height, camera.width, 3), dtype=np.uint8)
        image[:] = render.COLORS["floor"]
        top, seams = render.table_polygons()
        render.fill_polygons(image, camera, top, render.COLORS["table"])
        render.fill_polygons(image, camera, seams, render.COLORS["table_line"])
        return image

    def _draw(self, image: np.ndarray, camera: render.Camera) -> np.ndarray:
        for color, quads in render.towel_cells(*self.towel.mesh()):
            render.fill_polygons(image, camera, quads, render.COLORS[color])
        # Painter's order: the arm farther from this camera first.
        depth = {arm: camera.to_camera(self.tip(arm))[2] for arm in ARMS}
        for arm in sorted(ARMS, key=lambda a: -depth[a]):
            self._draw_arm(image, camera, arm)
        return image

    def _draw_arm(self, image: np.ndarray, camera: render.Camera, arm: str) -> None:
        c = render.COLORS
        pts = self.kinematics[arm].points(self.trackers[f"arm_{arm}"].position)
        opening = float(self.trackers[f"gripper_{arm}"].position[0])
        down = np.array([0.0, 0.0, 1.0])
        side = np.array([-np.sin(pts["yaw"]), np.cos(pts["yaw"]), 0.0])
        render.draw_segment(image, camera, pts["shoulder"] + 0.05 * down, pts["shoulder"], 0.05, c["torso"])
        render.draw_segment(image, camera, pts["shoulder"], pts["elbow"], 0.035, c[f"arm_{arm}"])
        render.draw_segment(image, camera, pts["elbow"], pts["wrist"], 0.03, c[f"arm_{arm}"])
        palm = pts["wrist"] - 0.035 * down
        render.draw_segment(image, camera, pts["wrist"], palm, 0.034, c[f"band_{arm}"])
        half = opening / 2 + 0.008
        render.draw_segment(image, camera, palm - half * side, palm + half * side, 0.01, c["finger"])
        for sign in (-1.0, 1.0):
            render.draw_segment(
                image, camera, palm + sign * half * side, pts["tip"] + sign * half * side, 0.008, c["finger"]
            )
