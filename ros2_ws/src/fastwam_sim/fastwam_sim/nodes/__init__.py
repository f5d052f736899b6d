"""The ROS 2 nodes around the simulator (these import rclpy; the rest of fastwam_sim does not)."""
