"""frame_filter: which keyframes carry knowledge, with a reason for each.

First the low-information frames go: blank or near-uniform ones (pixel std), and those with too little text (OCR
characters) and too little detail (Canny edge density) to teach anything. Then OCR dedup, in time order, against the
previous kept keyframe only, so a slide that returns after others is kept again:
- the same text with nothing new (a slide caught twice, a zoom over it): `duplicate`, `duplicate_of` the kept one;
- the previous text kept and new text added (a slide built up piece by piece): a `build_up_step`, kept under
  `build_up: keep_all`; under `most_complete` the earlier step becomes `build_up_superseded`, `duplicate_of` the
  last step.
OCR cannot see handwriting or a drawing, so a frame is a `duplicate` only when its picture, aligned to the previous
kept keyframe's (a zoom or a scroll undone), is the same too. A changed picture under the same text is a
`build_up_step` when strokes were added and none erased (a whiteboard filling up), else a `distinct_picture` (two
boards under one printed banner). A frame with detail but no text is kept as `detail_without_text` unless its
picture repeats, or builds on, the previous kept one's.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from difflib import SequenceMatcher
from typing import Any

import cv2
import numpy as np

from configs.schema import FrameFilterConfig
from pipeline.engine.stage import UnitWork
from pipeline.frames import changed_share, edge_density, gray_frame, pixel_std
from pipeline.keyframe_views import texts_by_keyframe
from pipeline.records import StageOutput, funnel

VERSION = 3

KEPT_TEXT = "distinct_text"
KEPT_BUILD_UP = "build_up_step"
KEPT_FIGURE = "detail_without_text"
KEPT_PICTURE = "distinct_picture"
DROPPED_BLANK = "blank"
DROPPED_LOW_INFORMATION = "low_information"
DROPPED_DUPLICATE = "duplicate"
DROPPED_SUPERSEDED = "build_up_superseded"

_NOT_ALPHANUMERIC = re.compile(r"[\W_]+")


def comparable_text(text: str) -> str:
    """Lowercase letters and digits only: OCR drops and adds spaces and punctuation from one capture to the next."""
    return _NOT_ALPHANUMERIC.sub("", text.lower())


@dataclass(frozen=True)
class TextChange:
    """How a frame's OCR differs from the previous kept frame's, in comparable characters."""

    similarity: float  # difflib ratio, 1.0 = the same text
    new_chars: int  # characters of the new text that the previous one lacks
    lost_chars: int  # characters of the previous text the new one lacks
    previous_chars: int


def compare_text(previous: str, current: str) -> TextChange:
    before, after = comparable_text(previous), comparable_text(current)
    matcher = SequenceMatcher(None, before, after, autojunk=False)
    matched = sum(block.size for block in matcher.get_matching_blocks())
    return TextChange(matcher.ratio(), len(after) - matched, len(before) - matched, len(before))


def measure(jpeg: bytes, ocr_text: str, cfg: FrameFilterConfig) -> dict[str, Any]:
    gray = gray_frame(jpeg, cfg.analysis_width)
    ocr_chars = sum(not char.isspace() for char in ocr_text)
    return {
        "pixel_std": pixel_std(gray),
        "edge_density": edge_density(gray),
        "ocr_chars": ocr_chars,
        "has_text": ocr_chars >= cfg.min_ocr_chars,
    }


def low_information(stats: dict[str, Any], cfg: FrameFilterConfig) -> str | None:
    """The drop reason of a frame that shows too little, or None."""
    if stats["pixel_std"] <= cfg.blank_max_std:
        return DROPPED_BLANK
    if not stats["has_text"] and stats["edge_density"] < cfg.min_edge_density:
        return DROPPED_LOW_INFORMATION
    return None


def adds_strokes(previous: np.ndarray, current: np.ndarray, cfg: FrameFilterConfig) -> bool:
    """Whether what changed between the pictures is ink added (strokes, text, a drawing on the board) with little
    erased: a board or slide built up, not wiped and redrawn. Ink is what stands out from the picture's background
    (its median grey); a pixel or two of shift is tolerated."""

    def ink(gray: np.ndarray) -> np.ndarray:
        return np.abs(gray.astype(np.int16) - int(np.median(gray))) > cfg.pixel_difference

    def grown(mask: np.ndarray) -> np.ndarray:
        return cv2.dilate(mask.astype(np.uint8), np.ones((3, 3), np.uint8)) > 0

    before, after = ink(previous), ink(current)
    added, erased = int((after & ~grown(before)).sum()), int((before & ~grown(after)).sum())
    return added > 0 and erased <= cfg.build_up_max_lost_share * (added + erased)


def filter_keyframes(
    keyframes: list[dict[str, Any]], ocr_text: dict[int, str], cfg: FrameFilterConfig
) -> list[dict[str, Any]]:
    """One row per keyframe, in time order: keep, reason, duplicate_of and the measures behind them."""
    rows: list[dict[str, Any]] = []
    previous: dict[str, Any] | None = None  # the last kept keyframe
    previous_picture: np.ndarray | None = None
    for keyframe in sorted(keyframes, key=lambda row: row["time"]):
        text = ocr_text.get(keyframe["keyframe_id"], "")
        row = {
            "keyframe_id": keyframe["keyframe_id"],
            "clip_id": keyframe["clip_id"],
            "time": keyframe["time"],
            **measure(keyframe["jpeg"], text, cfg),
            "duplicate_of": None,
            "similarity": None,
            "new_chars": None,
            "changed_share": None,
        }
        rows.append(row)
        dropped = low_information(row, cfg)
        if dropped is not None:
            row["keep"], row["reason"] = False, dropped
            continue
        picture = gray_frame(keyframe["jpeg"], cfg.visual_width)
        if previous is None or previous_picture is None:
            row["keep"], row["reason"] = True, KEPT_TEXT if row["has_text"] else KEPT_FIGURE
            previous, previous_picture = row, picture
            continue
        row["changed_share"] = changed_share(previous_picture, picture, cfg.pixel_difference)
        same_picture = row["changed_share"] is not None and row["changed_share"] <= cfg.duplicate_max_changed_share
        if not row["has_text"] or not previous["has_text"]:
            if same_picture:
                row["keep"], row["reason"], row["duplicate_of"] = False, DROPPED_DUPLICATE, previous["keyframe_id"]
                continue
            both_textless = not row["has_text"] and not previous["has_text"]
            builds = both_textless and adds_strokes(previous_picture, picture, cfg)
            row["keep"], row["reason"] = (
                True,
                KEPT_BUILD_UP if builds else KEPT_TEXT if row["has_text"] else KEPT_FIGURE,
            )
            previous, previous_picture = row, picture
            continue
        change = compare_text(ocr_text.get(previous["keyframe_id"], ""), text)
        row["similarity"], row["new_chars"] = change.similarity, change.new_chars
        same_text = change.new_chars < cfg.min_new_chars and change.similarity >= cfg.duplicate_min_similarity
        if same_text and same_picture:
            row["keep"], row["reason"], row["duplicate_of"] = False, DROPPED_DUPLICATE, previous["keyframe_id"]
            continue
        if same_text:  # the text OCR reads did not change, the picture did: strokes added, or another board
            builds = adds_strokes(previous_picture, picture, cfg)
            row["keep"], row["reason"] = True, KEPT_BUILD_UP if builds else KEPT_PICTURE
            if builds and cfg.build_up == "most_complete":
                _supersede(rows, previous, row)
            previous, previous_picture = row, picture
            continue
        builds_on = change.new_chars >= cfg.min_new_chars and (
            change.lost_chars <= cfg.build_up_max_lost_share * change.previous_chars
        )
        row["keep"], row["reason"] = True, KEPT_BUILD_UP if builds_on else KEPT_TEXT
        if builds_on and cfg.build_up == "most_complete":
            _supersede(rows, previous, row)
        previous, previous_picture = row, picture
    return rows


def _supersede(rows: list[dict[str, Any]], earlier: dict[str, Any], later: dict[str, Any]) -> None:
    """`earlier` gives way to the more complete `later`, and so do the frames that pointed at it."""
    for row in rows:
        if row["duplicate_of"] == earlier["keyframe_id"]:
            row["duplicate_of"] = later["keyframe_id"]
    earlier["keep"], earlier["reason"], earlier["duplicate_of"] = False, DROPPED_SUPERSEDED, later["keyframe_id"]


def run(work: UnitWork) -> StageOutput:
    keyframes = work.inputs["keyframes"].select(["keyframe_id", "clip_id", "time", "jpeg"]).to_pylist()
    rows = filter_keyframes(keyframes, texts_by_keyframe(work.inputs["ocr"]), work.config.frame_filter)
    kept, reasons = [row["keep"] for row in rows], [row["reason"] for row in rows]
    kept_by_reason = Counter(reason for keep, reason in zip(kept, reasons, strict=True) if keep)
    counters = {f"kept_{reason}": count for reason, count in sorted(kept_by_reason.items())}
    return StageOutput(rows=rows, counters=counters, funnel=funnel("keyframes", kept, reasons))
