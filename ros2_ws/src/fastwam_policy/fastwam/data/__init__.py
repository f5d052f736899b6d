"""Datasets: LeRobot v2.1 / v3.0 files (lerobot.py), training windows (windows.py), statistics
(stats.py), PyAV video (video.py) and MCAP episode bags (bag.py)."""
