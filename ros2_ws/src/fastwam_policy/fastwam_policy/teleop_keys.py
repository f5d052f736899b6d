"""Keyboard helper for the operator: start, save (success / failure), discard, change instruction.

    s  start an episode with the current instruction
    y  stop and save, task succeeded          n  stop and save, task failed
    d  discard the episode (press d twice: a demonstration is never thrown away by one stray key)
    i  type a new instruction (for the next episode)
    h  help                                   q  quit

Keys are read in terminal cbreak mode; the key logic (`KeyCommands`) and the service calls
(`fastwam_policy.recorder_client.RecorderClient`, the one recorder client, which the scripted
teleoperator uses too) are separate from the terminal so both are tested without one.
"""

from __future__ import annotations

import select
import sys
import termios
import tty
from dataclasses import dataclass

import rclpy
from rcl_interfaces.msg import ParameterDescriptor

from fastwam_msgs.msg import RecorderStatus
from fastwam_policy.recorder_client import RecorderClient

HELP = __doc__.split("\n\n")[1]


@dataclass(frozen=True)
class Command:
    kind: str  # "start" | "stop" | "edit_instruction" | "help" | "quit" | "confirm_discard" | "cancelled"
    instruction: str = ""
    save: bool = False
    task_success: bool = False


class KeyCommands:
    """Turns key presses into commands. Discarding needs the same key twice in a row."""

    def __init__(self, instruction: str = "") -> None:
        self.instruction = instruction
        self._discard_armed = False

    def press(self, key: str) -> Command | None:
        key = key.lower()
        armed, self._discard_armed = self._discard_armed, False
        if key == "d":
            if armed:
                return Command("stop", save=False)
            self._discard_armed = True
            return Command("confirm_discard")
        if armed:
            return Command("cancelled")
        if key == "s":
            return Command("start", instruction=self.instruction)
        if key == "y":
            return Command("stop", save=True, task_success=True)
        if key == "n":
            return Command("stop", save=True, task_success=False)
        if key == "i":
            return Command("edit_instruction")
        if key in ("h", "?"):
            return Command("help")
        if key in ("q", "\x03", "\x04"):  # q, Ctrl-C, Ctrl-D
            return Command("quit")
        return None

    def set_instruction(self, text: str) -> bool:
        text = text.strip()
        if text:
            self.instruction = text
        return bool(text)


def run_terminal(client: RecorderClient, keys: KeyCommands) -> None:
    """The interactive loop: cbreak key reading, spinning the node between keys."""
    fd = sys.stdin.fileno()
    saved = termios.tcgetattr(fd)
    print(HELP)
    print(f"instruction: {keys.instruction or '(none: press i)'}")
    last_line = ""
    try:
        tty.setcbreak(fd)
        while rclpy.ok():
            rclpy.spin_once(client.node, timeout_sec=0.0)
            line = _status_line(client.status)
            if line != last_line:
                print(line)
                last_line = line
            ready, _, _ = select.select([sys.stdin], [], [], 0.1)
            if not ready:
                continue
            command = keys.press(sys.stdin.read(1))
            if command is None:
                continue
            if command.kind == "quit":
                return
            if command.kind == "help":
                print(HELP)
            elif command.kind == "confirm_discard":
                print("press d again to DISCARD the episode, any other key to keep it")
            elif command.kind == "cancelled":
                print("discard cancelled")
            elif command.kind == "edit_instruction":
                termios.tcsetattr(fd, termios.TCSADRAIN, saved)
                try:
                    text = input("new instruction: ")
                finally:
                    tty.setcbreak(fd)
                print(f"instruction: {keys.instruction}" if keys.set_instruction(text) else "unchanged")
            else:
                ok, message = client.execute(command)
                print(("ok: " if ok else "FAILED: ") + message)
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


def _status_line(status: RecorderStatus | None) -> str:
    if status is None:
        return "recorder: no status yet"
    if status.error:
        return f"recorder ERROR: {status.error}"
    if not status.recording:
        return f"recorder idle ({status.episodes_saved} saved this session, last {status.episode or '-'})"
    dropped = sum(status.dropped)
    return f"RECORDING {status.episode}: {status.instruction!r}" + (
        f" ({dropped} dropped)" if dropped else ""
    )


def main(args=None) -> None:
    rclpy.init(args=args)
    node = rclpy.create_node("teleop_keys")
    instruction = node.declare_parameter(
        "instruction",
        "",
        ParameterDescriptor(
            description="instruction of the episodes started with s (i changes it)", read_only=True
        ),
    ).value
    recorder = node.declare_parameter(
        "recorder",
        "/recorder",
        ParameterDescriptor(
            description="name of the recorder node whose services are called", read_only=True
        ),
    ).value
    client = RecorderClient(node, recorder)
    try:
        if not sys.stdin.isatty():
            print("teleop_keys needs an interactive terminal (run it with `ros2 run`, not in a launch file)")
            return
        run_terminal(client, KeyCommands(instruction))
    except KeyboardInterrupt:
        pass
    finally:
        node.destroy_node()
        if rclpy.ok():
            rclpy.shutdown()


if __name__ == "__main__":
    main()
