"""How each node process spins: one executor thread, until Ctrl-C or SIGTERM.

One thread because rclpy's MultiThreadedExecutor was measured starving timers and inference on
2-core machines (feedback stalled for seconds, inference 3-5x slower); the policy node runs its
model on its own worker thread, so callbacks stay short without more executor threads.
"""

from __future__ import annotations

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
