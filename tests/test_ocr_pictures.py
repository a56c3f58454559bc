"""OCR reads each distinct picture once: a keyframe that shows a picture already read (a returning slide, encoded
again) is given that reading; a picture that differs by a bullet or a zoom step is read on its own."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from pipeline.frames import encode_jpeg
from pipeline.ocr import first_showings


def _slide(lines: list[str], zoom: float = 1.0) -> np.ndarray:
    image = Image.new("RGB", (640, 360), "white")
    draw = ImageDraw.Draw(image)
    for n, line in enumerate(lines):
        draw.text((40, 40 + 60 * n), line, fill="black", font=ImageFont.load_default(36))
    if zoom != 1.0:
        size = (round(640 * zoom), round(360 * zoom))
        image = image.resize(size).crop(((size[0] - 640) // 2, (size[1] - 360) // 2, (size[0] + 640) // 2,
                                         (size[1] + 360) // 2))  # fmt: skip
    return np.asarray(image)


def test_a_returning_slide_is_read_once_and_a_changed_one_again():
    title = _slide(["Linear Regression", "Lecture 3"])
    build = _slide(["Linear Regression", "Lecture 3", "Fit a straight line"])
    jpegs = [
        encode_jpeg(title, 90),
        encode_jpeg(build, 90),  # a bullet added
        encode_jpeg(_slide(["Linear Regression", "Lecture 3"], zoom=1.05), 90),  # a zoom step
        encode_jpeg(title, 60),  # the first slide again, encoded at another quality
        encode_jpeg(build, 75),
    ]
    assert first_showings(jpegs) == [0, 1, 2, 0, 1]
