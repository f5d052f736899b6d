"""Precomputed encoder outputs, so training steps never run the frozen text encoder or VAE.

Text: one UMT5 embedding per unique instruction, in one safetensors file. Latents: the VAE latents
of every training window (they depend on the window's start frame: the Wan VAE is causal in time),
one safetensors file per episode. Both files record what they were made from (encoder fingerprint,
window shape) and are rebuilt only when missing; a mismatch is an error, never a silent reuse.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save_file
from tqdm import tqdm

from fastwam.camera import composite_to_tensor
from fastwam.data.windows import WindowDataset


def fingerprint(module: torch.nn.Module, config: Mapping[str, Any]) -> str:
    """Identity of a frozen encoder: its config plus a hash of (a sample of) its weights.

    Private config keys are left out: diffusers' `_use_default_values` is a list made from a set,
    so its order changes with the interpreter's string hash seed (every process has another one).
    """
    public = {k: v for k, v in config.items() if not str(k).startswith("_")}
    h = hashlib.sha256(json.dumps(public, sort_keys=True, default=str).encode())
    for name, tensor in sorted(module.state_dict().items()):
        flat = tensor.detach().reshape(-1)
        h.update(name.encode())
        h.update(flat[:: max(1, flat.numel() // 64)].float().cpu().numpy().tobytes())
    return h.hexdigest()[:16]


class TextEmbeddingCache:
    """instruction -> (embeds [L, D], mask [L]) for every instruction of the dataset."""

    def __init__(self, instructions: Sequence[str], embeds: torch.Tensor, mask: torch.Tensor) -> None:
        self.instructions = list(instructions)
        self._row = {text: i for i, text in enumerate(self.instructions)}
        self.embeds = embeds
        self.mask = mask

    @classmethod
    def build_or_load(
        cls,
        path: str | os.PathLike[str],
        instructions: Sequence[str],
        components,
        encoder_id: str,
        batch_size: int = 8,
        progress: bool = True,
        clean: bool = True,
    ) -> TextEmbeddingCache:
        """``clean``: encode through Wan's prompt_clean (``FastWAMConfig.clean_prompts``); embeddings
        of raw prompts are another cache (the flag is part of its encoder id)."""
        path = Path(path)
        encoder_id = encoder_id if clean else f"{encoder_id}+raw-prompts"
        wanted = sorted(set(instructions))
        if path.is_file():
            cache = cls.load(path, encoder_id)
            missing = sorted(set(wanted) - set(cache.instructions))
            if not missing:
                return cache
            raise ValueError(
                f"{path}: text cache lacks {len(missing)} instructions of this dataset (e.g. {missing[0]!r}); "
                "delete it to rebuild"
            )
        embeds, masks = [], []
        for i in tqdm(range(0, len(wanted), batch_size), desc="text embeddings", disable=not progress):
            e, m = components.encode_text(wanted[i : i + batch_size], clean=clean)
            embeds.append(e.float().cpu())
            masks.append(m.cpu())
        cache = cls(wanted, torch.cat(embeds), torch.cat(masks))
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        meta = {"instructions": json.dumps(wanted), "encoder": encoder_id}
        save_file(
            {"embeds": cache.embeds.contiguous(), "mask": cache.mask.contiguous()}, str(tmp), metadata=meta
        )
        os.replace(tmp, path)
        return cache

    @classmethod
    def load(cls, path: Path, encoder_id: str) -> TextEmbeddingCache:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            if meta.get("encoder") != encoder_id:
                raise ValueError(
                    f"{path}: text cache was made by encoder {meta.get('encoder')!r}, this run uses {encoder_id!r}; "
                    "delete it to rebuild"
                )
            return cls(json.loads(meta["instructions"]), f.get_tensor("embeds"), f.get_tensor("mask"))

    def lookup(self, instructions: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """-> embeds [B, L, D], mask [B, L]."""
        try:
            rows = [self._row[text] for text in instructions]
        except KeyError as error:
            raise KeyError(f"instruction {error.args[0]!r} is not in the text embedding cache") from None
        return self.embeds[rows], self.mask[rows]


class LatentCache:
    """VAE latents [C, F, h, w] of every window of a WindowDataset, one file per episode."""

    def __init__(self, directory: str | os.PathLike[str], encoder_id: str, windows: WindowDataset) -> None:
        self.dir = Path(directory)
        self.encoder_id = encoder_id
        spec = windows.spec
        self.signature = json.dumps(
            {
                "encoder": encoder_id,
                "dataset": str(windows.dataset.root.resolve()),
                "layout": windows.layout.to_dict(),
                "cameras": dict(windows.keys.cameras),
                "video_frames": spec.video_frames,
                "video_stride": spec.video_stride,
            },
            sort_keys=True,
        )
        self._starts: dict[int, dict[int, int]] = {}

    def path(self, episode: int) -> Path:
        return self.dir / f"episode_{episode:06d}.safetensors"

    def build(self, windows: WindowDataset, components, batch_size: int = 8, progress: bool = True) -> None:
        """Encode every window whose episode file is missing; check the signature of existing ones."""
        by_episode: dict[int, list[int]] = {}
        for ep, t in windows.index.tolist():
            by_episode.setdefault(ep, []).append(t)
        todo = []
        for ep, starts in by_episode.items():
            if self.path(ep).is_file():
                self._check(ep, starts)
            else:
                todo.append(ep)
        total = sum(len(by_episode[ep]) for ep in todo)
        bar = tqdm(total=total, desc="VAE latents", unit="window", disable=not progress or total == 0)
        for ep in todo:
            starts = by_episode[ep]
            length = windows.episodes[ep].length
            latents = []
            # Windows overlap: decode and compose each frame once per block of windows, not once per
            # window (blocks bound the memory of long episodes).
            block = batch_size * 8
            for b in range(0, len(starts), block):
                frames = np.stack([windows.window_indices(length, t)[2] for t in starts[b : b + block]])
                used, inverse = np.unique(frames, return_inverse=True)
                composites = windows.composite(ep, used)  # uint8 [U, H, W, 3]
                inverse = inverse.reshape(frames.shape)  # [N, V] rows of `composites`
                for i in range(0, len(frames), batch_size):
                    clips = composite_to_tensor(composites[inverse[i : i + batch_size]])  # [B, V, 3, H, W]
                    video = clips.permute(0, 2, 1, 3, 4)  # [B, 3, V, H, W]
                    latents.append(components.encode_video(video).float().cpu())
                    bar.update(len(clips))
            self.dir.mkdir(parents=True, exist_ok=True)
            tmp = self.path(ep).with_name(self.path(ep).name + ".tmp")
            tensors = {
                "latents": torch.cat(latents).contiguous(),
                "starts": torch.tensor(starts, dtype=torch.int64),
            }
            save_file(tensors, str(tmp), metadata={"signature": self.signature})
            os.replace(tmp, self.path(ep))
        bar.close()

    def _check(self, ep: int, starts: list[int]) -> None:
        with safe_open(str(self.path(ep)), framework="pt") as f:
            made = (f.metadata() or {}).get("signature")
            if made != self.signature:
                raise ValueError(
                    f"{self.path(ep)}: latent cache made for other settings ({self._differences(made)}); "
                    "delete it"
                )
            have = set(f.get_tensor("starts").tolist())
        if not set(starts) <= have:
            raise ValueError(
                f"{self.path(ep)}: latent cache lacks some window starts of episode {ep}; delete it"
            )

    def _differences(self, made: str | None) -> str:
        try:
            theirs = json.loads(made or "")
        except json.JSONDecodeError:
            return "no readable signature"
        ours = json.loads(self.signature)
        keys = sorted(k for k in set(ours) | set(theirs) if ours.get(k) != theirs.get(k))
        return ", ".join(f"{k}: {theirs.get(k)!r} there, {ours.get(k)!r} now" for k in keys)

    def get(self, ep: int, t: int) -> torch.Tensor:
        if ep not in self._starts:
            with safe_open(str(self.path(ep)), framework="pt") as f:
                self._starts[ep] = {int(s): i for i, s in enumerate(f.get_tensor("starts").tolist())}
        row = self._starts[ep].get(t)
        if row is None:
            raise KeyError(f"{self.path(ep)}: no cached latents for window start {t}")
        with safe_open(str(self.path(ep)), framework="pt") as f:
            return f.get_slice("latents")[row : row + 1][0]


class CachedLatentWindows(torch.utils.data.Dataset):
    """A WindowDataset (built with load_video=False) whose samples carry cached `latents`."""

    def __init__(self, windows: WindowDataset, cache: LatentCache) -> None:
        self.windows = windows
        self.cache = cache

    def __len__(self) -> int:
        return len(self.windows)

    def __getitem__(self, i: int):
        sample = self.windows[i]
        sample["latents"] = self.cache.get(sample["episode_index"], sample["frame_index"])
        return sample


def unique_instructions(windows: WindowDataset) -> list[str]:
    used = {int(i) for data in windows.episodes.values() for i in np.unique(data.task_index)}
    return sorted({windows.dataset.tasks[i] for i in used})
