"""Fast-WAM training: experiment configs, caches and the accelerate trainer (ROS-free).

python -m fastwam_training.train --config training/configs/towel_fold.yaml key=value ...
"""
