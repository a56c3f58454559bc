"""Views over a video's per-keyframe tables that several stages read the same way."""

from __future__ import annotations

from typing import Any

import pyarrow as pa


def texts_by_keyframe(table: pa.Table) -> dict[int, str]:
    """The OCR table as {keyframe_id: text}."""
    return dict(zip(table["keyframe_id"].to_pylist(), table["text"].to_pylist(), strict=True))


def stand_ins(keyframes: list[dict[str, Any]], rows: list[dict[str, Any]]) -> dict[int, int]:
    """Dropped repeats that may stand in for their kept original in another clip: {repeat id: original id}, the
    first repeat per clip. A slide that stays on screen across a clip boundary is kept once, in the first clip; if
    that clip's images are dropped, its repeat in the next clip can still show the slide there."""
    clip_of = {keyframe["keyframe_id"]: keyframe["clip_id"] for keyframe in keyframes}
    chosen: dict[int, int] = {}
    taken: set[tuple[int, int]] = set()
    for row in sorted(rows, key=lambda row: row["keyframe_id"]):
        original = row["duplicate_of"]
        if row["keep"] or original is None or clip_of[original] == clip_of[row["keyframe_id"]]:
            continue
        if (clip_of[row["keyframe_id"]], original) not in taken:
            taken.add((clip_of[row["keyframe_id"]], original))
            chosen[row["keyframe_id"]] = original
    return chosen
