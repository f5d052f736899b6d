"""How each node process spins: one executor thread, until Ctrl-C or SIGTERM.

One thread because rclpy's MultiThreadedExecutor was measured starving timers and inference on
2-core machines (feedback stalled for seconds, inference 3-5x slower); the policy node runs its
model on its own worker thread, so callbacks stay short without more executor threads.
"""

from __future__ import annotations

from collections.abc import Callable

import rclpy
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.node import Node


def spin_until_shutdown(node: Node) -> None:
    """Spin `node` until the process is interrupted or its context shuts down."""
    executor = SingleThreadedExecutor(context=node.context)
    executor.add_node(node)
    try:
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except Exception:
        if node.context.ok():
            raise
        # A callback raced the shutdown signal (e.g. a timer publishing on the closed context).
    finally:
        executor.remove_node(node)


def run_node(create: Callable[[], Node], args=None) -> None:
    """A node process's main: init, create the node, spin it until shutdown, destroy it; a Ctrl-C
    while the node is still being created ends the process quietly too."""
    rclpy.init(args=args)
    node = None
    try:
        node = create()
        spin_until_shutdown(node)
    except KeyboardInterrupt:
        pass  # Ctrl-C during start-up
    finally:
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()
