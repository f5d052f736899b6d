"""The training loop: Hugging Face accelerate (1 process, DDP, DeepSpeed), FSDP2 sharding, exact resume.

Sharded training (train.sharding=fsdp, fastwam_training.sharding) runs under accelerate's process
management (any multi-process launch) with the trainer's own FSDP2 units, one per MoT layer pair.

Run directory layout (config.output_dir):
    config.yaml                     the resolved experiment config
    stats.json                      normalization statistics used (copied from the dataset's)
    logs/                           TensorBoard; metrics.jsonl (one JSON object per logged step)
    checkpoints/step_000100/
        model/                      fastwam.checkpoint format (what the policy node loads)
        model_ema/                  the EMA weights in the same format (when EMA is on)
        training_state/             accelerate state: weights, optimizer, scheduler, RNG, EMA
        training_state/sharded/     train.sharding=fsdp: model + optimizer shards (torch.distributed.checkpoint)
        trainer_state.json          step and data position; written last (the commit marker)
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import time
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.utils import DistributedType, ProjectConfiguration, set_seed
from torch import nn
from torch.utils.data import DataLoader
from tqdm import tqdm

from fastwam.camera import composite_to_tensor
from fastwam.data.lerobot import LeRobotDataset
from fastwam.data.stats import load_or_compute_stats
from fastwam.data.windows import DatasetKeys, WindowDataset, WindowSpec, split_episodes
from fastwam.normalize import NormalizationStats, Normalizer
from fastwam_training import modeling, sharding
from fastwam_training.caches import (
    CachedLatentWindows,
    LatentCache,
    TextEmbeddingCache,
    fingerprint,
    unique_instructions,
)
from fastwam_training.config import ExperimentConfig
from fastwam_training.cpu_threads import CpuThreads
from fastwam_training.optim import EMA, build_optimizer, build_scheduler
from fastwam_training.sampling import ResumableBatchSampler
from fastwam_training.tracking import METRICS_FILE, JsonlTracker

log = logging.getLogger("fastwam_training")
STATE_FILE = "trainer_state.json"


class LossModule(nn.Module):
    """Routes forward() to FastWAM.training_loss so that DDP/FSDP see a normal forward call."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, **inputs: Any) -> dict[str, torch.Tensor]:
        return self.model.training_loss(**inputs)


def dataset_keys(config: ExperimentConfig, robot) -> DatasetKeys:
    """Which dataset features the config's cameras, state and action are, named as the robot's joints."""
    dc = config.data
    return DatasetKeys(
        cameras=dict(dc.cameras),
        state=dc.state_key,
        action=dc.action_key,
        state_names=tuple(robot.state_joint_names),
        action_names=tuple(robot.action_joint_names),
    )


def window_spec(config: ExperimentConfig, model_config) -> WindowSpec:
    return WindowSpec(
        action_horizon=model_config.action_horizon,
        video_frames=model_config.num_video_frames,
        video_stride=config.data.video_stride,
    )


def encoder_ids(components) -> tuple[str, str]:
    """Fingerprints (text encoder, VAE) that the caches record and check."""
    text = fingerprint(components.text_encoder, components.text_encoder.config.to_dict())
    return text, fingerprint(components.vae, dict(components.vae.config))


def cache_directory(config: ExperimentConfig) -> Path:
    """Where the text and VAE latent caches live: cache.dir, or <output_dir>/cache."""
    return (
        Path(config.resolve_path(config.cache.dir)) if config.cache.dir else Path(config.output_dir) / "cache"
    )


class CachePreparer:
    """Builds the VAE latent cache (and with ``text`` the text cache) of the config's dataset, and
    nothing else: no statistics, optimizer or run directory, so it runs on a dataset that is still
    growing. The frozen encoders are built once; each call re-reads the dataset and encodes only the
    episodes not cached yet, which `Trainer` then finds done. (The text cache is one file for every
    instruction: build it once the dataset is complete.) Single process."""

    def __init__(self, config: ExperimentConfig) -> None:
        if not config.data.root:
            raise ValueError("data.root is not set")
        if not (config.cache.text or config.cache.latents):
            raise ValueError("the config caches nothing (cache.text and cache.latents are both off)")
        self.config = config
        self.robot, self.layout = config.robot_and_cameras()
        model, self.components = modeling.build(config, self.robot, self.layout)
        self.model_config = model.config
        self.spec = window_spec(config, model.config)
        self.text_id, self.vae_id = encoder_ids(self.components)
        self.cache_dir = cache_directory(config)

    def __call__(self, progress: bool = True, text: bool = True) -> Path:
        """Cache what the dataset holds now; returns the cache directory."""
        config, layout, spec = self.config, self.layout, self.spec
        dataset = LeRobotDataset(config.resolve_path(config.data.root))
        keys = dataset_keys(config, self.robot)
        keys.check(dataset, layout)
        train_eps, val_eps = split_episodes(
            dataset.episode_indices, config.data.val_episodes, seed=config.seed
        )
        stride = config.cache.latent_stride if config.cache.latents else 1
        windows = WindowDataset(dataset, layout, keys, spec, train_eps, load_video=True, start_stride=stride)
        if config.cache.text and text:
            instructions = unique_instructions(windows)
            if val_eps:
                val = WindowDataset(dataset, layout, keys, spec, val_eps)
                instructions = sorted(set(instructions) | set(unique_instructions(val)))
            TextEmbeddingCache.build_or_load(
                self.cache_dir / "text_embeds.safetensors", instructions, self.components, self.text_id,
                config.cache.batch_size, progress, clean=self.model_config.clean_prompts,
            )  # fmt: skip
        if config.cache.latents:
            LatentCache(self.cache_dir / "latents", self.vae_id, windows).build(
                windows, self.components, config.cache.batch_size, progress
            )
        return self.cache_dir


class Trainer:
    def __init__(self, config: ExperimentConfig, accelerator: Accelerator | None = None) -> None:
        self.config = config
        self.out = Path(config.output_dir)
        train = config.train
        cpu = train.cpu or not torch.cuda.is_available()
        precision = train.mixed_precision
        if precision == "auto":
            precision = "no" if cpu else "bf16"
        self.shards: sharding.ShardedModel | None = None
        fsdp = train.sharding == "fsdp"
        if fsdp:
            sharding.mixed_precision(precision)  # refuses fp16 before anything is built
        self.cpu_threads = CpuThreads(
            train.cpu_threads, config.resolve_path(train.cpu_threads_file) if train.cpu_threads_file else None
        )
        if cpu:
            self.cpu_threads.update()
        trackers: list = ["tensorboard"] if config.logging.tensorboard else []
        if config.logging.jsonl:
            trackers.append(JsonlTracker(self.out / "logs" / METRICS_FILE))
        self.has_trackers = bool(trackers)
        self.accelerator = accelerator or Accelerator(
            cpu=cpu,
            # Sharded: FSDP2's policy casts (fp32 master shards, bf16 compute), not accelerate's autocast.
            mixed_precision="no" if fsdp else precision,
            gradient_accumulation_steps=train.grad_accum,
            log_with=trackers or None,
            project_config=ProjectConfiguration(
                project_dir=str(self.out), logging_dir=str(self.out / "logs")
            ),
        )
        acc = self.accelerator
        if acc.distributed_type == DistributedType.FSDP:
            raise ValueError(
                "accelerate's own FSDP (distributed_type: FSDP) cannot form units that match the Fast-WAM "
                "layer loop: launch with training/accelerate/fsdp.yaml (processes only) and "
                "train.sharding=fsdp (training/README.md, multi-GPU)"
            )
        if fsdp and acc.distributed_type == DistributedType.DEEPSPEED:
            raise ValueError("train.sharding=fsdp under a DeepSpeed launch config: use one or the other")
        set_seed(config.seed, device_specific=False)
        self.robot, self.layout = config.robot_and_cameras()

        # -- data ----------------------------------------------------------------------------------
        dc = config.data
        if not dc.root:
            raise ValueError("data.root is not set")
        self.dataset = LeRobotDataset(config.resolve_path(dc.root))
        self.keys = dataset_keys(config, self.robot)
        self.keys.check(self.dataset, self.layout)
        stats_path = config.resolve_path(dc.stats_path) if dc.stats_path else None
        with acc.main_process_first():  # the main process computes the file; the others then load it
            self.stats, self.stats_path = load_or_compute_stats(
                self.dataset,
                self.keys,
                stats_path,
                recompute=dc.recompute_stats and acc.is_main_process,
                progress=acc.is_main_process and config.logging.progress,
            )
        self.normalizer = Normalizer(self.stats, dc.normalization)

        # -- model ---------------------------------------------------------------------------------
        self.model, self.components = modeling.build(config, self.robot, self.layout)
        self.model_config = self.model.config
        self.spec = window_spec(config, self.model_config)
        self.components_id, self.vae_id = encoder_ids(self.components)
        if train.gradient_checkpointing:
            modeling.enable_gradient_checkpointing(self.model)

        train_eps, val_eps = split_episodes(self.dataset.episode_indices, dc.val_episodes, seed=config.seed)
        self.train_episodes, self.val_episodes = train_eps, val_eps
        cache = config.cache
        stride = cache.latent_stride if cache.latents else 1
        check = dc.check_videos and acc.is_main_process
        self.train_windows = WindowDataset(
            self.dataset,
            self.layout,
            self.keys,
            self.spec,
            train_eps,
            load_video=True,
            check_videos=check,
            start_stride=stride,
        )
        self.val_windows = (
            WindowDataset(self.dataset, self.layout, self.keys, self.spec, val_eps, check_videos=check)
            if val_eps
            else None
        )
        # The frozen encoders build the caches on the accelerator. (The text encoder stays there even
        # with a text cache: WanComponents.encode_video follows the text encoder's device.)
        self.components.vae.to(acc.device)
        self.components.text_encoder.to(acc.device)
        self._setup_caches()

        # -- optimization --------------------------------------------------------------------------
        if fsdp:
            if train.ema_decay:
                raise ValueError(
                    "train.ema_decay: EMA needs whole local weights (1 process, DDP, ZeRO-2), not FSDP"
                )
            self.loss_module = LossModule(self.model)
            # The parameters become DTensor shards here: the optimizer is built on them afterwards.
            self.shards = sharding.shard(self.loss_module, self.model, acc.device, precision)
            self.optimizer = build_optimizer(self.loss_module.parameters(), train)
            self.scheduler = build_scheduler(self.optimizer, train)
            self.ema = None
            acc.register_for_checkpointing(self.scheduler)  # accelerate saves it and the RNG states
            self.step = 0
            if config.checkpoint.resume:
                self.resume(config.checkpoint.resume)
            return
        self.optimizer = build_optimizer(self.model.parameters(), train)
        self.scheduler = build_scheduler(self.optimizer, train)
        sharded = False
        if acc.distributed_type == DistributedType.DEEPSPEED:
            ds = acc.state.deepspeed_plugin
            sharded = ds.zero_stage == 3
            # No dataloader goes through prepare(), so DeepSpeed cannot infer its "auto" batch size.
            ds.deepspeed_config["train_micro_batch_size_per_gpu"] = train.batch_size
        if train.ema_decay and sharded:
            raise ValueError(
                "train.ema_decay: EMA needs whole local weights (1 process, DDP, ZeRO-2), not FSDP/ZeRO-3"
            )
        self.loss_module, self.optimizer = acc.prepare(LossModule(self.model), self.optimizer)
        # After prepare(): the shadow weights are copied where the model now lives (the GPU).
        self.ema = EMA(self.model.parameters(), train.ema_decay) if train.ema_decay else None
        acc.register_for_checkpointing(self.scheduler)
        if self.ema is not None:
            acc.register_for_checkpointing(self.ema)
        self.step = 0  # optimizer steps done
        if config.checkpoint.resume:
            self.resume(config.checkpoint.resume)

    # -- caches --------------------------------------------------------------------------------------
    def _setup_caches(self) -> None:
        cfg, acc = self.config, self.accelerator
        cache_dir = self.cache_dir = cache_directory(cfg)
        progress = acc.is_main_process and cfg.logging.progress
        self.text_cache = None
        if cfg.cache.text:
            instructions = unique_instructions(self.train_windows)
            if self.val_windows is not None:
                instructions = sorted(set(instructions) | set(unique_instructions(self.val_windows)))
            with acc.main_process_first():
                self.text_cache = TextEmbeddingCache.build_or_load(
                    cache_dir / "text_embeds.safetensors",
                    instructions,
                    self.components,
                    self.components_id,
                    cfg.cache.batch_size,
                    progress,
                    clean=self.model_config.clean_prompts,
                )
        self.train_data: torch.utils.data.Dataset = self.train_windows
        if cfg.cache.latents:
            latents = LatentCache(cache_dir / "latents", self.vae_id, self.train_windows)
            if acc.is_main_process:
                latents.build(self.train_windows, self.components, cfg.cache.batch_size, progress)
            acc.wait_for_everyone()
            self.train_windows.load_video = False
            self.train_data = CachedLatentWindows(self.train_windows, latents)

    # -- data ----------------------------------------------------------------------------------------
    def train_loader(self, start: int) -> DataLoader:
        acc = self.accelerator
        sampler = ResumableBatchSampler(
            len(self.train_data),
            self.config.train.batch_size,
            self.config.seed,
            acc.process_index,
            acc.num_processes,
            start=start,
        )
        self.batches_per_epoch = sampler.batches_per_epoch
        return DataLoader(
            self.train_data,
            batch_sampler=sampler,
            num_workers=self.config.data.num_workers,
            persistent_workers=False,
            pin_memory=acc.device.type == "cuda",
        )

    def model_inputs(self, batch: dict[str, Any], generator: torch.Generator | None) -> dict[str, Any]:
        """A collated window batch -> FastWAM.training_loss arguments (normalized, on device)."""
        device = self.accelerator.device
        if "latents" in batch:
            latents = batch["latents"].to(device)
        else:
            video = composite_to_tensor(batch["video"].numpy())  # [B, V, 3, H, W]
            latents = self.components.encode_video(video.permute(0, 2, 1, 3, 4).to(device))
        frame_mask = batch["frame_mask"].to(device)
        lf_mask = modeling.latent_frame_mask(frame_mask, self.model_config.vae_temporal_factor)
        instructions = list(batch["instruction"])
        if self.text_cache is not None:
            embeds, mask = self.text_cache.lookup(instructions)
        else:
            embeds, mask = self.components.encode_text(instructions, clean=self.model_config.clean_prompts)
        action = self.normalizer.normalize("action", batch["action"].to(device, torch.float32))
        state = None
        if self.model_config.state_dim > 0:
            state = self.normalizer.normalize("state", batch["state"].to(device, torch.float32))
        return {
            "latents": latents.float(),
            "actions": action,
            "action_mask": batch["action_mask"].to(device),
            "latent_frame_mask": lf_mask,
            "text_embeds": embeds.to(device).float(),
            "text_mask": mask.to(device),
            "state": state,
            "generator": generator,
        }

    def step_generator(self, step: int, micro: int) -> torch.Generator:
        """Noise and timesteps of a micro-batch depend only on (seed, step, slot): exact resume.

        The slot is the micro-batch's place in the step's global batch, micro * processes + rank:
        the same place the sampler gives its samples, so P processes with grad_accum G draw the same
        samples and noise as 1 process with grad_accum G * P (what the sharded test compares)."""
        acc = self.accelerator
        slot = micro * acc.num_processes + acc.process_index
        slots = max(131, self.config.train.grad_accum * acc.num_processes)  # 131: the 1-process seeds of old
        seed = ((self.config.seed * 1_000_003 + step) * slots + slot) * 4099
        return torch.Generator(device=acc.device).manual_seed(seed % (2**63))

    # -- training ------------------------------------------------------------------------------------
    def train(self) -> list[dict[str, float]]:
        """Run to train.max_steps; returns the logged loss rows (one per optimizer step)."""
        cfg, acc = self.config, self.accelerator
        train = cfg.train
        if acc.is_main_process:
            self.out.mkdir(parents=True, exist_ok=True)
            cfg.save(self.out / "config.yaml")
            self.stats.save(self.out / "stats.json")
            if self.has_trackers:
                acc.init_trackers(cfg.name, config=_flat_hparams(cfg.to_dict()))
        loader = iter(self.train_loader(start=self.step * train.grad_accum))
        history: list[dict[str, float]] = []
        bar = tqdm(
            total=train.max_steps,
            initial=self.step,
            desc="train",
            unit="step",
            disable=not (acc.is_main_process and cfg.logging.progress),
        )
        samples_per_step = train.batch_size * train.grad_accum * acc.num_processes
        window_start, window_steps = time.perf_counter(), 0
        self.loss_module.train()
        stop = (
            train.max_steps if train.run_steps is None else min(train.max_steps, self.step + train.run_steps)
        )
        on_cpu = acc.device.type == "cpu"
        while self.step < stop:
            threads = self.cpu_threads.update() if on_cpu else None
            totals = {"loss": 0.0, "action_loss": 0.0, "video_loss": 0.0}
            for micro in range(train.grad_accum):
                batch = next(loader)
                if self.shards is not None:
                    losses = self._sharded_micro_step(batch, micro, last=micro == train.grad_accum - 1)
                    for key in totals:
                        totals[key] += float(losses[key].detach()) / train.grad_accum
                    continue
                with acc.accumulate(self.loss_module):
                    inputs = self.model_inputs(batch, self.step_generator(self.step, micro))
                    with acc.autocast():
                        losses = self.loss_module(**inputs)
                    acc.backward(losses["loss"])
                    if acc.sync_gradients and train.grad_clip > 0:
                        acc.clip_grad_norm_(self.loss_module.parameters(), train.grad_clip)
                    self.optimizer.step()
                    self.optimizer.zero_grad(set_to_none=True)
                for key in totals:
                    totals[key] += float(losses[key].detach()) / train.grad_accum
            if acc.num_processes > 1:
                # Logged: the whole global batch's losses (each process computed its share), so the
                # curve of P processes x grad_accum G is that of 1 process x G * P (step_generator).
                local = torch.tensor(list(totals.values()), device=acc.device, dtype=torch.float64)
                totals = dict(zip(totals, acc.reduce(local, reduction="mean").tolist(), strict=True))
            self.scheduler.step()
            if self.ema is not None:
                self.ema.update()
            self.step += 1
            window_steps += 1
            row = {"step": self.step, **totals, "lr": self.scheduler.get_last_lr()[0]}
            history.append(row)
            bar.update(1)
            if self.step % cfg.logging.every == 0 or self.step == train.max_steps:
                elapsed = time.perf_counter() - window_start
                row["samples_per_s"] = samples_per_step * window_steps / max(elapsed, 1e-9)
                if threads is not None:
                    row["cpu_threads"] = threads
                window_start, window_steps = time.perf_counter(), 0
                bar.set_postfix(loss=f"{totals['loss']:.4f}", act=f"{totals['action_loss']:.4f}")
                acc.log({f"train/{k}": v for k, v in row.items() if k != "step"}, step=self.step)
            if (
                cfg.validation.every
                and self.val_windows is not None
                and self.step % cfg.validation.every == 0
            ):
                acc.log(self.validate(), step=self.step)
            # Checkpoint every N steps and when this invocation stops (checkpoint.every = 0: never).
            if cfg.checkpoint.every and (self.step % cfg.checkpoint.every == 0 or self.step == stop):
                self.save_checkpoint()
        bar.close()
        acc.wait_for_everyone()
        acc.end_training()
        return history

    def _sharded_micro_step(self, batch: dict[str, Any], micro: int, last: bool) -> dict[str, torch.Tensor]:
        """FSDP2: forward/backward of one micro-batch (gradients reduce-scattered to the shards as they
        are produced); after the last, clip by the global norm and step the sharded optimizer."""
        train = self.config.train
        assert self.shards is not None
        inputs = self.model_inputs(batch, self.step_generator(self.step, micro))
        losses = self.loss_module(**inputs)
        (losses["loss"] / train.grad_accum).backward()
        if last:
            if train.grad_clip > 0:
                sharding.clip_grad_norm_(self.shards, train.grad_clip)
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
        return losses

    @torch.no_grad()
    def validate(self) -> dict[str, float]:
        if self.shards is None:
            return self._validate()
        with sharding.gathered(self.shards):  # sampling drives the blocks outside the FSDP units
            return self._validate()

    def _validate(self) -> dict[str, float]:
        """Held-out episodes: losses and sampled-action error (normalized and physical units)."""
        cfg, acc = self.config, self.accelerator
        assert self.val_windows is not None
        model = self.model if self.shards is not None else acc.unwrap_model(self.loss_module).model
        was_training = model.training
        model.eval()
        n = len(self.val_windows)
        indices = list(range(acc.process_index, n, acc.num_processes))
        bs = cfg.validation.batch_size
        sums = torch.zeros(6, device=acc.device, dtype=torch.float64)
        for b in range(min(cfg.validation.batches, math.ceil(len(indices) / bs))):
            items = [self.val_windows[i] for i in indices[b * bs : (b + 1) * bs]]
            batch = torch.utils.data.default_collate(items)
            inputs = self.model_inputs(batch, self.step_generator(0, 10_000 + b))
            with acc.autocast():
                losses = model.training_loss(**inputs)
                pred = modeling.sample_actions(model, inputs, self.step_generator(0, 20_000 + b))
            mask = inputs["action_mask"].unsqueeze(-1).float()
            count = mask.sum() * pred.shape[-1]
            err_norm = ((pred.float() - inputs["actions"]) * mask).abs().sum()
            physical_pred = self.normalizer.unnormalize("action", pred.float())
            physical_true = batch["action"].to(acc.device, torch.float32)
            err_phys = ((physical_pred - physical_true) * mask).abs().sum()
            k = len(items)
            sums += torch.tensor(
                [
                    float(losses["action_loss"]) * k,
                    float(losses["video_loss"]) * k,
                    k,
                    float(err_norm),
                    float(err_phys),
                    float(count),
                ],
                device=acc.device,
                dtype=torch.float64,
            )
        sums = acc.reduce(sums, reduction="sum")
        model.train(was_training)
        k, count = max(float(sums[2]), 1.0), max(float(sums[5]), 1.0)
        return {
            "val/action_loss": float(sums[0]) / k,
            "val/video_loss": float(sums[1]) / k,
            "val/action_mae_normalized": float(sums[3]) / count,
            "val/action_mae_physical": float(sums[4]) / count,
        }

    # -- checkpoints ---------------------------------------------------------------------------------
    @property
    def checkpoint_root(self) -> Path:
        return self.out / "checkpoints"

    def save_checkpoint(self) -> Path:
        acc, cfg = self.accelerator, self.config
        path = self.checkpoint_root / f"step_{self.step:07d}"
        acc.wait_for_everyone()
        acc.save_state(str(path / "training_state"))
        if self.shards is not None:
            sharding.save(path / "training_state" / "sharded", self.shards, self.optimizer)
            state_dict = sharding.full_state_dict(self.shards)  # whole weights on rank 0
        else:
            state_dict = acc.get_state_dict(self.loss_module)  # gathered full weights (ZeRO-3 safe)
        if acc.is_main_process:
            prefix = "model."
            weights = {k[len(prefix) :]: v for k, v in state_dict.items() if k.startswith(prefix)}
            self._export(path / "model", weights)
            if self.ema is not None:
                names = [n for n, p in self.model.named_parameters() if p.requires_grad]
                ema_weights = {**weights, **{n: s.cpu() for n, s in zip(names, self.ema.shadow, strict=True)}}
                self._export(path / "model_ema", ema_weights)
            self.stats.save(path / "stats.json")
            trainer_state = {
                "step": self.step,
                "micro_batches": self.step * cfg.train.grad_accum,
                "num_processes": acc.num_processes,
                "sharding": cfg.train.sharding,
                "config": cfg.to_dict(),
            }
            (path / STATE_FILE).write_text(json.dumps(trainer_state, indent=2))
            self._prune_checkpoints()
        acc.wait_for_everyone()
        return path

    def _export(self, path: Path, weights: dict[str, torch.Tensor]) -> None:
        cfg = self.config
        control_fps = self.dataset.fps
        if cfg.robot_config is not None:
            from fastwam.robot_config import load_robot_config

            control_fps = load_robot_config(cfg.resolve_path(cfg.robot_config)).control.rate_hz
        modeling.save(
            path,
            weights,
            self.model_config,
            cfg,
            self.robot,
            self.layout,
            self.stats,
            self.components,
            control_fps=control_fps,
            dataset_fps=self.dataset.fps,
            extra={"experiment": cfg.name, "step": self.step, "dataset": str(self.dataset.root)},
        )

    def _prune_checkpoints(self) -> None:
        keep = self.config.checkpoint.keep_last
        done = sorted(p for p in self.checkpoint_root.glob("step_*") if (p / STATE_FILE).is_file())
        if keep > 0:
            for old in done[:-keep]:
                shutil.rmtree(old, ignore_errors=True)

    def resume(self, where: str) -> None:
        """Restore weights, optimizer, scheduler, RNG, EMA and data position from a checkpoint."""
        path = latest_checkpoint(self.checkpoint_root) if where == "latest" else Path(where)
        if path is None:
            log.info("resume=latest but no checkpoint in %s: starting fresh", self.checkpoint_root)
            return
        state_file = path / STATE_FILE
        if not state_file.is_file():
            raise FileNotFoundError(f"not a complete training checkpoint (no {STATE_FILE}): {path}")
        state = json.loads(state_file.read_text())
        if state["num_processes"] != self.accelerator.num_processes:
            raise ValueError(
                f"{path}: saved with {state['num_processes']} processes, resuming with "
                f"{self.accelerator.num_processes}: the data order would differ"
            )
        saved_stats = NormalizationStats.load(path / "stats.json")
        if saved_stats.to_dict() != self.stats.to_dict():
            raise ValueError(f"{path}: normalization statistics differ from {self.stats_path}")
        saved_sharding = state.get("sharding", "none")
        if saved_sharding != self.config.train.sharding:
            raise ValueError(
                f"{path}: saved with train.sharding={saved_sharding}, resuming with "
                f"{self.config.train.sharding} (start from its exported model instead: model.init_checkpoint)"
            )
        self.accelerator.load_state(str(path / "training_state"))
        if self.shards is not None:
            sharding.load(path / "training_state" / "sharded", self.shards, self.optimizer)
        self.step = int(state["step"])


def latest_checkpoint(root: Path) -> Path | None:
    done = sorted(p for p in Path(root).glob("step_*") if (p / STATE_FILE).is_file())
    return done[-1] if done else None


def _flat_hparams(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flat_hparams(v, key + "/"))
        elif isinstance(v, (int, float, str, bool)):
            out[key] = v
        else:
            out[key] = str(v)
    return out
