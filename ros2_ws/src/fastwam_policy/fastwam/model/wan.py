"""Wan2.2 pieces from diffusers / transformers: video DiT, VAE, UMT5 text encoder, tokenizer.

Everything is loaded with ``from_pretrained(..., local_files_only=True)`` from a directory in the
``Wan2.2-TI2V-5B-Diffusers`` layout::

    <dir>/transformer/   WanTransformer3DModel (config.json + safetensors)
    <dir>/vae/           AutoencoderKLWan
    <dir>/text_encoder/  UMT5EncoderModel
    <dir>/tokenizer/     its tokenizer (anything AutoTokenizer loads)

Nothing is ever downloaded; a missing folder or file is a ``FileNotFoundError`` naming it. The small
presets build the same classes randomly (``build_random_components``) and can write them in the same
layout (``WanComponents.save_pretrained``), so tests exercise the real loading path.
"""

from __future__ import annotations

import json
import logging
from contextlib import nullcontext
from pathlib import Path

import torch
import torch.nn.functional as F
from diffusers import AutoencoderKLWan, WanTransformer3DModel
from diffusers.pipelines.wan.pipeline_wan import prompt_clean
from torch.overrides import TorchFunctionMode
from transformers import AutoTokenizer, PreTrainedTokenizerFast, UMT5Config, UMT5EncoderModel

from fastwam.model_config import PROMPT_TEMPLATE, FastWAMConfig

log = logging.getLogger(__name__)

COMPONENT_FOLDERS = ("vae", "text_encoder", "tokenizer")


def _require_dir(path: Path, what: str) -> Path:
    if not path.is_dir():
        raise FileNotFoundError(f"{what}: directory not found: {path}")
    if not (path / "config.json").is_file() and what != "tokenizer":
        raise FileNotFoundError(f"{what}: missing {path / 'config.json'}")
    return path


def load_video_transformer(wan_dir: str | Path, dtype: torch.dtype = torch.float32) -> WanTransformer3DModel:
    """Load ``<wan_dir>/transformer`` (the pretrained Wan2.2 video DiT)."""
    sub = _require_dir(Path(wan_dir) / "transformer", "transformer")
    return WanTransformer3DModel.from_pretrained(sub, torch_dtype=dtype, local_files_only=True)


def build_video_transformer(config: FastWAMConfig) -> WanTransformer3DModel:
    """A randomly initialised video DiT (on the current default device; use ``torch.device('meta')``
    as a context manager to count parameters of the full model without allocating them)."""
    return WanTransformer3DModel(**config.video.to_diffusers_kwargs())


def build_tokenizer(vocab_size: int) -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer trained offline on a tiny built-in corpus (deterministic).

    T5 conventions: ``<pad>`` = 0, ``</s>`` = 1 appended to every sequence, ``<unk>`` = 2.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<pad>", "</s>", "<unk>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    corpus = [
        PROMPT_TEMPLATE.format(task=t)
        for t in (
            "fold the towel",
            "pick up the red cup and place it in the bin",
            "open the drawer",
            "push the blue block to the left",
            "stack the bowls",
        )
    ]
    tok.train_from_iterator(corpus, trainer=trainer)
    tok.post_processor = processors.TemplateProcessing(
        single="$A </s>", pair="$A </s> $B </s>", special_tokens=[("</s>", tok.token_to_id("</s>"))]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>"
    )


class CPUEncodeKernels(TorchFunctionMode):
    """Faster CPU kernels for two ops of the VAE encode, same math (results equal to float rounding).

    * ``F.conv3d`` on dense fp32 CPU tensors -> oneDNN (``torch.mkldnn_convolution``). PyTorch's
      backend choice sends batch-1 3x3x3 convolutions on inputs with ``N * C * T * H <= 20480``
      (every conv of a one-frame encode at batch 1) to ``slow_conv3d`` (vol2col + GEMM), measured
      5-8x slower here than oneDNN on the same tensors.
    * ``F.normalize(x, dim=1)`` (the VAE's RMS norm over channels of [B, C, T, H, W]) ->
      ``x / sqrt(sum(x * x, dim)).clamp_min(eps)``: ``linalg.vector_norm`` reduces over the strided
      channel dim ~30x slower than a plain sum (measured 3.5 ms vs 0.1 ms at 16x192x160).

    diffusers' modules are untouched; anything else (other dtypes, devices, grad) runs as before.
    """

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        redirected = None
        if func is F.conv3d or func is torch.conv3d:
            redirected = _onednn_conv3d(*args, **kwargs)
        elif func is F.normalize:
            redirected = _sum_normalize(*args, **kwargs)
        return func(*args, **kwargs) if redirected is None else redirected


class FirstFrameCausalConv(TorchFunctionMode):
    """Causal convolutions of a one-frame encode over the real frame only, same math.

    Encoding a clip of one frame, every ``WanCausalConv3d`` of the encoder runs on its first chunk
    (no feature cache yet), so diffusers pads the one frame in front with kt - 1 zero frames and
    convolves [0, .., 0, x] with the kt-deep kernel: (kt - 1) / kt of the work (2/3 for Wan's 3x3x3)
    multiplies zeros. Here such a call (input exactly kt frames deep, one output frame) becomes the
    same convolution of the last frame with the kernel's last temporal slice. Only valid where the
    leading frames are that zero padding, so ``WanComponents`` enters it for one-frame clips alone.
    """

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is F.conv3d or func is torch.conv3d:
            args = _last_frame_conv_args(*args, **kwargs)
            kwargs = {}
        return func(*args, **kwargs)


def _last_frame_conv_args(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    def first(v):
        return v[0] if isinstance(v, (tuple, list)) else v

    kt = weight.shape[2]
    if kt > 1 and input.shape[2] == kt and first(padding) == 0 and first(dilation) == 1:
        input, weight = input[:, :, -1:], weight[:, :, -1:].contiguous()
    return input, weight, bias, stride, padding, dilation, groups


def _sum_normalize(input, p=2.0, dim=1, eps=1e-12, out=None):
    if out is not None or p != 2.0 or input.device.type != "cpu" or input.dtype != torch.float32:
        return None
    if torch.is_grad_enabled() or input.is_mkldnn:
        return None
    return input / input.mul(input).sum(dim, keepdim=True).sqrt().clamp_min(eps)


def _onednn_conv3d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    if isinstance(padding, str) or not torch.backends.mkldnn.is_available():
        return None
    if input.device.type != "cpu" or input.dtype != torch.float32 or input.ndim != 5:
        return None
    if weight.dtype != torch.float32 or input.is_mkldnn or torch.is_grad_enabled():
        return None

    def triple(v):
        return tuple(v) if isinstance(v, (tuple, list)) else (v, v, v)

    return torch.mkldnn_convolution(
        input.contiguous(), weight, bias, triple(padding), triple(stride), triple(dilation), groups
    )


class WanComponents:
    """The frozen parts: VAE, text encoder and tokenizer, with the encoders the model needs.

    ``encode_video`` returns latents normalised with the VAE's ``latents_mean`` / ``latents_std``
    (as the Wan pipelines do); ``encode_text`` applies the Fast-WAM prompt template and returns
    zero-padded UMT5 embeddings plus the token mask (the Wan pipelines zero the padding too).
    """

    def __init__(
        self, vae: AutoencoderKLWan, text_encoder: UMT5EncoderModel, tokenizer, text_max_length: int
    ):
        self.vae = vae.eval().requires_grad_(False)
        self.text_encoder = text_encoder.eval().requires_grad_(False)
        self.tokenizer = tokenizer
        self.text_max_length = text_max_length
        # On CUDA, replay the whole one-shape encode as a CUDA graph: diffusers' Wan VAE is a
        # Python loop of ~hundreds of small kernels for one frame, so launches, not convolutions,
        # set its time. Set by the policy / benchmark for compile modes that capture.
        self.capture_encode = False
        self._encode_graphs: dict[tuple, tuple[torch.cuda.CUDAGraph, torch.Tensor, torch.Tensor]] = {}
        self._stats: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}

    # -- construction ------------------------------------------------------------------------------
    @classmethod
    def from_pretrained(
        cls,
        wan_dir: str | Path,
        text_max_length: int,
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float32,
    ) -> WanComponents:
        wan_dir = Path(wan_dir)
        if not wan_dir.is_dir():
            raise FileNotFoundError(f"Wan2.2 components directory not found: {wan_dir}")
        vae_dir = _require_dir(wan_dir / "vae", "vae")
        te_dir = _require_dir(wan_dir / "text_encoder", "text_encoder")
        tok_dir = _require_dir(wan_dir / "tokenizer", "tokenizer")
        # The VAE stays in fp32 (as in the Wan pipelines); the text encoder follows `dtype`.
        vae = AutoencoderKLWan.from_pretrained(vae_dir, torch_dtype=torch.float32, local_files_only=True)
        te = UMT5EncoderModel.from_pretrained(te_dir, dtype=dtype, local_files_only=True)
        tok = AutoTokenizer.from_pretrained(tok_dir, local_files_only=True)
        return cls(vae.to(device), te.to(device), tok, text_max_length)

    def save_pretrained(self, wan_dir: str | Path) -> None:
        wan_dir = Path(wan_dir)
        self.vae.save_pretrained(wan_dir / "vae")
        self.text_encoder.save_pretrained(wan_dir / "text_encoder")
        self.tokenizer.save_pretrained(wan_dir / "tokenizer")

    @property
    def device(self) -> torch.device:
        return next(self.text_encoder.parameters()).device

    @property
    def text_dim(self) -> int:
        return self.text_encoder.config.d_model

    @property
    def z_dim(self) -> int:
        return self.vae.config.z_dim

    # -- encoders ----------------------------------------------------------------------------------
    @torch.no_grad()
    def encode_video(self, video: torch.Tensor) -> torch.Tensor:
        """video [B, 3, T, H, W] in [-1, 1] (T = 1 + 4k; H, W multiples of 16) -> latents
        [B, z_dim, 1 + k, H/16, W/16], normalised: (mu - latents_mean) / latents_std."""
        if video.ndim != 5 or video.shape[1] != 3:
            raise ValueError(f"encode_video expects [B, 3, T, H, W], got {tuple(video.shape)}")
        vae_dtype = next(self.vae.parameters()).dtype
        video = video.to(self.device, vae_dtype)
        if self.capture_encode and video.device.type == "cuda":
            try:
                return self._graphed_encode(video)
            except RuntimeError as err:  # a VAE whose encode cannot be captured: keep encoding
                log.warning("CUDA graph capture of the VAE encode failed (%s); encoding eagerly", err)
                self.capture_encode = False
        return self._encode(video)

    def _encode(self, video: torch.Tensor) -> torch.Tensor:
        with CPUEncodeKernels(), FirstFrameCausalConv() if video.shape[2] == 1 else nullcontext():
            mu = self.vae.encode(video).latent_dist.mode()
        mean, std = self._latent_stats(mu.device, mu.dtype)
        return (mu - mean) / std

    def _latent_stats(self, device, dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """latents_mean / latents_std as [1, C, 1, 1, 1] tensors (made once: no host copies in a graph)."""
        key = (device, dtype)
        if key not in self._stats:
            cfg = self.vae.config
            self._stats[key] = tuple(
                torch.tensor(v, device=device, dtype=dtype).view(1, -1, 1, 1, 1)
                for v in (cfg.latents_mean, cfg.latents_std)
            )
        return self._stats[key]

    def _graphed_encode(self, video: torch.Tensor) -> torch.Tensor:
        key = (tuple(video.shape), video.dtype, video.device)
        entry = self._encode_graphs.get(key)
        if entry is None:
            static_in = video.clone()
            side = torch.cuda.Stream(video.device)
            side.wait_stream(torch.cuda.current_stream(video.device))
            with torch.cuda.stream(side):  # warm-up (cuDNN algorithm choice, stats) off the graph
                for _ in range(2):
                    self._encode(static_in)
            torch.cuda.current_stream(video.device).wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                static_out = self._encode(static_in)
            entry = self._encode_graphs[key] = (graph, static_in, static_out)
        graph, static_in, static_out = entry
        static_in.copy_(video)
        graph.replay()
        return static_out.clone()

    @torch.no_grad()
    def encode_text(
        self, tasks: list[str], template: bool = True, clean: bool = True
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """tasks -> (embeds [B, L, D_text], mask [B, L] bool), L = text_max_length, padding zeroed.

        ``template=False`` encodes the strings as given (used for the empty unconditional prompt);
        ``clean``: diffusers' Wan ``prompt_clean`` first (``FastWAMConfig.clean_prompts``).
        """
        if isinstance(tasks, str):
            raise TypeError("encode_text takes a list of strings")
        prompts = [PROMPT_TEMPLATE.format(task=t) if template else t for t in tasks]
        if clean:
            prompts = [prompt_clean(p) for p in prompts]
        enc = self.tokenizer(
            prompts,
            padding="max_length",
            max_length=self.text_max_length,
            truncation=True,
            add_special_tokens=True,
            return_attention_mask=True,
            return_tensors="pt",
        )
        ids = enc.input_ids.to(self.device)
        mask = enc.attention_mask.to(self.device)
        embeds = self.text_encoder(ids, mask).last_hidden_state
        mask = mask.bool()
        return embeds * mask.unsqueeze(-1).to(embeds.dtype), mask


def latent_frame_mask(frame_mask: torch.Tensor, temporal_factor: int = 4) -> torch.Tensor:
    """Pixel frame validity [B, T] (T = 1 + 4k) -> latent frame validity [B, 1 + k].

    Latent frame 0 encodes pixel frame 0; latent frame j >= 1 encodes pixel frames 4j-3 .. 4j and is
    valid only when all four are (a partly padded group would mix in repeated padding frames).
    """
    if frame_mask.ndim != 2 or (frame_mask.shape[1] - 1) % temporal_factor != 0:
        raise ValueError(f"frame_mask must be [B, 1 + {temporal_factor} k], got {tuple(frame_mask.shape)}")
    fm = frame_mask.bool()
    rest = fm[:, 1:].unflatten(1, (-1, temporal_factor)).all(dim=2)
    return torch.cat([fm[:, :1], rest], dim=1)


def build_random_components(config: FastWAMConfig, seed: int = 0) -> WanComponents:
    """Random VAE + UMT5 + offline tokenizer from a small preset's ``vae`` / ``text_encoder`` dicts."""
    if config.vae is None or config.text_encoder is None or config.tokenizer_vocab_size is None:
        raise ValueError("this preset has no random components: load them from a Wan2.2-Diffusers directory")
    gen_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        vae = AutoencoderKLWan(**config.vae)
        tokenizer = build_tokenizer(config.tokenizer_vocab_size)
        te_cfg = UMT5Config(
            vocab_size=len(tokenizer),
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=tokenizer.eos_token_id,
            decoder_start_token_id=tokenizer.pad_token_id,
            **config.text_encoder,
        )
        te = UMT5EncoderModel(te_cfg)
    finally:
        torch.random.set_rng_state(gen_state)
    if te_cfg.d_model != config.video.text_dim:
        raise ValueError(f"text encoder d_model {te_cfg.d_model} != video.text_dim {config.video.text_dim}")
    return WanComponents(vae, te, tokenizer, config.text_max_length)


def read_wan_config(wan_dir: str | Path, folder: str) -> dict:
    path = Path(wan_dir) / folder / "config.json"
    if not path.is_file():
        raise FileNotFoundError(f"missing {path}")
    return json.loads(path.read_text())
