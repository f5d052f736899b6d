"""Wan2.2-Diffusers directory loading (tiny model written with save_pretrained) and the encoders."""

from __future__ import annotations

import shutil

import pytest
import torch
from torch.overrides import TorchFunctionMode
from transformers import AutoTokenizer

from fastwam.model import FastWAM, WanComponents, build_random_components, latent_frame_mask
from fastwam.model.wan import CPUEncodeKernels, build_video_transformer
from fastwam.model_config import PROMPT_TEMPLATE, preset


@pytest.fixture(scope="module")
def wan_dir(tmp_path_factory):
    """A tiny model in the Wan2.2-TI2V-5B-Diffusers layout."""
    cfg = preset("tiny")
    path = tmp_path_factory.mktemp("wan") / "Wan2.2-tiny-Diffusers"
    torch.manual_seed(0)
    build_video_transformer(cfg).save_pretrained(path / "transformer")
    build_random_components(cfg).save_pretrained(path)
    return path


def test_layout_loads_back_through_from_pretrained_including_the_tokenizer(wan_dir):
    cfg = preset("tiny")
    for folder in ("transformer", "vae", "text_encoder", "tokenizer"):
        assert (wan_dir / folder).is_dir()
    tok = AutoTokenizer.from_pretrained(wan_dir / "tokenizer", local_files_only=True)
    ids = tok("fold the towel").input_ids
    assert ids[-1] == tok.eos_token_id and tok.pad_token_id == 0
    comp = WanComponents.from_pretrained(wan_dir, cfg.text_max_length)
    fresh = build_random_components(cfg)
    for a, b in zip(comp.text_encoder.state_dict().values(), fresh.text_encoder.state_dict().values()):
        assert torch.equal(a, b)
    model = FastWAM.from_wan_pretrained(cfg, wan_dir)
    torch.manual_seed(0)
    ref = build_video_transformer(cfg)
    for (name, a), b in zip(model.video.state_dict().items(), ref.state_dict().values()):
        assert torch.equal(a, b), name


def test_missing_directories_and_files_are_named(wan_dir, tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        WanComponents.from_pretrained(tmp_path / "nowhere", 16)
    broken = tmp_path / "broken"
    shutil.copytree(wan_dir, broken)
    shutil.rmtree(broken / "tokenizer")
    with pytest.raises(FileNotFoundError, match="tokenizer"):
        WanComponents.from_pretrained(broken, 16)
    (broken / "vae" / "config.json").unlink()
    with pytest.raises(FileNotFoundError, match="vae"):
        WanComponents.from_pretrained(broken, 16)
    with pytest.raises(FileNotFoundError, match="transformer"):
        FastWAM.from_wan_pretrained(preset("tiny"), tmp_path / "empty")


def test_encode_video_is_normalised_with_the_wan_latent_statistics(wan_dir):
    cfg = preset("tiny")
    comp = WanComponents.from_pretrained(wan_dir, cfg.text_max_length)
    video = torch.rand(2, 3, 5, 64, 32) * 2 - 1
    lat = comp.encode_video(video)
    assert lat.shape == (2, cfg.video.in_channels, 2, 4, 2)
    raw = comp.vae.encode(video).latent_dist.mode()
    mean = torch.tensor(cfg.vae["latents_mean"]).view(1, -1, 1, 1, 1)
    std = torch.tensor(cfg.vae["latents_std"]).view(1, -1, 1, 1, 1)
    assert torch.allclose(lat, (raw - mean) / std, atol=1e-6)
    with pytest.raises(ValueError, match="B, 3, T, H, W"):
        comp.encode_video(torch.zeros(3, 5, 64, 32))


@torch.no_grad()
def test_one_frame_encode_uses_the_fast_cpu_kernels_with_the_same_result(wan_dir):
    """Batch 1, one frame: PyTorch would pick slow_conv3d (routed to oneDNN instead) and a strided
    vector_norm for the VAE's channel RMS norm (replaced by a sum)."""
    cfg = preset("tiny")
    comp = WanComponents.from_pretrained(wan_dir, cfg.text_max_length)
    video = torch.rand(1, 3, 1, 64, 32) * 2 - 1
    stock = comp.vae.encode(video).latent_dist.mode()
    with torch.profiler.profile() as prof, CPUEncodeKernels():
        ours = comp.vae.encode(video).latent_dist.mode()
    names = {e.name for e in prof.events()}
    assert "aten::mkldnn_convolution" in names and "aten::slow_conv3d_forward" not in names
    assert "aten::linalg_vector_norm" not in names
    assert (ours - stock).abs().max().item() <= 1e-5


@torch.no_grad()
def test_one_frame_encode_convolves_the_real_frame_only_with_the_stock_result(wan_dir):
    """A one-frame clip: each causal conv would see [0, 0, frame]; ours sees the frame alone."""
    cfg = preset("tiny")
    comp = WanComponents.from_pretrained(wan_dir, cfg.text_max_length)
    video = torch.rand(2, 3, 1, 64, 32) * 2 - 1
    stock = comp.vae.encode(video).latent_dist.mode()
    mean = torch.tensor(cfg.vae["latents_mean"]).view(1, -1, 1, 1, 1)
    std = torch.tensor(cfg.vae["latents_std"]).view(1, -1, 1, 1, 1)

    class Conv3dShapes(TorchFunctionMode):
        def __init__(self):
            super().__init__()
            self.seen = []  # (input frames, kernel frames)

        def __torch_function__(self, func, types, args=(), kwargs=None):
            if func in (torch.nn.functional.conv3d, torch.mkldnn_convolution):  # (CPUEncodeKernels)
                self.seen.append((args[0].shape[2], args[1].shape[2]))
            return func(*args, **(kwargs or {}))

    with Conv3dShapes() as stock_convs:
        comp.vae.encode(video)
    assert any(t == k == 3 for t, k in stock_convs.seen)  # the zero-padded causal convs
    with Conv3dShapes() as convs:  # entered first: sees the calls after FirstFrameCausalConv
        ours = comp.encode_video(video)
    assert convs.seen and all(t == k == 1 for t, k in convs.seen)
    assert (ours - (stock - mean) / std).abs().max().item() <= 1e-5


def test_encode_text_applies_the_template_pads_and_masks(wan_dir):
    cfg = preset("tiny", text_max_length=64)
    comp = WanComponents.from_pretrained(wan_dir, cfg.text_max_length)
    embeds, mask = comp.encode_text(["fold the towel", "open the drawer now"])
    assert embeds.shape == (2, 64, cfg.video.text_dim) and mask.dtype == torch.bool
    n = len(comp.tokenizer(PROMPT_TEMPLATE.format(task="fold the towel")).input_ids)
    assert int(mask[0].sum()) == n
    assert bool((embeds[0, n:] == 0).all()) and bool((embeds[0, :n] != 0).any())
    plain, _ = comp.encode_text(["fold the towel"], template=False)
    assert not torch.allclose(plain[0], embeds[0])
    with pytest.raises(TypeError):
        comp.encode_text("a bare string")


def test_prompts_pass_through_wan_prompt_clean(wan_dir):
    import ftfy  # a pinned dependency: without it diffusers' prompt_clean skips the mojibake repair

    comp = WanComponents.from_pretrained(wan_dir, 64)
    clean, _ = comp.encode_text(["fold the towel"])
    messy, _ = comp.encode_text(["  fold \n the&amp;nbsp;towel ".replace("&amp;nbsp;", " ")])
    assert torch.equal(messy, clean)  # whitespace collapsed and stripped
    escaped, _ = comp.encode_text(["fold the towel &amp; the cloth"])
    plain, _ = comp.encode_text(["fold the towel & the cloth"])
    assert torch.equal(escaped, plain)  # HTML entities unescaped
    mojibake, _ = comp.encode_text(["fold the towel \u00e2\u20ac\u201d now"])  # "—" read as cp1252
    assert ftfy.fix_text("\u00e2\u20ac\u201d") == "\u2014"
    assert torch.equal(mojibake, comp.encode_text(["fold the towel \u2014 now"])[0])
    raw, _ = comp.encode_text(["  fold \n the towel "], clean=False)
    assert not torch.equal(raw, clean)


def test_latent_frame_mask_maps_groups_of_four_pixel_frames():
    fm = torch.tensor([[1, 1, 1, 1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 1, 1, 1, 0, 0]], dtype=torch.bool)
    assert latent_frame_mask(fm).tolist() == [[True, True, True], [True, True, False]]
    with pytest.raises(ValueError, match="1 \\+ 4 k"):
        latent_frame_mask(torch.ones(1, 8, dtype=torch.bool))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")
def test_graphed_encode_on_cuda_equals_the_eager_encode(wan_dir):
    comp = WanComponents.from_pretrained(wan_dir, preset("tiny").text_max_length, device="cuda")
    g = torch.Generator().manual_seed(0)
    videos = [torch.rand(1, 3, 1, 64, 48, generator=g) * 2 - 1 for _ in range(3)]
    eager = [comp.encode_video(v) for v in videos]
    comp.capture_encode = True
    graphed = [comp.encode_video(v) for v in videos]  # captured on the first, replayed after
    assert len(comp._encode_graphs) == 1
    for e, r in zip(eager, graphed):
        assert (e - r).abs().max().item() <= 1e-5
    assert (graphed[0] - graphed[1]).abs().max() > 1e-3  # each replay reads its own input
