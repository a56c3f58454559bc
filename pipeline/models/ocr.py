"""OCR back-ends behind one call: `read(rgb image) -> lines with boxes and confidences`."""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np

from configs.schema import OcrConfig
from pipeline.models.loading import loaded_once


class OcrBackend(Protocol):
    def read(self, image: np.ndarray) -> list[dict[str, Any]]: ...


def word_gaps(image: np.ndarray, box: list[list[float]], min_gap_ratio: float) -> list[tuple[float, float]]:
    """Blank column runs of a text line at least `min_gap_ratio` of its height wide, in image x coordinates: the
    spaces between words, whatever the text's colour (Otsu's threshold; ink is the minority class)."""
    import cv2

    xs, ys = [point[0] for point in box], [point[1] for point in box]
    left, right = int(max(0, min(xs))), int(min(image.shape[1], max(xs)))
    top, bottom = int(max(0, min(ys))), int(min(image.shape[0], max(ys)))
    if right - left < 2 or bottom - top < 2:
        return []
    gray = cv2.cvtColor(np.ascontiguousarray(image[top:bottom, left:right]), cv2.COLOR_RGB2GRAY)
    _, binary = cv2.threshold(gray, 0, 1, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    ink = binary if binary.mean() < 0.5 else 1 - binary
    blank = np.concatenate([[False], ink.sum(axis=0) == 0, [False]])
    edges = np.flatnonzero(np.diff(blank.astype(np.int8)))
    runs = zip(edges[::2], edges[1::2], strict=True)
    return [(left + start, left + end) for start, end in runs if end - start >= min_gap_ratio * (bottom - top)]


def spaced_text(chars: list[str], char_boxes: list[list[list[float]]], gaps: list[tuple[float, float]]) -> str:
    """The recognised characters with a space wherever a word gap lies between two neighbours' centres."""
    centres = [(min(p[0] for p in b) + max(p[0] for p in b)) / 2 for b in char_boxes]
    text = chars[0] if chars else ""
    for i in range(1, len(chars)):
        between = any(centres[i - 1] < (start + end) / 2 < centres[i] for start, end in gaps)
        text += (" " if between and " " not in (chars[i - 1], chars[i]) else "") + chars[i]
    return text


class RapidOcrBackend:
    """RapidOCR: PP-OCR detection + recognition as ONNX models shipped inside the wheel; with `word_gap_ratio`,
    words the recognizer glued are split by the line's own blank columns (its per-character boxes place them).

    Each ONNX session runs on one thread and `read` may be called from several threads at once: the stage reads
    pictures side by side, which keeps both cores busy without ONNX Runtime's spinning thread pools fighting the
    other stages for them. The angle classifier is off: lecture text is upright (on 40 keyframes of the benchmark
    lecture it took 2 % of the time and changed 1 word in 791)."""

    def __init__(self, cfg: OcrConfig) -> None:
        from rapidocr_onnxruntime import RapidOCR

        self.engine = RapidOCR(use_cls=False, intra_op_num_threads=1, inter_op_num_threads=1)
        self.min_confidence = cfg.min_confidence
        self.word_gap_ratio = cfg.word_gap_ratio

    def read(self, image: np.ndarray) -> list[dict[str, Any]]:
        split = self.word_gap_ratio is not None
        found, _ = self.engine(image, return_word_box=split)
        lines = []
        for box, text, confidence, *characters in found or []:
            if split and len(characters) >= 2 and len(characters[1]) == len(characters[0]) > 0:
                text = spaced_text(characters[1], characters[0], word_gaps(image, box, self.word_gap_ratio))
            if float(confidence) >= self.min_confidence and text.strip():
                lines.append(
                    {
                        "text": " ".join(text.split()),
                        "box": [[float(x), float(y)] for x, y in box],
                        "confidence": float(confidence),
                    }
                )
        return lines


@loaded_once
def load_ocr(cfg: OcrConfig) -> OcrBackend:
    return RapidOcrBackend(cfg)
