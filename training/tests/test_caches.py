"""Instruction-embedding and VAE-latent caches: same values as the encoders, never silently stale."""

from __future__ import annotations

import pytest
import torch

from fastwam.camera import CameraLayout, composite_to_tensor
from fastwam.data.lerobot import LeRobotDataset
from fastwam.data.windows import DatasetKeys, WindowDataset, WindowSpec
from fastwam.model import build_random_components
from fastwam.model_config import preset
from fastwam_training.caches import LatentCache, TextEmbeddingCache, fingerprint, unique_instructions
from fastwam_training.synthetic import CAMERAS, make_v21_dataset

LAYOUT = CameraLayout.row(["front", "wrist"], 32, 32)
KEYS = DatasetKeys({"front": CAMERAS[0], "wrist": CAMERAS[1]})


@pytest.fixture(scope="module")
def components():
    return build_random_components(preset("tiny"), seed=0)


def test_text_cache_matches_encoder_and_refuses_stale_files(tmp_path, components):
    path = tmp_path / "text.safetensors"
    texts = ["fold the towel", "pick up the cube"]
    encoder = fingerprint(components.text_encoder, components.text_encoder.config.to_dict())
    cache = TextEmbeddingCache.build_or_load(path, texts, components, encoder, progress=False)
    embeds, mask = cache.lookup(["pick up the cube", "fold the towel", "pick up the cube"])
    want_e, want_m = components.encode_text(["pick up the cube", "fold the towel", "pick up the cube"])
    torch.testing.assert_close(embeds, want_e.float())
    assert torch.equal(mask, want_m)
    reloaded = TextEmbeddingCache.build_or_load(path, texts[:1], components, encoder, progress=False)
    assert torch.equal(reloaded.embeds, cache.embeds)
    with pytest.raises(ValueError, match="made by encoder '[0-9a-f]+', this run uses 'other'"):
        TextEmbeddingCache.build_or_load(path, texts, components, "other", progress=False)
    with pytest.raises(ValueError, match="lacks 1 instructions"):
        TextEmbeddingCache.build_or_load(
            path, [*texts, "open the drawer"], components, encoder, progress=False
        )
    with pytest.raises(KeyError, match="open the drawer"):
        cache.lookup(["open the drawer"])


def test_latent_cache_matches_vae_and_refuses_other_settings(tmp_path, components):
    ds = LeRobotDataset(make_v21_dataset(tmp_path / "ds", (9, 6)))
    windows = WindowDataset(ds, LAYOUT, KEYS, WindowSpec(4, 5, 1), start_stride=2)
    assert [tuple(r) for r in windows.index.tolist()] == [
        (0, 0),
        (0, 2),
        (0, 4),
        (0, 6),
        (0, 8),
        (1, 0),
        (1, 2),
        (1, 4),
    ]
    assert unique_instructions(windows) == ["fold the towel", "pick up the cube"]
    cache = LatentCache(tmp_path / "latents", "vae-a", windows)
    cache.build(windows, components, batch_size=3, progress=False)
    sample = windows[6]  # episode 1, frame 2: frames 2..6 -> 2, 3, 4, 5, 5 (padded)
    video = composite_to_tensor(sample["video"].numpy()).permute(1, 0, 2, 3)[None]
    torch.testing.assert_close(
        cache.get(1, 2), components.encode_video(video)[0].float(), rtol=1e-4, atol=1e-5
    )
    with pytest.raises(KeyError, match="window start 3"):
        cache.get(1, 3)
    other = WindowDataset(ds, LAYOUT, KEYS, WindowSpec(4, 5, 2), start_stride=2)
    with pytest.raises(ValueError, match="other settings \\(video_stride: 1 there, 2 now\\)"):
        LatentCache(tmp_path / "latents", "vae-a", other).build(other, components, progress=False)
    with pytest.raises(ValueError, match="encoder: 'vae-a' there, 'vae-b' now"):
        LatentCache(tmp_path / "latents", "vae-b", windows).build(windows, components, progress=False)


def test_encoder_fingerprint_ignores_private_config_keys(components):
    # diffusers' `_use_default_values` is a list made from a set: its order follows the process's
    # string hash seed, so two trainers sharing a cache computed different ids before this.
    vae = components.vae
    config = dict(vae.config)
    reordered = {**config, "_use_default_values": list(reversed(config["_use_default_values"]))}
    assert len(config["_use_default_values"]) > 1
    assert fingerprint(vae, config) == fingerprint(vae, reordered)
    assert fingerprint(vae, config) != fingerprint(vae, {**config, "base_dim": config["base_dim"] + 1})


def test_cache_preparer_follows_a_growing_dataset_and_the_trainer_reuses_them(tmp_path):
    """What the simulation experiment's RecordingFollower does: latents cached episode by episode
    while the dataset grows (without statistics, which need the whole dataset), then the trainer
    finds every episode cached and encodes nothing again."""
    from fastwam.data.lerobot import LeRobotV21Writer
    from fastwam_training.config import from_dict
    from fastwam_training.synthetic import episode_arrays, experiment_dict, robot_dict
    from fastwam_training.trainer import CachePreparer, Trainer

    root = tmp_path / "ds"
    names = [j for g in robot_dict()["groups"] for j in g["joints"]]
    writer = LeRobotV21Writer(root, 15, "synthetic_arm", CAMERAS, names, names, video_codec="h264_lossless")
    config = from_dict(experiment_dict(root, tmp_path / "run", cache={"text": True, "latents": True}))
    latents = tmp_path / "run" / "cache" / "latents"
    prepare_caches = CachePreparer(config)  # the encoders once, as the follower builds them
    made = {}
    for episode in range(2):
        a = episode_arrays(episode, 12, len(names))
        writer.add_episode(a["frames"], a["state"], a["action"], a["timestamps"], a["task"])
        assert prepare_caches(progress=False, text=False) == tmp_path / "run" / "cache"
        files = sorted(latents.glob("episode_*.safetensors"))
        assert [f.name for f in files] == [f"episode_{i:06d}.safetensors" for i in range(episode + 1)]
        made.update({f.name: f.stat().st_mtime_ns for f in files if f.name not in made})
        assert {f.name: f.stat().st_mtime_ns for f in files} == made  # earlier episodes not redone
    assert not (tmp_path / "run" / "cache" / "text_embeds.safetensors").exists()
    trainer = Trainer(config)  # statistics, the text cache; the latents found done
    assert {f.name: f.stat().st_mtime_ns for f in latents.glob("episode_*.safetensors")} == made
    assert (tmp_path / "run" / "cache" / "text_embeds.safetensors").is_file()
    assert len(trainer.train_data) > 0
