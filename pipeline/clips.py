"""clips: ASR segments merged into clips of a bounded length that end at sentence boundaries.

Clips tile the video from 0 to its duration (a gap in speech belongs to the clip before it), so every
keyframe falls in exactly one clip.
"""

from __future__ import annotations

from typing import Any

from configs.schema import ClipsConfig
from pipeline.engine.stage import UnitWork
from pipeline.records import StageOutput

VERSION = 1


def merge_segments(segments: list[dict[str, Any]], duration: float, cfg: ClipsConfig) -> list[dict[str, Any]]:
    """Group consecutive segments: close a clip at a sentence end once it is `min_seconds` long, or before a
    segment that would push it past `max_seconds`; a video shorter than `min_seconds` is one clip."""
    if duration < cfg.min_seconds or not segments:
        return [_clip(0, 0.0, duration, segments)]
    groups: list[list[dict[str, Any]]] = []
    current: list[dict[str, Any]] = []
    clip_start = 0.0
    for segment in segments:
        if current and segment["end"] - clip_start > cfg.max_seconds:
            groups.append(current)
            current, clip_start = [], current[-1]["end"]
        current.append(segment)
        long_enough = segment["end"] - clip_start >= cfg.min_seconds
        if long_enough and segment["text"].rstrip().endswith(tuple(cfg.sentence_endings)):
            groups.append(current)
            current, clip_start = [], segment["end"]
    if current:
        groups.append(current)
    clips = []
    start = 0.0
    for index, group in enumerate(groups):
        end = duration if index == len(groups) - 1 else group[-1]["end"]
        clips.append(_clip(index, start, end, group))
        start = end
    return clips


def _clip(clip_id: int, start: float, end: float, segments: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "clip_id": clip_id,
        "start": round(start, 3),
        "end": round(end, 3),
        "asr": " ".join(segment["text"].strip() for segment in segments if segment["text"].strip()),
        "segment_ids": [segment["segment_id"] for segment in segments],
    }


def run(work: UnitWork) -> StageOutput:
    duration = work.inputs["probe"]["duration"][0].as_py()
    clips = merge_segments(work.inputs["asr"].to_pylist(), duration, work.config.clips)
    return StageOutput(rows=clips, counters={"clips": len(clips)})
