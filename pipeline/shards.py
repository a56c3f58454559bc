"""shards: the packed samples of every current topic, with each image's JPEG bytes copied in from the keyframes
stage, published as an immutable set of Parquet shards (storage/shards.py). The keyframes results it copies from
are among its reads, so a re-encoded keyframe makes the shards stale even when every table between them came out
the same; a shard is rewritten only when a topic it holds changed."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pyarrow.compute as pc

from pipeline.engine.stage import UnitWork
from pipeline.records import StageOutput
from storage.shards import Topic, publish_shards, resolve_images
from storage.tables import digest

VERSION = 2


def keyframe_reader(work: UnitWork) -> Callable[[str, int], bytes]:
    """JPEG bytes by (video, keyframe); samples visit videos in input order, so one video is held at a time."""
    held: dict[str, dict[int, bytes]] = {}

    def keyframe_bytes(video_id: str, keyframe_id: int) -> bytes:
        if video_id not in held:
            held.clear()
            table = work.read("keyframes", video_id).select(["keyframe_id", "jpeg"])
            held[video_id] = dict(zip(table["keyframe_id"].to_pylist(), table["jpeg"].to_pylist(), strict=True))
        return held[video_id][keyframe_id]

    return keyframe_bytes


def _topic(work: UnitWork, topic_id: str, video_ids: list[str], read_bytes: Callable[[str, int], bytes]) -> Topic:
    parts = [work.fingerprints[("pack", topic_id)], *(work.fingerprints[("keyframes", v)] for v in video_ids)]

    def rows() -> Iterator[dict[str, Any]]:
        return resolve_images(work.read("pack", topic_id).to_pylist(), read_bytes)

    def estimated_bytes() -> int:
        jpegs = sum(pc.sum(pc.binary_length(work.read("keyframes", v)["jpeg"])).as_py() or 0 for v in video_ids)
        return jpegs + work.read("pack", topic_id).nbytes

    return Topic(topic_id, digest(parts), rows, estimated_bytes)


def run(work: UnitWork) -> StageOutput:
    if work.out is None:
        raise ValueError("the shards stage publishes into an output folder and was given none")
    read_bytes = keyframe_reader(work)
    topics = [_topic(work, topic_id, video_ids, read_bytes) for topic_id, video_ids in work.payload]
    cfg = work.config.shards
    entries = publish_shards(work.out, topics, cfg.target_bytes, cfg.keep_superseded_sets)
    rows = [{key: entry[key] for key in ("file", "samples", "bytes_estimate", "digest")} for entry in entries]
    return StageOutput(rows=rows, counters={"shards": len(rows), "samples": sum(row["samples"] for row in rows)})
