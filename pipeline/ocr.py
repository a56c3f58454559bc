"""ocr: the text on every keyframe, with boxes and confidences, in the back-end's reading order.

OCR is the costliest stage on CPU, so each distinct picture is read once: a keyframe whose picture matches one
already read in this video (a slide that returns, the same slide caught twice) is given that reading. Pictures
are read side by side on `OCR_WORKERS` threads (the back-end releases the GIL)."""

from __future__ import annotations

import io
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import cv2
import numpy as np
from PIL import Image

from pipeline.engine.stage import UnitWork
from pipeline.frames import gray_frame
from pipeline.models.ocr import load_ocr
from pipeline.records import StageOutput

VERSION = 2
OCR_WORKERS = 2
# Two keyframes show the same picture when, in grayscale at this width, at most this share of pixels differs by
# more than this many grey levels. Measured: a slide that returns (decoded and encoded again) 0.0 %, the smallest
# build-up step of the sample (one bullet) 2.0 %, another slide 10-100 %.
SAME_PICTURE_WIDTH = 160
SAME_PICTURE_PIXEL_DIFFERENCE = 40
SAME_PICTURE_MAX_SHARE = 0.002


def first_showings(jpegs: list[bytes]) -> list[int]:
    """For each picture, the index of the first one that shows the same picture (itself when it is new)."""
    thumbnails = [gray_frame(jpeg, SAME_PICTURE_WIDTH) for jpeg in jpegs]
    firsts: list[int] = []
    for index, thumbnail in enumerate(thumbnails):
        match = next((j for j in sorted(set(firsts)) if same_picture(thumbnails[j], thumbnail)), index)
        firsts.append(match)
    return firsts


def same_picture(first: np.ndarray, second: np.ndarray) -> bool:
    if first.shape != second.shape:
        return False
    return float((cv2.absdiff(first, second) > SAME_PICTURE_PIXEL_DIFFERENCE).mean()) <= SAME_PICTURE_MAX_SHARE


def ocr_row(keyframe_id: int, lines: list[dict[str, Any]]) -> dict[str, Any]:
    confidences = [line["confidence"] for line in lines]
    return {
        "keyframe_id": keyframe_id,
        "text": "\n".join(line["text"] for line in lines),
        "lines": [line["text"] for line in lines],
        "boxes": [line["box"] for line in lines],
        "confidences": confidences,
        "mean_confidence": float(np.mean(confidences)) if confidences else None,
    }


def run(work: UnitWork) -> StageOutput:
    backend = load_ocr(work.config.ocr)
    keyframes = work.inputs["keyframes"].select(["keyframe_id", "jpeg"]).to_pylist()
    firsts = first_showings([keyframe["jpeg"] for keyframe in keyframes])
    distinct = sorted(set(firsts))

    def read(index: int) -> list[dict[str, Any]]:
        return backend.read(np.asarray(Image.open(io.BytesIO(keyframes[index]["jpeg"])).convert("RGB")))

    with ThreadPoolExecutor(OCR_WORKERS) as pool:
        readings = dict(zip(distinct, pool.map(read, distinct), strict=True))
    rows = [
        ocr_row(keyframe["keyframe_id"], readings[first]) for keyframe, first in zip(keyframes, firsts, strict=True)
    ]
    counters = {"keyframes": len(rows), "read": len(distinct), "same_picture": len(rows) - len(distinct),
                "with_text": sum(bool(r["text"]) for r in rows)}  # fmt: skip
    return StageOutput(rows=rows, counters=counters)
