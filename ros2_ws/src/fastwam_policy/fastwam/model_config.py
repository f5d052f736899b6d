"""Fast-WAM model configuration and presets (``tiny``, ``sim``, ``small``, ``wan22-5b``).

One :class:`FastWAMConfig` describes everything needed to build the trainable model (video DiT +
action expert + state token) and, for the small presets, the frozen components (VAE, UMT5 text
encoder, tokenizer) that are built randomly in tests instead of being loaded from Wan2.2.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

VARIANTS = ("fast_wam", "joint", "idm", "no_cotrain")
TIMESTEP_DISTRIBUTIONS = ("logit_normal", "shifted_uniform")
LOSS_WEIGHTINGS = ("none", "timestep_bell")
IDM_NOISE_AUG_LAWS = ("uniform", "training_t")
ACTION_INITS = ("from_video", "random")

PROMPT_TEMPLATE = "A video recorded from a robot's point of view executing the following instruction: {task}"


@dataclass
class VideoDiTConfig:
    """Arguments of diffusers' ``WanTransformer3DModel`` (defaults: Wan2.2-TI2V-5B)."""

    patch_size: tuple[int, int, int] = (1, 2, 2)
    num_attention_heads: int = 24
    attention_head_dim: int = 128
    in_channels: int = 48
    out_channels: int = 48
    text_dim: int = 4096
    freq_dim: int = 256
    ffn_dim: int = 14336
    num_layers: int = 30
    cross_attn_norm: bool = True
    qk_norm: str = "rms_norm_across_heads"
    eps: float = 1e-6
    rope_max_seq_len: int = 1024

    @property
    def inner_dim(self) -> int:
        return self.num_attention_heads * self.attention_head_dim

    def to_diffusers_kwargs(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["patch_size"] = tuple(d["patch_size"])
        return d


@dataclass
class FastWAMConfig:
    """The whole model. ``variant`` selects the attention mask, the losses and the inference path."""

    variant: str = "fast_wam"
    video: VideoDiTConfig = field(default_factory=VideoDiTConfig)
    # Action expert: same depth and attention geometry (heads x head_dim) as the video DiT.
    action_hidden_dim: int = 1024
    action_ffn_dim: int = 4096
    action_init: str = "from_video"  # "from_video" (resized video weights) | "random"
    action_dim: int = 14
    state_dim: int = 0  # 0 = no proprioceptive state token
    action_horizon: int = 32
    # Video chunk: 1 + 4k pixel frames -> 1 + k latent frames (first = current observation).
    num_video_frames: int = 9
    vae_temporal_factor: int = 4
    vae_spatial_factor: int = 16
    text_max_length: int = 128
    # Flow matching. Defaults follow the paper (Sec. 4.1: logit-normal t, no loss weighting); the
    # authors' code samples t from the shifted uniform law (timestep_distribution="shifted_uniform")
    # and weights each sample's loss by a bell over t (loss_weighting="timestep_bell", flow.loss_weight).
    lambda_video: float = 1.0
    timestep_distribution: str = "logit_normal"
    loss_weighting: str = "none"
    logit_normal_mean: float = 0.0
    logit_normal_std: float = 1.0
    timestep_shift: float = 5.0  # s in sigma = s u / (1 + (s - 1) u) (shifted_uniform)
    sample_shift: float = 5.0  # same map applied to the inference sigma grid; 1.0 = uniform grid
    num_inference_steps: int = 10
    cfg_scale: float = 1.0
    # Inference: the chunk is the mean of this many sampler draws, all from one pass of the video
    # branch (the action expert runs them as one batch). 1 = the paper's single draw.
    num_action_samples: int = 1
    # IDM: the ground-truth future latents the actions see are noised with probability p (paper: 0.5,
    # "following [3]"), to t ~ U(0, idm_noise_aug_max_t) ("uniform") or, as the authors' code does
    # (CausalWAMIDM.training_loss), to t drawn from the training timestep law ("training_t").
    idm_noise_aug_prob: float = 0.5
    idm_noise_aug_law: str = "uniform"
    idm_noise_aug_max_t: float = 0.5
    # Prompts pass through Wan's prompt_clean (ftfy, HTML unescape, whitespace) before tokenizing, as
    # the authors' tokenizer (clean="whitespace") and diffusers' Wan pipelines do.
    clean_prompts: bool = True
    # Frozen components built randomly for the small presets (None for wan22-5b: loaded from disk).
    vae: dict[str, Any] | None = None
    text_encoder: dict[str, Any] | None = None
    tokenizer_vocab_size: int | None = None

    def __post_init__(self) -> None:
        if isinstance(self.video, dict):
            self.video = VideoDiTConfig(**self.video)
        self.video.patch_size = tuple(self.video.patch_size)
        self.validate()

    @property
    def num_latent_frames(self) -> int:
        return 1 + (self.num_video_frames - 1) // self.vae_temporal_factor

    @property
    def future_latent_frames(self) -> int:
        return self.num_latent_frames - 1

    def validate(self) -> None:
        if self.variant not in VARIANTS:
            raise ValueError(f"unknown variant {self.variant!r}; expected one of {VARIANTS}")
        if self.timestep_distribution not in TIMESTEP_DISTRIBUTIONS:
            raise ValueError(
                f"unknown timestep_distribution {self.timestep_distribution!r}; expected {TIMESTEP_DISTRIBUTIONS}"
            )
        if self.loss_weighting not in LOSS_WEIGHTINGS:
            raise ValueError(f"unknown loss_weighting {self.loss_weighting!r}; expected {LOSS_WEIGHTINGS}")
        if self.idm_noise_aug_law not in IDM_NOISE_AUG_LAWS:
            raise ValueError(
                f"unknown idm_noise_aug_law {self.idm_noise_aug_law!r}; expected {IDM_NOISE_AUG_LAWS}"
            )
        if self.action_init not in ACTION_INITS:
            raise ValueError(f"unknown action_init {self.action_init!r}; expected {ACTION_INITS}")
        if (self.num_video_frames - 1) % self.vae_temporal_factor != 0:
            raise ValueError(
                f"num_video_frames={self.num_video_frames} must be 1 + {self.vae_temporal_factor} k"
            )
        if self.action_dim <= 0 or self.action_horizon <= 0:
            raise ValueError("action_dim and action_horizon must be positive")
        if self.num_inference_steps <= 0:
            raise ValueError("num_inference_steps must be positive")
        if self.num_action_samples < 1:
            raise ValueError(f"num_action_samples must be at least 1, got {self.num_action_samples}")
        if self.num_latent_frames > self.video.rope_max_seq_len:
            raise ValueError("rope_max_seq_len too small for the video frames")

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["video"]["patch_size"] = list(self.video.patch_size)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> FastWAMConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown model config keys: {unknown}")
        d = dict(d)
        if "video" in d:
            vknown = {f.name for f in dataclasses.fields(VideoDiTConfig)}
            vunknown = sorted(set(d["video"]) - vknown)
            if vunknown:
                raise ValueError(f"unknown video config keys: {vunknown}")
            d["video"] = VideoDiTConfig(**d["video"])
        return cls(**d)

    def replace(self, **overrides: Any) -> FastWAMConfig:
        return FastWAMConfig.from_dict({**self.to_dict(), **overrides})


def wan22_vae(**sizes: Any) -> dict[str, Any]:
    """Arguments of diffusers' ``AutoencoderKLWan`` with Wan2.2-TI2V-5B's VAE structure: residual
    blocks, RGB patchified 2x2 in and out (12 channels), 16x spatial and 4x temporal compression (what
    ``vae_spatial_factor`` and ``vae_temporal_factor`` assume); `sizes` give its widths, depth and
    latent statistics."""
    structure = {
        "temperal_downsample": [False, True, True],
        "is_residual": True,
        "in_channels": 12,
        "out_channels": 12,
        "patch_size": 2,
        "scale_factor_spatial": 16,
        "scale_factor_temporal": 4,
    }
    return {**structure, **sizes}


def _stand_in_vae(z_dim: int, latents_mean: list[float], latents_std: list[float]) -> dict[str, Any]:
    """The small presets' random VAE: Wan2.2's structure at width 8, one residual block a level."""
    return wan22_vae(
        base_dim=8,
        decoder_base_dim=8,
        z_dim=z_dim,
        dim_mult=[1, 2, 2, 2],
        num_res_blocks=1,
        latents_mean=latents_mean,
        latents_std=latents_std,
    )


def _tiny() -> FastWAMConfig:
    return FastWAMConfig(
        video=VideoDiTConfig(
            num_attention_heads=2,
            attention_head_dim=12,  # RoPE splits head_dim into t/h/w: keep it a multiple of 6 and even parts
            in_channels=4,
            out_channels=4,
            text_dim=32,
            freq_dim=16,
            ffn_dim=48,
            num_layers=2,
            rope_max_seq_len=64,
        ),
        action_hidden_dim=16,
        action_ffn_dim=32,
        action_dim=4,
        state_dim=3,
        action_horizon=4,
        num_video_frames=5,
        text_max_length=16,
        num_inference_steps=3,
        vae=_stand_in_vae(z_dim=4, latents_mean=[0.1, -0.2, 0.0, 0.3], latents_std=[1.5, 0.8, 1.0, 1.2]),
        text_encoder=dict(
            d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4, relative_attention_num_buckets=8
        ),
        tokenizer_vocab_size=300,
    )


def _small() -> FastWAMConfig:
    # CPU-trainable: ~42 M video DiT, ~5 M action expert, a cheap stand-in VAE; realistic chunk
    # (9 frames -> 3 latent frames, horizon 32) so the variants' relative costs resemble the full
    # model's (the video DiT dominates; the VAE and the action expert are small next to it).
    return FastWAMConfig(
        video=VideoDiTConfig(
            num_attention_heads=8,
            attention_head_dim=64,
            in_channels=16,
            out_channels=16,
            text_dim=256,
            freq_dim=64,
            ffn_dim=2048,
            num_layers=10,
            rope_max_seq_len=256,
        ),
        action_hidden_dim=128,
        action_ffn_dim=512,
        action_dim=14,
        state_dim=14,
        action_horizon=32,
        num_video_frames=9,
        text_max_length=32,
        vae=_stand_in_vae(
            z_dim=16,
            # Per-channel mean / std of this random VAE's (seed 0) latents over the simulated towel
            # scene, so latents enter the DiT at unit scale as Wan2.2's do (raw std is ~0.13: video
            # noise would drown the frames and the image signal the action expert needs).
            latents_mean=[0.076, 0.083, 0.02, -0.047, 0.057, 0.179, 0.086, -0.064]
            + [0.072, -0.054, -0.132, -0.152, -0.099, -0.028, 0.051, -0.208],
            latents_std=[0.115, 0.11, 0.095, 0.189, 0.108, 0.098, 0.104, 0.199]
            + [0.119, 0.176, 0.169, 0.111, 0.133, 0.104, 0.099, 0.101],
        ),
        text_encoder=dict(
            d_model=256, d_kv=32, d_ff=512, num_layers=2, num_heads=8, relative_attention_num_buckets=16
        ),
        tokenizer_vocab_size=512,
    )


def _sim() -> FastWAMConfig:
    # The simulation experiment's model (fastwam_experiments.sim_towel_fold): `small`'s VAE, text
    # encoder and chunk (9 frames, horizon 32) with a ~1.8 M video DiT and a ~0.7 M action expert, so
    # that fast_wam and no_cotrain each train to a working fold policy in minutes on 2 CPU cores.
    # (`small` trains at ~10 s per batch of 16 there: a 30-minute pipeline would buy ~100 steps.)
    return _small().replace(
        video=dataclasses.asdict(
            VideoDiTConfig(
                num_attention_heads=4,
                attention_head_dim=32,
                in_channels=16,
                out_channels=16,
                text_dim=256,
                freq_dim=64,
                ffn_dim=512,
                num_layers=6,
                rope_max_seq_len=256,
            )
        ),
        action_hidden_dim=64,
        action_ffn_dim=256,
    )


def _wan22_5b() -> FastWAMConfig:
    return FastWAMConfig()  # the defaults are the Wan2.2-TI2V-5B / paper values


PRESETS = {"tiny": _tiny, "sim": _sim, "small": _small, "wan22-5b": _wan22_5b}


def preset(name: str, **overrides: Any) -> FastWAMConfig:
    """Build a preset config, with top-level field overrides (e.g. ``variant="joint"``)."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; expected one of {sorted(PRESETS)}")
    cfg = PRESETS[name]()
    return cfg.replace(**overrides) if overrides else cfg
