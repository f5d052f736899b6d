"""A test's own ROS session against nodes in other processes: a node on a context and executor of
its own, spinning until a condition holds, and stopping the child processes under test.

Used by test_recorder_node.py here and by the system tests in tests/ (their conftest.py puts this
folder on sys.path, as this folder's conftest.py does for its tests).
"""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import rclpy
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node


@contextmanager
def own_node(name: str) -> Iterator[tuple[Node, SingleThreadedExecutor]]:
    """(node, executor) on a context of their own, shut down on exit (other tests' contexts and
    their nodes are left alone)."""
    context = rclpy.Context()
    rclpy.init(context=context)
    node = rclpy.create_node(name, context=context)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    try:
        yield node, executor
    finally:
        executor.shutdown()
        node.destroy_node()
        rclpy.shutdown(context=context)


def spin_until(executor, condition: Callable[[], object], timeout: float) -> bool:
    """Spin until condition() is true or `timeout` seconds have passed; whether it became true."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        executor.spin_once(timeout_sec=0.05)
    return bool(condition())


def stop_process(process: subprocess.Popen, sig: int = signal.SIGINT, timeout: float = 15.0) -> str:
    """Signal a child process that is still running, wait `timeout` s for it to exit (else kill it)
    and return what it wrote to its stdout pipe ("" without one)."""
    if process.poll() is None:
        process.send_signal(sig)
    try:
        out, _ = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        out, _ = process.communicate()
    return out or ""
