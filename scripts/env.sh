# Source this file (bash) to enter the project's environment after scripts/bootstrap.sh:
# the venv, the venv as the ROS prefix, the colcon workspace overlay and the DDS settings.
# Variables already set by the caller (ROS_DOMAIN_ID, FASTRTPS_DEFAULT_PROFILES_FILE, ...) win.
_fastwam_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
_fastwam_venv="${FASTWAM_VENV:-$_fastwam_root/.venv}"

# shellcheck source=/dev/null
source "$_fastwam_venv/bin/activate"
case ":${AMENT_PREFIX_PATH:-}:" in
  *":$_fastwam_venv:"*) ;;
  *) export AMENT_PREFIX_PATH="$_fastwam_venv${AMENT_PREFIX_PATH:+:$AMENT_PREFIX_PATH}" ;;
esac
# colcon's setup scripts reference unset variables; relax nounset while sourcing them.
_fastwam_nounset=0; [[ $- == *u* ]] && _fastwam_nounset=1 && set +u
# shellcheck source=/dev/null
source "$_fastwam_root/ros2_ws/install/local_setup.bash"
[[ $_fastwam_nounset == 1 ]] && set -u

export RMW_IMPLEMENTATION="${RMW_IMPLEMENTATION:-rmw_fastrtps_cpp}"
_fastwam_dds="$_fastwam_root/ros2_ws/src/fastwam_bringup/config/fastdds_shm.xml"
export FASTRTPS_DEFAULT_PROFILES_FILE="${FASTRTPS_DEFAULT_PROFILES_FILE:-$_fastwam_dds}"
export FASTDDS_DEFAULT_PROFILES_FILE="${FASTDDS_DEFAULT_PROFILES_FILE:-$FASTRTPS_DEFAULT_PROFILES_FILE}"
# Keep discovery on this machine unless the caller asks otherwise (a robot on the LAN: SUBNET).
export ROS_AUTOMATIC_DISCOVERY_RANGE="${ROS_AUTOMATIC_DISCOVERY_RANGE:-LOCALHOST}"
export PYTHONPATH="$_fastwam_root/training${PYTHONPATH:+:$PYTHONPATH}"
unset _fastwam_root _fastwam_venv _fastwam_dds _fastwam_nounset
