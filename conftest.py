"""Repository-wide pytest set-up.

ROS tests run real DDS traffic. Each pytest session gets its own ROS domain so that concurrent
sessions on one machine (developers, CI) never see each other's nodes; discovery stays on
localhost (scripts/env.sh).
"""

from __future__ import annotations

import os

os.environ.setdefault("ROS_DOMAIN_ID", str(1 + os.getpid() % 200))
os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
