"""Recorder throughput: R1 Lite topics at full rate into one episode bag, then conversion speed.

Three 480x640 JPEG cameras at 30 Hz, four feedback and four command JointState topics at 200 Hz
(R1 Lite topic names from the robot config), published by a separate process for --seconds; the
recorder node runs in its own process. Prints per-topic published / recorded / dropped counts, the
recorder process's CPU use during the episode (cores = CPU seconds / wall seconds, from
/proc/<pid>/stat), bag size, and the LeRobot conversion time as a multiple of real time (cameras at
native size, then resized to the camera layout).

    source scripts/env.sh && python benchmarks/recorder.py --seconds 60
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "ros2_ws/src/fastwam_policy/config/r1_lite.yaml"
PUBLISHERS = ROOT / "ros2_ws/src/fastwam_policy/test/recorder_publishers.py"


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--camera-hz", type=float, default=30.0)
    parser.add_argument("--joint-hz", type=float, default=200.0)
    parser.add_argument("--codec", default="h264")
    parser.add_argument("--keep", help="keep the episode and dataset in this directory")
    args = parser.parse_args()
    os.environ.setdefault("ROS_DOMAIN_ID", str(10 + os.getpid() % 80))

    import rclpy
    from rclpy.executors import SingleThreadedExecutor

    from fastwam.data.bag import convert_bags
    from fastwam.data.episode_bag import read_episode_json
    from fastwam.robot_config import load_robot_config
    from fastwam_policy.teleop_keys import Command, RecorderClient

    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="recorder_bench_"))
    work.mkdir(parents=True, exist_ok=True)
    recorder = subprocess.Popen(
        [sys.executable, "-m", "fastwam_policy.recorder_node", "--ros-args"]
        + ["-p", f"robot_config:={CONFIG}", "-p", f"output_dir:={work / 'episodes'}"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    publishers = subprocess.Popen(
        [sys.executable, str(PUBLISHERS), "--config", str(CONFIG), "--seconds", str(args.seconds)]
        + ["--camera-hz", str(args.camera_hz), "--feedback-hz", str(args.joint_hz)]
        + ["--command-hz", str(args.joint_hz), "--height", "480", "--width", "640", "--jpeg-pool", "30"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    rclpy.init()
    node = rclpy.create_node("recorder_benchmark")
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    client = RecorderClient(node, executor=executor)
    try:
        if publishers.stdout.readline().strip() != "READY":
            raise SystemExit(f"publishers failed: {publishers.stdout.read()}")
        deadline = time.monotonic() + 60
        while not client.start_client.service_is_ready() and time.monotonic() < deadline:
            executor.spin_once(timeout_sec=0.1)
        ok, message = client.execute(Command("start", instruction="benchmark"))
        if not ok:
            raise SystemExit(message)
        cpu0, wall0 = cpu_seconds(recorder.pid), time.monotonic()
        publishers.stdin.write("go\n")
        publishers.stdin.flush()
        line = publishers.stdout.readline()
        published = json.loads(line[5:])
        time.sleep(1.0)  # the queue drains and the last chunk is flushed
        ok, message = client.execute(Command("stop", save=True, task_success=True))
        cpu1, wall1 = cpu_seconds(recorder.pid), time.monotonic()
        if not ok:
            raise SystemExit(message)
    finally:
        node.destroy_node()
        rclpy.shutdown()
        for process in (publishers, recorder):
            if process.poll() is None:
                process.terminate()
            process.wait(timeout=20)
    episode = next((work / "episodes").iterdir())
    info = read_episode_json(episode)
    size = sum(f.stat().st_size for f in episode.iterdir())
    print(f"episode {episode.name}: {args.seconds:.0f} s, bag {size / 2**20:.1f} MiB")
    print(f"{'topic':58s} {'published':>9s} {'recorded':>9s} {'dropped':>8s}")
    for topic, count in published.items():
        rec = info["topics"][topic]
        print(f"{topic:58s} {count:9d} {rec['count']:9d} {rec['dropped']:8d}")
    lost = sum(published.values()) - sum(t["count"] for t in info["topics"].values())
    print(f"messages lost: {lost} of {sum(published.values())}")
    print(
        f"recorder CPU: {cpu1 - cpu0:.1f} s over {wall1 - wall0:.1f} s wall = {(cpu1 - cpu0) / (wall1 - wall0):.2f} cores"
    )

    config = load_robot_config(CONFIG)
    for resize in (False, True):
        dataset = work / ("dataset_layout" if resize else "dataset")
        started = time.monotonic()
        convert_bags(
            [episode], dataset, config, codec=args.codec, resize_to_layout=resize, log=lambda *_: None
        )
        took = time.monotonic() - started
        what = "cameras at layout size" if resize else "native 480x640"
        print(
            f"conversion ({args.codec}, {config.control.rate_hz:g} fps, {what}): {took:.1f} s for "
            f"{args.seconds:.0f} s = {args.seconds / took:.2f}x real time"
        )
        source = json.loads((dataset / "meta" / "fastwam_sources.jsonl").read_text().splitlines()[0])
        print(
            f"  phases (s): {source['seconds']} (write = LeRobotV21Writer.add_episode: videos, parquet, stats)"
        )
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
