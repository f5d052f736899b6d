#!/usr/bin/env bash
# Sources ROS 2 Humble, the venv and the Fast-WAM workspace, then runs the command.
set -e
# shellcheck source=/dev/null
source /opt/ros/humble/setup.bash
# shellcheck source=/dev/null
source /opt/venv/bin/activate
# shellcheck source=/dev/null
source /ws/ros2_ws/install/setup.bash
share="$(ros2 pkg prefix fastwam_bringup)/share/fastwam_bringup"
export FASTRTPS_DEFAULT_PROFILES_FILE="${FASTRTPS_DEFAULT_PROFILES_FILE:-$share/config/fastdds_shm.xml}"
export FASTDDS_DEFAULT_PROFILES_FILE="${FASTDDS_DEFAULT_PROFILES_FILE:-$FASTRTPS_DEFAULT_PROFILES_FILE}"
exec "$@"
