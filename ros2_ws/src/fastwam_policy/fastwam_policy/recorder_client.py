"""The one client of the recorder node's services, for any node that starts and stops recordings.

The keyboard helper (teleop_keys) and the scripted teleoperator (fastwam_sim.nodes.scripted_teleop)
both drive the recorder as an operator would: start an episode with an instruction, stop it saved
with a success label or discarded. Calls are asynchronous: a service that is not up yet is polled
on a timer of the calling node for at most `wait_s` (the executor, which may be serving the
recorder itself in a single-process composition, is never blocked), then the call is sent and
`done` gets the response, or None when the service never came up (logged, naming the service).
`execute` is the blocking form for a terminal loop that spins its own node between keys.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import rclpy
from rclpy.executors import Executor
from rclpy.node import Node

from fastwam_msgs.msg import RecorderStatus
from fastwam_msgs.srv import StartEpisode, StopEpisode

POLL_S = 0.1  # how often a service that is not up yet is looked for


class RecorderClient:
    """The recorder's ~/start_episode, ~/stop_episode services and its ~/status, from `node`."""

    def __init__(
        self, node: Node, recorder: str = "/recorder", wait_s: float = 5.0, executor: Executor | None = None
    ) -> None:
        if not wait_s > 0:
            raise ValueError(f"recorder wait must be positive, got {wait_s}")
        self.node = node
        self.recorder = recorder
        self.wait_s = wait_s
        self.executor = executor  # for execute(); None: rclpy spins `node` alone
        self.start_client = node.create_client(StartEpisode, f"{recorder}/start_episode")
        self.stop_client = node.create_client(StopEpisode, f"{recorder}/stop_episode")
        self.status: RecorderStatus | None = None
        node.create_subscription(RecorderStatus, f"{recorder}/status", self._on_status, 10)

    def _on_status(self, msg: RecorderStatus) -> None:
        self.status = msg

    # -- asynchronous -----------------------------------------------------------------------------
    def start(self, instruction: str, done: Callable[[Any], None]) -> None:
        """Start an episode; `done(response or None)` on the node's executor."""
        self._call(self.start_client, StartEpisode.Request(instruction=instruction), done)

    def stop(self, save: bool, task_success: bool, done: Callable[[Any], None]) -> None:
        """Stop the running episode, saved with the success label or discarded."""
        self._call(self.stop_client, StopEpisode.Request(save=save, task_success=task_success), done)

    def _call(self, client, request, done: Callable[[Any], None]) -> None:
        def send() -> None:
            future = client.call_async(request)
            future.add_done_callback(lambda f: done(f.result()))

        if client.service_is_ready():
            send()
            return
        self.node.get_logger().info(
            f"waiting for the recorder service {client.srv_name} (up to {self.wait_s:g} s)"
        )
        deadline = time.monotonic() + self.wait_s
        timer = None

        def poll() -> None:
            if client.service_is_ready():
                self.node.destroy_timer(timer)
                send()
            elif time.monotonic() >= deadline:
                self.node.destroy_timer(timer)
                self.node.get_logger().error(
                    f"recorder service {client.srv_name} did not come up within {self.wait_s:g} s; "
                    "this episode is not recorded"
                )
                done(None)

        timer = self.node.create_timer(POLL_S, poll)

    # -- blocking -----------------------------------------------------------------------------------
    def execute(self, command, timeout_s: float = 30.0) -> tuple[bool, str]:
        """Run a start or stop command (an object with kind 'start' / 'stop', instruction, save,
        task_success: teleop_keys.Command) and wait for the answer, spinning the node meanwhile."""
        answers: list = []
        if command.kind == "start":
            if not command.instruction:
                return False, "no instruction set: press i first"
            client = self.start_client
            self.start(command.instruction, answers.append)
        elif command.kind == "stop":
            client = self.stop_client
            self.stop(command.save, command.task_success, answers.append)
        else:
            raise ValueError(f"command {command.kind!r} is not a recorder call")
        deadline = time.monotonic() + self.wait_s + timeout_s
        while not answers and time.monotonic() < deadline:
            if self.executor is not None:
                self.executor.spin_once(timeout_sec=0.05)
            else:
                rclpy.spin_once(self.node, timeout_sec=0.05)
        if not answers:
            return False, f"{client.srv_name} did not answer within {timeout_s} s"
        if answers[0] is None:
            return False, f"service {client.srv_name} is not available (is the recorder running?)"
        return bool(answers[0].success), answers[0].message
