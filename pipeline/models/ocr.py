"""OCR back-ends behind one call: `read(rgb image) -> lines with boxes and confidences`."""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np

from configs.schema import OcrConfig
from pipeline.models.loading import loaded_once


class OcrBackend(Protocol):
    def read(self, image: np.ndarray) -> list[dict[str, Any]]: ...


class RapidOcrBackend:
    """RapidOCR: PP-OCR detection + recognition as ONNX models shipped inside the wheel."""

    def __init__(self, cfg: OcrConfig) -> None:
        from rapidocr_onnxruntime import RapidOCR

        self.engine = RapidOCR()
        self.min_confidence = cfg.min_confidence

    def read(self, image: np.ndarray) -> list[dict[str, Any]]:
        found, _ = self.engine(image)
        lines = []
        for box, text, confidence in found or []:
            if float(confidence) >= self.min_confidence and text.strip():
                lines.append(
                    {
                        "text": text.strip(),
                        "box": [[float(x), float(y)] for x, y in box],
                        "confidence": float(confidence),
                    }
                )
        return lines


@loaded_once
def load_ocr(cfg: OcrConfig) -> OcrBackend:
    return RapidOcrBackend(cfg)
