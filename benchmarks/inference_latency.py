"""Inference latency of Fast-WAM vs the Joint and IDM variants, side by side in one run.

Times, per variant, over --runs calls (after --warmup): text encode (uncached), VAE encode of the
current composite, video prefix, the action phase (and per action step), and the total a robot
sees per call (instruction cached: preprocess + VAE + prefix + actions). Medians and p95; CUDA is
synchronised before every clock read. Weights are random (latency does not depend on them); the
same seed gives all variants identical weights.

    python benchmarks/inference_latency.py --preset small --device cpu --runs 10
    python benchmarks/inference_latency.py --preset wan22-5b --device cuda --dtype bfloat16 \
        --compile torch_compile        # fused Wan block in CUDA graphs, graphed VAE (the fastest)
    python benchmarks/inference_latency.py --preset wan22-5b --device cuda --dtype bfloat16 \
        --wan-dir /models/Wan2.2-TI2V-5B-Diffusers          # real frozen components
    python benchmarks/inference_latency.py --preset wan22-5b --device cuda --dtype bfloat16  # all random

``--compile`` selects how the cached prefix + action loop run (fast_wam and IDM's action stage):
none (static loop, eager), cudagraph (captured CUDA graphs; eager replay on CPU) or torch_compile
(the inductor-fused Wan block, inside those graphs on CUDA). The capturing modes also graph the VAE
encode on CUDA, as ``FastWAMPolicy`` does.
After the timed runs the action chunk of the optimized path is compared with the eager reference
(the tests' oracle ``ros2_ws/src/fastwam_policy/test/model_reference.py``: ``build_action_cache`` +
``sample_actions``, module by module) on the same noise: max abs diff.
On CUDA the peak allocated memory per variant is reported.

Joint and IDM are the reference imagine-then-execute implementations (a full masked pass over
[first frame, future video(, actions)] per denoising step, as in the paper's controlled variants).
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from fastwam.camera import CameraLayout, composite_to_tensor
from fastwam.model import Context, FastWAM, WanComponents, build_random_components
from fastwam.model.action_loop import COMPILE_MODES, ActionLoop
from fastwam.model.wan import FirstFrameCausalConv, build_tokenizer
from fastwam.model_config import PRESETS, preset, wan22_vae

# Wan2.2-TI2V-5B frozen parts' architecture, for an all-random full-size run without the weights.
WAN22_VAE = wan22_vae(
    base_dim=160,
    decoder_base_dim=256,
    z_dim=48,
    dim_mult=[1, 2, 4, 4],
    num_res_blocks=2,
    attn_scales=[],
    latents_mean=[0.0] * 48,
    latents_std=[1.0] * 48,
)
UMT5_XXL = dict(
    d_model=4096, d_kv=64, d_ff=10240, num_layers=24, num_heads=64, feed_forward_proj="gated-gelu"
)


def layout_from_arg(arg: str) -> CameraLayout:
    if arg == "r1_lite":
        return CameraLayout.r1_lite()
    if arg == "libero":
        return CameraLayout.libero()
    # "row:N:HxW": N cameras of HxW in one row
    _, n, size = arg.split(":")
    h, w = (int(x) for x in size.split("x"))
    return CameraLayout.row(tuple(f"cam{i}" for i in range(int(n))), h, w)


def components_for(args, cfg, device, dtype, vae_dtype) -> WanComponents:
    if args.wan_dir:
        comp = WanComponents.from_pretrained(args.wan_dir, cfg.text_max_length, device=device, dtype=dtype)
        comp.vae.to(device, vae_dtype)
        return comp
    # Random weights are drawn on the target device: a full-size UMT5-XXL initialised on the CPU
    # in fp32 takes minutes and 23 GB of host memory.
    with torch.device(device):
        if cfg.vae is not None:
            comp = build_random_components(cfg)
        else:
            from diffusers import AutoencoderKLWan
            from transformers import UMT5Config, UMT5EncoderModel

            tok = build_tokenizer(1000)
            te = UMT5EncoderModel(UMT5Config(vocab_size=256384, **UMT5_XXL))
            comp = WanComponents(AutoencoderKLWan(**WAN22_VAE), te, tok, cfg.text_max_length)
    comp.vae.to(device, vae_dtype)
    comp.text_encoder.to(device, dtype)
    return comp


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


def composite_video(layout: CameraLayout, images, device) -> torch.Tensor:
    """Camera images -> the one-frame composite clip [1, 3, 1, H, W] in [-1, 1] on ``device``."""
    return composite_to_tensor(layout.compose(images))[None, :, None].to(device)


@torch.no_grad()
def contexts(model, comp, instruction, state, cfg_scale: float):
    """The instruction's context and, with CFG, the empty prompt's (both with the state token)."""
    embeds, mask = comp.encode_text([instruction])
    ctx = model.with_state(model.encode_instruction(embeds, mask), state)
    if cfg_scale == 1.0:
        return ctx, None
    ue, um = comp.encode_text([""], template=False)
    return ctx, model.with_state(model.encode_instruction(ue, um), state)


def count_flops(model, comp, layout, images, instruction, state, args) -> dict[str, int]:
    """FLOPs of one call (instruction cached): the VAE encode and the model (prefix + actions)."""
    from torch.utils.flop_counter import FlopCounterMode

    video = composite_video(layout, images, model.device)
    ctx, uncond = contexts(model, comp, instruction, state, args.cfg_scale)
    with FlopCounterMode(display=False) as vae_counter, FirstFrameCausalConv():
        # encode_video's convolutions, without its CPU kernel routing: the counter does not know
        # the oneDNN conv used on CPU.
        comp.vae.encode(video.to(next(comp.vae.parameters()).dtype))
    latents = comp.encode_video(video)
    with FlopCounterMode(display=False) as model_counter:
        # Eager: dynamo refuses to trace under the counter's dispatch mode (the compiled loop would
        # log a failure and fall back to eager for good).
        gen = torch.Generator(device=model.device).manual_seed(0)
        model.infer(latents, ctx, uncond, generator=gen, compile="none")
    return {"vae": vae_counter.get_total_flops(), "model": model_counter.get_total_flops()}


def _model_reference():
    """The tests' eager module-by-module oracle, loaded by path (the test folder is no package)."""
    path = Path(__file__).resolve().parents[1] / "ros2_ws/src/fastwam_policy/test/model_reference.py"
    spec = importlib.util.spec_from_file_location("model_reference", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@torch.no_grad()
def optimized_vs_eager(model, comp, layout, images, instruction, state, args) -> tuple[float, float]:
    """Max abs difference of the action chunk: the timed path (static loop, --compile) vs the
    module-by-module reference (build_action_cache + sample_actions), same inputs, same noise."""
    video = composite_video(layout, images, model.device)
    latents = comp.encode_video(video).to(model.dtype)
    ctx, uncond = contexts(model, comp, instruction, state, args.cfg_scale)
    gen = torch.Generator(device=model.device)
    fast, _ = model.infer(latents, ctx, uncond, generator=gen.manual_seed(1))
    full = ctx if args.cfg_scale == 1.0 else Context.cat([ctx, uncond])
    prefix = latents if args.cfg_scale == 1.0 else torch.cat([latents, latents])
    reference = _model_reference()
    cache = reference.build_action_cache(model, prefix, full)
    ref = reference.sample_actions(model, cache, 1, cfg_scale=args.cfg_scale, generator=gen.manual_seed(1))
    return (fast - ref).abs().max().item(), ref.abs().max().item()


@torch.no_grad()
def profile_kernels(model, comp, layout, images, instruction, state, args) -> None:
    """Kernel time of fast_wam's prefill + Euler loop, run uncaptured (same kernels as the graphs)."""
    from torch.profiler import ProfilerActivity, profile

    video = composite_video(layout, images, model.device)
    latents = comp.encode_video(video).to(model.dtype)
    ctx, _ = contexts(model, comp, instruction, state, 1.0)
    model.infer(latents, ctx)  # builds (and compiles) the loop
    loop = next(iter(model._action_loops.values()))
    capture, loop.capture = loop.capture, False
    noise = torch.randn(1, model.config.action_horizon, model.config.action_dim, device=model.device)
    for phase, fn in (
        ("prefix", lambda: loop.prefill(latents, ctx)),
        ("action loop", lambda: loop.sample(noise)),
    ):
        fn()
        torch.cuda.synchronize()
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            fn()
            torch.cuda.synchronize()
        events = [e for e in prof.key_averages() if e.device_type.name == "CUDA"]
        total = sum(e.self_device_time_total for e in events) / 1e3
        count = sum(e.count for e in events)
        print(f"\n{phase}: {count} kernels, {total:.2f} ms of kernel time (uncaptured)")
        for e in sorted(events, key=lambda e: -e.self_device_time_total)[: args.profile]:
            print(f"  {e.self_device_time_total / 1e3:8.3f} ms {e.count:6d}x  {e.key[:110]}")
    loop.capture = capture


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="small", choices=sorted(PRESETS))
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    ap.add_argument(
        "--vae-dtype",
        default="float32",
        choices=["float32", "bfloat16", "float16"],
        help="VAE encoder dtype (Wan's pipelines keep the VAE in float32)",
    )
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--layout", default="r1_lite", help="r1_lite | libero | row:N:HxW")
    ap.add_argument("--runs", type=int, default=None, help="timed runs (default: 100 on CUDA, 10 on CPU)")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--variants", default="fast_wam,joint,idm")
    ap.add_argument("--cfg-scale", type=float, default=1.0)
    ap.add_argument("--wan-dir", default=None, help="Wan2.2-Diffusers directory for the frozen components")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = default)")
    ap.add_argument("--compile", default="none", choices=list(COMPILE_MODES))
    ap.add_argument(
        "--inductor-mode",
        default=None,
        help="torch.compile mode of the fused Wan block under --compile torch_compile "
        "(e.g. max-autotune-no-cudagraphs; default: inductor's default)",
    )
    ap.add_argument(
        "--profile",
        type=int,
        default=0,
        metavar="N",
        help="after timing, profile fast_wam's prefix + action loop with its graphs off and print the "
        "N most expensive GPU kernels (where the time goes inside the graphs)",
    )
    ap.add_argument(
        "--cudnn-benchmark", action="store_true", help="let cuDNN pick the fastest VAE conv algorithms"
    )
    ap.add_argument(
        "--count-flops",
        action="store_true",
        help="also count each variant's FLOPs per call (torch FlopCounterMode: matmuls, convs, attention)",
    )
    args = ap.parse_args()

    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.backends.cudnn.benchmark = args.cudnn_benchmark
    ActionLoop.inductor_mode = args.inductor_mode
    if args.runs is None:
        args.runs = 100 if device.type == "cuda" else 10
    dtype = getattr(torch, args.dtype)
    layout = layout_from_arg(args.layout)
    variants = args.variants.split(",")
    base = preset(args.preset, action_init="random", num_inference_steps=args.steps, cfg_scale=args.cfg_scale)

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    comp = components_for(args, base, device, dtype, getattr(torch, args.vae_dtype))
    comp.capture_encode = args.compile != "none"  # as FastWAMPolicy does: the VAE encode graphed too
    rng = np.random.default_rng(0)
    images = {k: rng.integers(0, 256, (480, 640, 3), dtype=np.uint8) for k in layout.keys}
    instruction = "fold the towel"
    print(
        f"preset={args.preset} device={device} dtype={args.dtype} vae={args.vae_dtype} steps={args.steps} "
        f"composite={layout.height}x{layout.width} runs={args.runs} threads={torch.get_num_threads()} "
        f"compile={args.compile}"
    )
    # All variants are built first and run round-robin, so that load from other processes (timing
    # on a shared CPU is noisy) hits them alike.
    models = {}
    for variant in variants:
        torch.manual_seed(0)
        with torch.device(device):  # drawn on the device (a full-size model is 6 B parameters)
            models[variant] = FastWAM(base.replace(variant=variant)).to(dtype).eval()
        models[variant].compile_mode = args.compile
    state = torch.zeros(1, base.state_dim, device=device) if base.state_dim else None
    keys = ("text_encode", "vae_encode", "prefix", "action", "step", "total")
    results: dict[str, dict[str, list[float]]] = {v: {k: [] for k in keys} for v in variants}
    peak_mib: dict[str, float] = dict.fromkeys(variants, 0.0)
    gen = torch.Generator(device=device).manual_seed(0)
    with torch.no_grad():
        for i in range(args.warmup + args.runs):
            for variant, model in models.items():
                if device.type == "cuda":
                    torch.cuda.reset_peak_memory_stats(device)
                sync()
                t0 = time.perf_counter()
                embeds, mask = comp.encode_text([instruction])
                text = model.encode_instruction(embeds, mask)
                uncond = None
                if args.cfg_scale != 1.0:
                    ue, um = comp.encode_text([""], template=False)
                    uncond = model.with_state(model.encode_instruction(ue, um), state)
                sync()
                t1 = time.perf_counter()
                video = composite_video(layout, images, device)
                latents = comp.encode_video(video)
                sync()
                t2 = time.perf_counter()
                _, phases = model.infer(
                    latents, model.with_state(text, state), uncond, generator=gen, sync=sync
                )
                sync()
                t3 = time.perf_counter()
                if device.type == "cuda":
                    peak = torch.cuda.max_memory_allocated(device) / 2**20
                    peak_mib[variant] = max(peak_mib[variant], peak)
                if i < args.warmup:
                    continue
                times = results[variant]
                times["text_encode"].append((t1 - t0) * 1e3)
                times["vae_encode"].append((t2 - t1) * 1e3)
                times["prefix"].append(phases["prefix"])
                times["action"].append(phases["action"])
                times["step"].append(phases["action"] / args.steps)
                times["total"].append((t3 - t1) * 1e3)  # per robot call: instruction cached

    cols = list(next(iter(results.values())))
    print(f"\n{'variant':<10} " + " ".join(f"{c + ' med/p95 ms':>24}" for c in cols))
    for variant, times in results.items():
        cells = [f"{statistics.median(times[c]):10.2f} /{pct(times[c], 95):10.2f}" for c in cols]
        print(f"{variant:<10} " + " ".join(f"{c:>24}" for c in cells))
    if args.count_flops:
        print()
        flops = {}
        for variant, model in models.items():
            flops[variant] = count_flops(model, comp, layout, images, instruction, state, args)
            print(
                f"{variant:<10} GFLOP per call: vae {flops[variant]['vae'] / 1e9:.2f}, "
                f"model {flops[variant]['model'] / 1e9:.2f}"
            )
        if "fast_wam" in flops:
            f0 = flops["fast_wam"]
            for variant, f in flops.items():
                if variant != "fast_wam":
                    print(
                        f"{variant} / fast_wam FLOPs: total {(f['vae'] + f['model']) / (f0['vae'] + f0['model']):.1f}x, "
                        f"model only {f['model'] / f0['model']:.1f}x"
                    )
    if device.type == "cuda":
        print("\npeak memory allocated (MiB): " + ", ".join(f"{v} {m:.0f}" for v, m in peak_mib.items()))
    for variant in ("fast_wam", "no_cotrain"):
        if variant in models:
            diff, ref = optimized_vs_eager(models[variant], comp, layout, images, instruction, state, args)
            print(
                f"{variant} action chunk, optimized ({args.compile}) vs eager reference: "
                f"max abs diff {diff:.3e} (max |eager| {ref:.2f})"
            )
    if "fast_wam" in results:

        def model_ms(times):  # the DiTs only: prefix + action phase, per run
            return statistics.median([p + a for p, a in zip(times["prefix"], times["action"])])

        fast = results["fast_wam"]
        print()
        for variant, times in results.items():
            if variant != "fast_wam":
                total = statistics.median(times["total"]) / statistics.median(fast["total"])
                model = model_ms(times) / model_ms(fast)
                print(
                    f"{variant} / fast_wam: total latency {total:.1f}x, model only (prefix + actions) {model:.1f}x"
                )

    if args.profile and "fast_wam" in models and device.type == "cuda":
        profile_kernels(models["fast_wam"], comp, layout, images, instruction, state, args)


if __name__ == "__main__":
    main()
