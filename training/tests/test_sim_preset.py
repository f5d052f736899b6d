"""The `sim` preset (the simulation experiment's model): its size, and latents at unit scale."""

from __future__ import annotations

from pathlib import Path

import torch

from fastwam.camera import composite_to_tensor
from fastwam.model import FastWAM, build_random_components
from fastwam.model_config import preset
from fastwam.robot_config import load_robot_config
from fastwam_sim.env import SimParams, TowelFoldEnv
from fastwam_sim.teleop import ScriptedFolder

SIM_CONFIG = Path(__file__).resolve().parents[2] / "ros2_ws/src/fastwam_policy/config/r1_lite_sim.yaml"


def test_sim_preset_is_a_few_million_parameters_with_the_real_chunk():
    cfg = preset("sim", state_dim=14)
    with torch.device("meta"):
        model = FastWAM(cfg)
    video = sum(p.numel() for p in model.video.parameters())
    expert = sum(p.numel() for p in model.expert.parameters())
    assert 1.5e6 < video < 2.5e6 and 0.3e6 < expert < 1.0e6, (video, expert)
    assert (cfg.num_video_frames, cfg.action_horizon, cfg.num_inference_steps) == (9, 32, 10)


def test_random_vae_latents_of_the_sim_scene_are_normalized_to_unit_scale():
    config = load_robot_config(SIM_CONFIG)
    env = TowelFoldEnv(config.robot, config.cameras.keys, SimParams(image_height=240, image_width=320))
    env.reset(7)
    folder = ScriptedFolder(env)
    frames = []
    for t in (0.0, 2.5, 5.0, 7.5):  # arms and towel in different places
        env.command_action(folder.action(t))
        env.step(2.5 if t else 0.1)
        frames.append(config.cameras.compose(env.render()))
    video = composite_to_tensor(frames[0])[None, :, None]  # [1, 3, 1, H, W]
    video = torch.cat([video] + [composite_to_tensor(f)[None, :, None] for f in frames[1:]])
    latents = build_random_components(preset("sim"), seed=0).encode_video(video)  # [4, C, 1, h, w]
    per_channel = latents.transpose(0, 1).reshape(latents.shape[1], -1)
    assert per_channel.mean(1).abs().max() < 1.5, per_channel.mean(1)  # one scene, 4 frames: not 0
    # Unnormalized, this VAE's channels vary by ~0.05-0.1 here.
    assert ((per_channel.std(1) > 0.25) & (per_channel.std(1) < 2.0)).all(), per_channel.std(1)
