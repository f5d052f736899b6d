"""Policy node preprocessing on CPU: three 480x640 JPEG frames -> decode -> composite -> tensor.

The path the policy node takes for every prediction, with the same code: `image_decoding.decode` of
sensor_msgs/CompressedImage messages (sequentially, and on a thread pool of one worker per camera
as the node does), `CameraLayout.r1_lite().compose` (head 256x320 over two 128x160 wrists) and
`composite_to_tensor`. Frames are camera-like synthetic scenes (gradients, shapes, sensor noise)
encoded at JPEG quality 90; a pure-noise frame, far harder to decode than any camera image, is
reported separately as a worst case. Prints per-stage and total medians / p95 in milliseconds.

torch runs with --torch-threads intra-op threads (default 1): the tensor conversion is 0.4 M
values, and on a shared CPU OpenMP's spinning worker threads cost more than they save.

    source scripts/env.sh && python benchmarks/preprocessing.py --runs 200
"""

from __future__ import annotations

import argparse
import statistics
import time
from concurrent.futures import ThreadPoolExecutor

import cv2
import numpy as np
import torch
from sensor_msgs.msg import CompressedImage

from fastwam import image_decoding
from fastwam.camera import CameraLayout, composite_to_tensor

KEYS = ("head", "wrist_left", "wrist_right")


def camera_like_frame(seed: int, height: int = 480, width: int = 640) -> np.ndarray:
    """A 480x640 RGB scene with the statistics of a camera image: smooth areas, edges, noise."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    image = np.stack([x / width * 200 + 30, y / height * 180 + 40, (x + y) / (width + height) * 150 + 60], -1)
    for _ in range(25):  # objects: filled shapes of random colours
        colour = rng.integers(0, 256, 3).tolist()
        centre = (int(rng.integers(0, width)), int(rng.integers(0, height)))
        if rng.random() < 0.5:
            cv2.circle(image, centre, int(rng.integers(10, 90)), colour, -1)
        else:
            size = rng.integers(20, 160, 2)
            cv2.rectangle(image, centre, (centre[0] + int(size[0]), centre[1] + int(size[1])), colour, -1)
    image = cv2.GaussianBlur(image, (5, 5), 1.5)
    image += rng.normal(0, 4, image.shape)  # sensor noise
    return np.clip(image, 0, 255).astype(np.uint8)


def jpeg_msg(rgb: np.ndarray, quality: int = 90) -> CompressedImage:
    ok, data = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
    assert ok
    return CompressedImage(format="jpeg", data=data.tobytes())


def summarize(name: str, samples: list[float]) -> str:
    ordered = sorted(samples)
    p95 = ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))]
    return f"{name:<28} median {statistics.median(ordered):7.2f} ms   p95 {p95:7.2f} ms"


def run(
    msgs: dict[str, CompressedImage], runs: int, pool: ThreadPoolExecutor | None
) -> dict[str, list[float]]:
    layout = CameraLayout.r1_lite()
    times: dict[str, list[float]] = {"decode": [], "composite": [], "tensor": [], "total": []}
    for i in range(runs + 10):
        t0 = time.perf_counter()
        if pool is None:
            images = {k: image_decoding.decode(msgs[k]) for k in KEYS}
        else:
            images = dict(zip(KEYS, pool.map(image_decoding.decode, [msgs[k] for k in KEYS])))
        t1 = time.perf_counter()
        composite = layout.compose(images)
        t2 = time.perf_counter()
        tensor = composite_to_tensor(composite)
        t3 = time.perf_counter()
        assert tensor.shape == (3, 384, 320)
        if i >= 10:  # warm-up: first decodes allocate
            for key, value in zip(times, (t1 - t0, t2 - t1, t3 - t2, t3 - t0)):
                times[key].append(value * 1e3)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--torch-threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.torch_threads)
    print(
        f"OpenCV {cv2.__version__} ({cv2.getNumThreads()} threads), torch {torch.__version__} "
        f"({torch.get_num_threads()} threads), cv_bridge: {image_decoding.CvBridge is not None}"
    )
    scenes = {k: jpeg_msg(camera_like_frame(i)) for i, k in enumerate(KEYS)}
    noise = {
        k: jpeg_msg(np.random.default_rng(i).integers(0, 256, (480, 640, 3), dtype=np.uint8))
        for i, k in enumerate(KEYS)
    }
    with ThreadPoolExecutor(max_workers=len(KEYS)) as pool:
        for label, msgs in (("camera-like", scenes), ("pure noise (worst case)", noise)):
            sizes = ", ".join(f"{len(m.data) / 1024:.0f} KB" for m in msgs.values())
            print(f"\n{label} frames, 3 x 480x640 JPEG q90 ({sizes}), {args.runs} runs")
            for mode, executor in (("sequential decode", None), ("parallel decode (node)", pool)):
                times = run(msgs, args.runs, executor)
                print(f"  {mode}")
                for stage, samples in times.items():
                    print("    " + summarize(stage, samples))


if __name__ == "__main__":
    main()
