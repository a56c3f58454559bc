"""keyframes: a sampled frame becomes a keyframe when it shows new content: its SSIM to the last keyframe drops
below a threshold, and aligned to that keyframe (a zoom, a scroll or a pan undone) more than a small share of it
still differs.

The video is decoded once, one sampled frame at a time: SSIM and the alignment run on small grayscale copies, and a
chosen frame is stored as JPEG at full resolution while it is in memory. A build-up step that adds a bullet changes
a few per cent of the aligned frame; a slow zoom, once aligned, changes next to nothing, so it adds no keyframe
until it is too large to align (then one).
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Iterator
from typing import Any

import cv2
import numpy as np
from skimage.metrics import structural_similarity

from configs.schema import KeyframesConfig
from pipeline.engine.stage import UnitWork
from pipeline.frames import changed_share, encode_jpeg
from pipeline.media import sample_frames, sample_time, scaled_size
from pipeline.records import StageOutput

VERSION = 6


def choose_keyframes(frames: Iterable[np.ndarray], cfg: KeyframesConfig) -> Iterator[tuple[int, float | None]]:
    """Yield (sample index, SSIM to the previous keyframe) for each frame that starts new visual content; frames
    come at `motion_width` and are compared by SSIM at `ssim_width`."""
    last: tuple[np.ndarray, np.ndarray] | None = None
    for index, frame in enumerate(frames):
        height = max(1, round(frame.shape[0] * cfg.ssim_width / frame.shape[1]))
        small = cv2.resize(frame, (cfg.ssim_width, height), interpolation=cv2.INTER_AREA)
        if last is None:
            last = frame, small
            yield index, None
            continue
        similarity = float(structural_similarity(last[1], small, data_range=255))
        if similarity >= cfg.ssim_threshold:
            continue
        moved = changed_share(last[0], frame, cfg.motion_pixel_difference)
        if moved is not None and moved <= cfg.motion_max_changed_share:
            continue
        last = frame, small
        yield index, similarity


def keyframe_name(video_id: str, clip: dict[str, Any], n: int) -> str:
    """The published naming: `video_id@start_end#n.jpg` with the clip span in seconds."""
    return f"{video_id}@{clip['start']:.1f}_{clip['end']:.1f}#{n}.jpg"


def extract_keyframes(
    path: str, video_id: str, width: int, height: int, clips: list[dict[str, Any]], cfg: KeyframesConfig
) -> Iterator[dict[str, Any]]:
    """Keyframe records in time order, each named after the clip it falls in."""
    interval = cfg.sample_interval_seconds
    motion = scaled_size(width, height, cfg.motion_width)
    latest: list[np.ndarray] = []  # the full-resolution frame the chooser judged last

    def motion_frames() -> Iterator[np.ndarray]:
        for frame in sample_frames(path, interval, scaled_size(width, height, cfg.max_width), gray=False):
            latest[:] = [frame]
            yield cv2.resize(cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY), motion, interpolation=cv2.INTER_AREA)

    clip_starts = [clip["start"] for clip in clips]
    per_clip: dict[int, int] = {}
    # One decode: the chooser pulls one frame at a time and yields a keyframe before it pulls the next, so the
    # frame it names is the one in `latest`, encoded while it is still in memory.
    for keyframe_id, (index, similarity) in enumerate(choose_keyframes(motion_frames(), cfg)):
        frame = latest[0]
        time = sample_time(index, interval)
        clip = clips[max(0, bisect.bisect_right(clip_starts, time) - 1)]
        n = per_clip.get(clip["clip_id"], 0)
        per_clip[clip["clip_id"]] = n + 1
        yield {
            "keyframe_id": keyframe_id,
            "clip_id": clip["clip_id"],
            "name": keyframe_name(video_id, clip, n),
            "time": time,
            "ssim_to_previous": similarity,
            "jpeg": encode_jpeg(frame, cfg.jpeg_quality),
            "width": frame.shape[1],
            "height": frame.shape[0],
        }


def run(work: UnitWork) -> StageOutput:
    probe = work.inputs["probe"].to_pylist()[0]
    clips = work.inputs["clips"].to_pylist()
    rows = list(
        extract_keyframes(
            work.media_path, work.video.video_id, probe["width"], probe["height"], clips, work.config.keyframes
        )
    )
    return StageOutput(rows=rows, counters={"keyframes": len(rows)})
