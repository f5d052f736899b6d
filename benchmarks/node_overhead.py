"""Policy node overhead: head-camera frame stamp -> first command of the chunk published, minus the
model's own time.

The node runs in its own process (tiny random checkpoint, R1 Lite topics and joints, motion
enabled); this process publishes three 480x640 camera-like JPEG streams at 15 Hz (stamped when
published) and joint feedback at 100 Hz. For every chunk the node reports, in ActionChunk, the
head frame's stamp S, the model time M (FastWAMPolicy.predict's total, which includes its own
composite + tensor preprocessing) and the time A its first command went out (that command carries
exactly stamp A; the script checks it arrived). Node overhead = A - S - M: frame transport, the
wait for the inference worker, JPEG decoding of the three frames, alignment, blending, limits and
publishing. "end to end" adds the command's transport into this process (receive time - S - M).

    source scripts/env.sh && python benchmarks/node_overhead.py --seconds 40
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[1]
HARNESS = ROOT / "ros2_ws/src/fastwam_policy/test/policy_node_harness.py"
sys.path.insert(0, str(ROOT / "benchmarks"))
from preprocessing import camera_like_frame, jpeg_msg  # noqa: E402


def _load_harness():
    spec = importlib.util.spec_from_file_location("policy_node_harness", HARNESS)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _seconds(stamp) -> float:
    return stamp.sec + stamp.nanosec * 1e-9


def _summary(name: str, values: list[float]) -> str:
    ordered = sorted(values)
    p95 = ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))]
    return f"{name:<34} median {statistics.median(ordered):7.2f} ms   p95 {p95:7.2f} ms   (n={len(ordered)})"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=40.0, help="measurement window after warm-up")
    parser.add_argument(
        "--replan-steps-left",
        type=int,
        default=24,
        help="replan earlier than the R1 Lite default (16) for more chunks per second (32-step chunks)",
    )
    args = parser.parse_args()
    harness = _load_harness()
    from fastwam_msgs.msg import PolicyStatus

    with tempfile.TemporaryDirectory(prefix="fastwam_node_overhead_") as tmp:
        tmp = Path(tmp)
        checkpoint, config_path, config = harness.write_test_setup(tmp)
        data = yaml.safe_load(config_path.read_text())
        data["control"]["replan_steps_left"] = args.replan_steps_left
        config_path.write_text(yaml.safe_dump(data))
        domain = harness.domain_id(9)
        proc = harness.start_node(
            checkpoint, config_path, domain, tmp / "node.log", instruction="fold the towel"
        )
        robot = harness.FakeRobot(config, domain, camera_hz=15.0, joint_hz=100.0)
        robot.jpegs = {
            k: bytes(jpeg_msg(camera_like_frame(i)).data) for i, k in enumerate(config.cameras.keys)
        }
        try:
            robot.wait_state(PolicyStatus.STATE_DRY_RUN, timeout=180)
            response = robot.set_motion(True)
            assert response.success, response.message
            time.sleep(3.0)  # warm-up
            start = robot.now()
            time.sleep(args.seconds)
            chunks = [m for _, m in robot.messages("chunk", start)]
            commands = robot.messages("command/arm_left", start - 1.0)
            status = robot.last_status()
            holds = [
                m.reason for _, m in robot.messages("status", start) if m.state == PolicyStatus.STATE_HOLDING
            ]
        finally:
            robot.close()
            harness.stop_node(proc)
        received_at = {round(_seconds(m.header.stamp), 9): t for t, m in commands}
        overhead, end_to_end, model, unmatched = [], [], [], 0
        for chunk in chunks:
            frame, applied = _seconds(chunk.header.stamp), _seconds(chunk.trajectory.header.stamp)
            receive = received_at.get(round(applied, 9))
            if receive is None:
                unmatched += 1
                continue
            overhead.append((applied - frame) * 1e3 - chunk.total_ms)
            end_to_end.append((receive - frame) * 1e3 - chunk.total_ms)
            model.append(chunk.total_ms)
    print(f"{len(chunks)} chunks in {args.seconds:g} s, {unmatched} without their first command received")
    print(f"node state at the end: {status.state} {status.reason!r}, {status.steps_executed} steps executed")
    if holds:  # the publisher in this process stalling on a loaded machine reads as stale cameras
        print(f"{len(holds)} HOLDING status messages, e.g. {sorted(set(holds))[:2]}")
    if not overhead:
        raise SystemExit("no chunk measured")
    print(_summary("model time (predict total)", model))
    print(_summary("node overhead (stamp->publish-M)", overhead))
    print(_summary("end to end (stamp->received-M)", end_to_end))
    print(
        f"command rate: {len(commands) / (args.seconds + 1.0):.1f} Hz; skipped steps per chunk: "
        f"{np.mean([c.steps_skipped for c in chunks]):.2f}"
    )


if __name__ == "__main__":
    main()
