"""ocr: the text on every keyframe, with boxes and confidences, in the back-end's reading order."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from pipeline.engine.stage import UnitWork
from pipeline.models.ocr import load_ocr
from pipeline.records import StageOutput

VERSION = 1


def run(work: UnitWork) -> StageOutput:
    backend = load_ocr(work.config.ocr)
    rows = []
    for keyframe in work.inputs["keyframes"].select(["keyframe_id", "jpeg"]).to_pylist():
        image = np.asarray(Image.open(io.BytesIO(keyframe["jpeg"])).convert("RGB"))
        lines = backend.read(image)
        confidences = [line["confidence"] for line in lines]
        rows.append(
            {
                "keyframe_id": keyframe["keyframe_id"],
                "text": "\n".join(line["text"] for line in lines),
                "lines": [line["text"] for line in lines],
                "boxes": [line["box"] for line in lines],
                "confidences": confidences,
                "mean_confidence": float(np.mean(confidences)) if confidences else None,
            }
        )
    return StageOutput(rows=rows, counters={"keyframes": len(rows), "with_text": sum(bool(r["text"]) for r in rows)})
