"""interleave: one video as a fragment of positions, per clip its keyframes in time order, then its speech.

Only the keyframes frame_filter kept, in the clips whose images clip_filter kept, become image positions (and a
repeated slide whose first showing lost its images).
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from configs.schema import InterleaveConfig
from pipeline.engine.stage import UnitWork
from pipeline.keyframe_views import stand_ins
from pipeline.records import StageOutput

VERSION = 2


def interleave_video(
    clips: list[dict[str, Any]], keyframes: list[dict[str, Any]], ocr: list[dict[str, Any]], cfg: InterleaveConfig
) -> list[dict[str, Any]]:
    """Positions in reading order. An image position's `text_ocr` is its OCR; a text position's `text` is the
    clip's speech (its accepted `refined_asr`, else its ASR; `asr` keeps the ASR), and its `text_ocr` that speech
    followed by the OCR of its clip's images (the published `text_ocr_list`), each after `cfg.ocr_prefix`. A clip
    without keyframes keeps its text; a clip with neither is left out."""
    ocr_by_keyframe = {row["keyframe_id"]: row["text"] for row in ocr}
    keyframes_by_clip: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for keyframe in sorted(keyframes, key=lambda row: row["time"]):
        keyframes_by_clip[keyframe["clip_id"]].append(keyframe)
    positions: list[dict[str, Any]] = []
    for clip in sorted(clips, key=lambda row: row["start"]):
        span = {"clip_id": clip["clip_id"], "clip_start": clip["start"], "clip_end": clip["end"]}
        clip_ocr = []
        for keyframe in keyframes_by_clip[clip["clip_id"]]:
            text = ocr_by_keyframe.get(keyframe["keyframe_id"], "")
            clip_ocr.append(text)
            positions.append(
                {
                    **span,
                    "kind": "image",
                    "image_name": keyframe["name"],
                    "keyframe_id": keyframe["keyframe_id"],
                    "image_time": keyframe["time"],
                    "text": None,
                    "text_ocr": text,
                }
            )
        speech = (clip.get("refined_asr") or clip["asr"]).strip()
        if speech:
            prefix = cfg.ocr_prefix or ""
            text_ocr = cfg.ocr_separator.join([speech, *(prefix + text for text in clip_ocr if text)])
            positions.append(
                {
                    **span,
                    "kind": "text",
                    "image_name": None,
                    "keyframe_id": None,
                    "text": speech,
                    "text_ocr": text_ocr,
                    "asr": clip["asr"].strip(),
                }
            )
    return [{"position": index, **position} for index, position in enumerate(positions)]


def kept_images(
    keyframes: list[dict[str, Any]], frames: list[dict[str, Any]], clips: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """The keyframes that stay, in a clip whose images clip_filter kept: those frame_filter kept, and a repeat of a
    slide whose first showing was in a clip that lost its images (shown once, where it can be)."""
    dropped = {frame["keyframe_id"] for row in clips for frame in row["dropped_frames"]}
    kept_frames = {row["keyframe_id"] for row in frames if row["keep"]}
    image_clips = {row["clip_id"] for row in clips if row["keep_images"]}
    clip_of = {row["keyframe_id"]: row["clip_id"] for row in keyframes}
    shown_again: dict[int, int] = {}  # original -> the one repeat that shows it
    for repeat, original in sorted(stand_ins(keyframes, frames).items()):
        if clip_of[original] not in image_clips and clip_of[repeat] in image_clips:
            shown_again.setdefault(original, repeat)
    return [
        row
        for row in keyframes
        if row["clip_id"] in image_clips
        and row["keyframe_id"] not in dropped
        and (row["keyframe_id"] in kept_frames or row["keyframe_id"] in shown_again.values())
    ]


def run(work: UnitWork) -> StageOutput:
    refined = {row["clip_id"]: row["refined_asr"] for row in work.inputs["refine"].to_pylist() if row["accepted"]}
    rows = interleave_video(
        [{**clip, "refined_asr": refined.get(clip["clip_id"])} for clip in work.inputs["clips"].to_pylist()],
        kept_images(
            work.inputs["keyframes"].select(["keyframe_id", "clip_id", "name", "time"]).to_pylist(),
            work.inputs["frame_filter"].select(["keyframe_id", "keep", "duplicate_of"]).to_pylist(),
            work.inputs["clip_filter"].select(["clip_id", "keep_images", "dropped_frames"]).to_pylist(),
        ),
        work.inputs["ocr"].select(["keyframe_id", "text"]).to_pylist(),
        work.config.interleave,
    )
    images = sum(row["kind"] == "image" for row in rows)
    return StageOutput(rows=rows, counters={"images": images, "texts": len(rows) - images})
