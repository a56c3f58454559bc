"""pack: the fragments of one topic, in input order, joined into samples within an image and token budget.

A clip is never split; consecutive videos in one sample are separated by the end-of-video marker text.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from itertools import groupby
from typing import Any, NamedTuple

from configs.schema import PackConfig
from pipeline.engine.stage import UnitWork
from pipeline.models.tokenizer import count_tokens
from pipeline.records import StageOutput, VideoInput

VERSION = 2
# The collection front's table of found videos, scores and reasons, read for the samples' source details.
COLLECTED_STAGE = "filter_meta"
DUPLICATE_CONTENT = "duplicate_content"


class TopicMembers(NamedTuple):
    """What a pack unit packs: the topic's finished videos in input order, and those left out as copies."""

    topic: str
    videos: list[VideoInput]
    repeats: list[dict[str, str]]


def repeat_record(video: VideoInput, first: VideoInput) -> dict[str, str]:
    return {"video_id": video.video_id, "source": video.source, "duplicate_of": first.video_id,
            "reason": DUPLICATE_CONTENT}  # fmt: skip


@dataclass
class _Sample:
    images: list[dict[str, Any] | None] = field(default_factory=list)
    texts: list[str | None] = field(default_factory=list)
    text_ocr_list: list[str | None] = field(default_factory=list)
    clips: list[dict[str, Any]] = field(default_factory=list)
    videos: list[str] = field(default_factory=list)
    tokens: int = 0

    @property
    def image_num(self) -> int:
        return sum(image is not None for image in self.images)

    def add_text(self, text: str, text_ocr: str, tokens: int) -> None:
        self.images.append(None)
        self.texts.append(text)
        self.text_ocr_list.append(text_ocr)
        self.tokens += tokens


def _clips(video: VideoInput, fragment: list[dict[str, Any]], cfg: PackConfig) -> Iterator[dict[str, Any]]:
    for clip_id, rows in groupby(fragment, key=lambda row: row["clip_id"]):
        rows = list(rows)
        texts = [row["text"] for row in rows if row["kind"] == "text"]
        yield {
            "video": video,
            "span": {
                "video_id": video.video_id,
                "clip_id": clip_id,
                "start": rows[0]["clip_start"],
                "end": rows[0]["clip_end"],
            },
            "rows": rows,
            "images": sum(row["kind"] == "image" for row in rows),
            "tokens": count_tokens(cfg.tokenizer, texts),
        }


def pack_topic(
    topic: str,
    fragments: list[tuple[VideoInput, list[dict[str, Any]]]],
    details: dict[str, dict[str, Any]],
    cfg: PackConfig,
) -> list[dict]:
    """Samples of one topic as rows of the pack table; `details` (source, url, title, ...) go into the metadata."""
    marker_tokens = count_tokens(cfg.tokenizer, [cfg.end_of_video_marker])
    samples: list[_Sample] = []
    current = _Sample()
    for video, fragment in fragments:
        for clip in _clips(video, sorted(fragment, key=lambda row: row["position"]), cfg):
            new_video = bool(current.videos) and current.videos[-1] != video.video_id
            extra_tokens = clip["tokens"] + (marker_tokens if new_video else 0)
            over_images = current.image_num + clip["images"] > cfg.max_images_per_sample
            over_tokens = current.tokens + extra_tokens > cfg.max_tokens_per_sample
            if current.clips and (over_images or over_tokens):
                samples.append(current)
                current, new_video = _Sample(), False
            if new_video:
                current.add_text(cfg.end_of_video_marker, cfg.end_of_video_marker, marker_tokens)
            if not current.videos or current.videos[-1] != video.video_id:
                current.videos.append(video.video_id)
            current.clips.append(clip["span"])
            for row in clip["rows"]:
                if row["kind"] == "image":
                    current.images.append(
                        {"video_id": video.video_id, "keyframe_id": row["keyframe_id"], "name": row["image_name"],
                         "time": row["image_time"], "clip_id": row["clip_id"]}
                    )  # fmt: skip
                    current.texts.append(None)
                    current.text_ocr_list.append(None)
                else:
                    current.add_text(row["text"], row["text_ocr"], 0)
            current.tokens += clip["tokens"]
    if current.clips:
        samples.append(current)
    return [_row(index, topic, sample, details) for index, sample in enumerate(samples)]


def _row(index: int, topic: str, sample: _Sample, details: dict[str, dict[str, Any]]) -> dict[str, Any]:
    metadata = {
        "topic": topic,
        "source": "video2textbook",
        "videos": [{"video_id": video_id, **details.get(video_id, {})} for video_id in sample.videos],
        "clips": sample.clips,
        # Each image position's identity, so any reader traces an image to its video without the stage tables.
        "images": [{"position": position, **ref} for position, ref in enumerate(sample.images) if ref is not None],
    }
    return {
        "sample_index": index,
        "image_refs": sample.images,
        "segments": sample.texts,
        "text_ocr_list": sample.text_ocr_list,
        "metadata": json.dumps(metadata, sort_keys=True),
        "image_num": sample.image_num,
        "text_num": sum(text is not None for text in sample.texts),
        "token_num": sample.tokens,
    }


def source_details(video: VideoInput, collected: dict[str, Any] | None, fetched: dict[str, Any]) -> dict[str, Any]:
    """Where a video came from, for the samples' metadata: source, the search result that found it (title,
    channel, license, knowledge points) and what the download reported where the search said nothing."""
    found = collected or {}
    details = {
        key: found.get(key) or fetched.get(key)
        for key in ("url", "title", "channel", "license", "knowledge_points")
        if found.get(key) or fetched.get(key)
    }
    return {"source": video.source, **details}


def run(work: UnitWork) -> StageOutput:
    """One topic: the fragments of its videos whose interleave is current, in input order, without copies."""
    topic, videos, repeats = work.payload
    collected_ref = next((ref for ref in work.unit.reads if ref[0] == COLLECTED_STAGE), None)
    collected = {}
    if collected_ref is not None:
        collected = {row["video_id"]: row for row in work.read(*collected_ref).to_pylist()}
    fragments = [(video, work.read("interleave", video.video_id).to_pylist()) for video in videos]
    details = {
        video.video_id: source_details(
            video, collected.get(video.video_id), work.read("download", video.video_id).to_pylist()[0]
        )
        for video in videos
    }
    rows = pack_topic(topic, fragments, details, work.config.pack)
    counters = {"samples": len(rows), "images": sum(row["image_num"] for row in rows), DUPLICATE_CONTENT: len(repeats)}
    return StageOutput(rows=rows, counters=counters, values={"duplicates": repeats})
