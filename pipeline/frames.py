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
        return gray_at_width(image, width)


def gray_at_width(image: Image.Image, width: int) -> np.ndarray:
    """A decoded image as `gray_frame` makes it, for a caller that has decoded it already."""
    gray = image.convert("L")
    height = max(1, round(gray.height * width / gray.width))
    return np.asarray(gray.resize((width, height), Image.Resampling.BILINEAR))


def pixel_std(gray: np.ndarray) -> float:
    """Near 0 for a blank or uniform frame."""
    return float(gray.std())


def edge_density(gray: np.ndarray) -> float:
    """The share of edge pixels: text, formulas, plots and diagrams are dense in edges; faces and walls are not."""
    return float((cv2.Canny(gray, CANNY_LOW, CANNY_HIGH) > 0).mean())


# ECC stops when a step changes the warp by under 1e-3. Measured on the 143 frames of the sample x7 and real-slides
# that keyframes aligned: against 1e-5, an aligned frame's changed share moved by at most 0.0003 (the thresholds on
# it are 0.01), no frame changed side, and the search took a third of the time (it was 60 % of the stage's).
ECC_CRITERIA = (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 100, 1e-3)
MAX_SCALE_CHANGE = 2.0  # an alignment that scales more than this, or shears, is a failed one


def changed_share(last: np.ndarray, frame: np.ndarray, pixel_difference: int) -> float | None:
    """The share of `frame` (grayscale, uint8), aligned to `last` by scale and translation (ECC), that still differs
    from it by more than `pixel_difference` grey levels: what changed once a zoom, a scroll or a pan is undone.
    None when the frames cannot be aligned (the search fails, or what it finds is no zoom or pan)."""
    warp = np.eye(2, 3, dtype=np.float32)
    try:
        _, warp = cv2.findTransformECC(last.astype(np.float32), frame.astype(np.float32), warp, cv2.MOTION_AFFINE,
                                       ECC_CRITERIA, None, 5)  # fmt: skip
    except cv2.error:
        return None
    scale_x, scale_y = np.hypot(warp[0, 0], warp[1, 0]), np.hypot(warp[0, 1], warp[1, 1])
    plausible = all(1 / MAX_SCALE_CHANGE < scale < MAX_SCALE_CHANGE for scale in (scale_x, scale_y))
    if not plausible or abs(scale_x / scale_y - 1) > 0.1 or max(abs(warp[0, 1]), abs(warp[1, 0])) > 0.1:
        return None
    height, width = last.shape
    flags = cv2.WARP_INVERSE_MAP
    aligned = cv2.warpAffine(frame, warp, (width, height), flags=cv2.INTER_LINEAR + flags)
    inside = cv2.warpAffine(np.ones_like(frame), warp, (width, height), flags=cv2.INTER_NEAREST + flags)
    inside = cv2.erode(inside, np.ones((5, 5), np.uint8)) > 0
    if inside.mean() < 0.4:  # too little of the keyframe is still in view to say
        return None
    difference = cv2.GaussianBlur(cv2.absdiff(last, aligned), (5, 5), 0)
    return float((difference[inside] > pixel_difference).mean())
