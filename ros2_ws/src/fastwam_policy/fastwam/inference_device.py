"""Where and how inference runs: resolving the policy node's `auto` device, dtype and compile mode.

`auto` means the fast choice for the machine: CUDA when there is one, bfloat16 and compiled layers
(torch_compile) there, float32 and eager on a CPU (bfloat16 matmuls are slow on most CPUs, and
inductor's compile time is not repaid there). Pure Python: the caller says whether CUDA is there.
"""

from __future__ import annotations

from dataclasses import dataclass

DTYPES = ("bfloat16", "float16", "float32")
# torch intra-op threads for inference on CPU. One: on a machine whose cores are busy with other work
# (a robot PC's drivers, the simulator rendering cameras, a recording, a build), torch's OpenMP threads
# spin-wait on each other while the scheduler runs someone else on the core they wait for. Measured
# with two busy-loop processes on a 2-core machine (benchmarks/inference_latency.py --preset sim
# --threads N, two runs each): a chunk takes 516 / 668 ms median on 1 thread, 5350 / 12390 ms on 2.
CPU_THREADS = 1


@dataclass(frozen=True)
class InferenceDevice:
    device: str  # a torch device string: cpu, cuda, cuda:N
    dtype: str  # one of DTYPES (torch attribute names)
    compile: str  # FastWAMPolicy's compile mode: none, cudagraph, torch_compile


def resolve_inference_device(device: str, dtype: str, compile: str, cuda_available: bool) -> InferenceDevice:
    """The settings with every `auto` replaced; ValueError naming the parameter for an unknown dtype.

    Compile modes are checked by `FastWAMPolicy`, which knows them."""
    if device == "auto":
        device = "cuda" if cuda_available else "cpu"
    on_cuda = device.startswith("cuda")
    if dtype == "auto":
        dtype = "bfloat16" if on_cuda else "float32"
    if dtype not in DTYPES:
        raise ValueError(f"parameter 'dtype' must be auto or one of {sorted(DTYPES)}, got {dtype!r}")
    if compile == "auto":
        compile = "torch_compile" if on_cuda else "none"
    return InferenceDevice(device, dtype, compile)
