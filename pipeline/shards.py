"""shards: the packed samples of every current topic, with each image's JPEG bytes copied in from the keyframes
stage, published as self-contained Parquet shards. The keyframes results it copies from are among its reads, so a
re-encoded keyframe makes the shards stale even when every table between them came out the same."""

from __future__ import annotations

from collections.abc import Callable

from pipeline.engine.stage import UnitWork
from pipeline.records import StageOutput
from storage.shards import resolve_images, write_shards

VERSION = 1


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


def run(work: UnitWork) -> StageOutput:
    if work.out is None:
        raise ValueError("the shards stage publishes into an output folder and was given none")
    packs = [ref for ref in work.unit.reads if ref[0] == "pack"]
    samples = (row for ref in packs for row in work.read(*ref).to_pylist())
    written = write_shards(work.out, resolve_images(samples, keyframe_reader(work)), work.config.shards.target_bytes)
    return StageOutput(rows=written, counters={"shards": len(written), "samples": sum(s["samples"] for s in written)})
