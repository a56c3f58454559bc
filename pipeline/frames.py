"""Keyframe JPEGs: encoded from decoded frames, and read back as arrays for the filters: grayscale at a fixed
width, so that pixel statistics and detections mean the same at 480p and at 1080p."""

from __future__ import annotations

import io

import cv2
import numpy as np
from PIL import Image

# What counts as an edge (OpenCV's Canny hysteresis thresholds on 0-255 gray): the strokes of text and line art,
# not JPEG noise or soft gradients.
CANNY_LOW = 100
CANNY_HIGH = 200


def encode_jpeg(rgb: np.ndarray, quality: int) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="JPEG", quality=quality, optimize=True)
    return buffer.getvalue()


def gray_frame(jpeg: bytes, width: int) -> np.ndarray:
    """The image in grayscale, scaled (either way) to `width` with its aspect ratio."""
    with Image.open(io.BytesIO(jpeg)) as image:
        gray = image.convert("L")
        height = max(1, round(gray.height * width / gray.width))
        return np.asarray(gray.resize((width, height), Image.Resampling.BILINEAR))


def pixel_std(gray: np.ndarray) -> float:
    """Near 0 for a blank or uniform frame."""
    return float(gray.std())


def edge_density(gray: np.ndarray) -> float:
    """The share of edge pixels: text, formulas, plots and diagrams are dense in edges; faces and walls are not."""
    return float((cv2.Canny(gray, CANNY_LOW, CANNY_HIGH) > 0).mean())
