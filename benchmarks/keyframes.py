"""Keyframe extraction speed: the streamed low-resolution SSIM pass against a naive full-resolution baseline.

Both run in this process on the same video, so the ratio holds on a noisy shared machine where absolute times
drift. The baseline decodes every sampled frame at full resolution in RGB and compares full-size grayscale
frames, the way a first implementation would.

    .venv/bin/python benchmarks/keyframes.py [VIDEO] [--repeat N]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from configs import load_config
from pipeline.keyframes import choose_keyframes, extract_keyframes
from pipeline.media import sample_frames
from pipeline.probe import probe_video

SAMPLE = Path(__file__).resolve().parents[1] / "tests" / "data" / "lecture.mp4"


def baseline(path: str, width: int, height: int, interval: float, threshold: float) -> int:
    frames = sample_frames(path, interval, (width, height), gray=False)
    gray = (frame.mean(axis=2).astype(np.uint8) for frame in frames)
    return len(list(choose_keyframes(gray, threshold)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("video", nargs="?", default=str(SAMPLE))
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    config = load_config(None)
    probe = probe_video(args.video, config.probe)
    clips = [{"clip_id": 0, "start": 0.0, "end": probe["duration"]}]
    cfg = config.keyframes
    timings: dict[str, list[float]] = {"pipeline": [], "baseline": []}
    for _ in range(args.repeat):
        started = time.perf_counter()
        chosen = len(list(extract_keyframes(args.video, "bench", probe["width"], probe["height"], clips, cfg)))
        timings["pipeline"].append(time.perf_counter() - started)
        started = time.perf_counter()
        naive = baseline(args.video, probe["width"], probe["height"], cfg.sample_interval_seconds, cfg.ssim_threshold)
        timings["baseline"].append(time.perf_counter() - started)
    best = {name: min(values) for name, values in timings.items()}
    print(f"video: {args.video} ({probe['duration']:.0f} s, {probe['width']}x{probe['height']})")
    for name, count in (("pipeline", chosen), ("baseline", naive)):
        rate = probe["duration"] / best[name]
        print(f"{name}: {best[name]:.2f} s, {count} keyframes, {rate:.0f} s of video/s")
    print(f"speed-up: {best['baseline'] / best['pipeline']:.2f}x (best of {args.repeat})")


if __name__ == "__main__":
    main()
