"""frame_filter: which keyframes carry knowledge, with a reason for each.

First the low-information frames go: blank or near-uniform ones (pixel std), and those with too little text (OCR
characters) and too little detail (Canny edge density) to teach anything. Then OCR dedup, in time order, against the
previous kept keyframe only, so a slide that returns after others is kept again:
- the same text with nothing new (a slide caught twice, a zoom over it): `duplicate`, `duplicate_of` the kept one;
- the previous text kept and new text added (a slide built up piece by piece): a `build_up_step`, kept under
  `build_up: keep_all`; under `most_complete` the earlier step becomes `build_up_superseded`, `duplicate_of` the
  last step.
A frame with detail but no text (a figure) is kept as `detail_without_text`: OCR cannot compare it, SSIM already
found it different from the frame before.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from difflib import SequenceMatcher
from typing import Any

from configs.schema import FrameFilterConfig
from pipeline.engine.stage import UnitWork
from pipeline.frames import edge_density, gray_frame, pixel_std
from pipeline.keyframe_views import texts_by_keyframe
from pipeline.records import StageOutput, funnel

VERSION = 1

KEPT_TEXT = "distinct_text"
KEPT_BUILD_UP = "build_up_step"
KEPT_FIGURE = "detail_without_text"
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


def filter_keyframes(
    keyframes: list[dict[str, Any]], ocr_text: dict[int, str], cfg: FrameFilterConfig
) -> list[dict[str, Any]]:
    """One row per keyframe, in time order: keep, reason, duplicate_of and the measures behind them."""
    rows: list[dict[str, Any]] = []
    previous: dict[str, Any] | None = None  # the last kept keyframe
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
        }
        rows.append(row)
        dropped = low_information(row, cfg)
        if dropped is not None:
            row["keep"], row["reason"] = False, dropped
            continue
        if not row["has_text"] or previous is None or not previous["has_text"]:
            row["keep"], row["reason"] = True, KEPT_TEXT if row["has_text"] else KEPT_FIGURE
            previous = row
            continue
        change = compare_text(ocr_text.get(previous["keyframe_id"], ""), text)
        row["similarity"], row["new_chars"] = change.similarity, change.new_chars
        if change.new_chars < cfg.min_new_chars and change.similarity >= cfg.duplicate_min_similarity:
            row["keep"], row["reason"], row["duplicate_of"] = False, DROPPED_DUPLICATE, previous["keyframe_id"]
            continue
        builds_on = change.new_chars >= cfg.min_new_chars and (
            change.lost_chars <= cfg.build_up_max_lost_share * change.previous_chars
        )
        row["keep"], row["reason"] = True, KEPT_BUILD_UP if builds_on else KEPT_TEXT
        if builds_on and cfg.build_up == "most_complete":
            _supersede(rows, previous, row)
        previous = row
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
