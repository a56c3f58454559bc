"""Dedup and build-up by what the frame shows, on a whiteboard drawn here: strokes that accumulate under a printed
banner, a second board under the same banner, and that board caught twice. OCR reads only the banner on every
frame, as it does on real boards, so OCR alone would call every frame a duplicate of the first."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFont

from pipeline import frame_filter

BANNER = "CHEM 101 Lecture 4: Reaction rates"
SIZE = (640, 360)


def _strokes(seed: int, count: int) -> list[list[tuple[float, float]]]:
    """Hand-drawn-looking polylines: a random walk with momentum, inside the board below the banner."""
    rng = np.random.default_rng(seed)
    strokes = []
    for _ in range(count):
        x, y = rng.uniform(60, 580), rng.uniform(110, 320)
        angle, points = rng.uniform(0, 2 * np.pi), []
        for _ in range(int(rng.integers(12, 25))):
            angle += rng.normal(0, 0.5)
            x = float(np.clip(x + 9 * np.cos(angle), 20, 620))
            y = float(np.clip(y + 9 * np.sin(angle), 100, 345))
            points.append((x, y))
        strokes.append(points)
    return strokes


def _board(strokes: list[list[tuple[float, float]]], shift: int = 0, quality: int = 90) -> bytes:
    image = Image.new("RGB", SIZE, (250, 250, 247))
    draw = ImageDraw.Draw(image)
    draw.rectangle((0, 0, SIZE[0], 70), fill=(20, 60, 120))
    draw.text((20, 18), BANNER, fill="white", font=ImageFont.load_default(28))
    for points in strokes:
        draw.line([(x + shift, y + shift) for x, y in points], fill=(30, 30, 160), width=4, joint="curve")
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def boards() -> list[dict]:
    first, second, third = _strokes(1, 4), _strokes(2, 3), _strokes(3, 3)
    other = _strokes(9, 6)
    pictures = [
        _board(first),  # board A, the first strokes
        _board(first + second),  # more strokes added, none erased
        _board(first + second + third),
        _board(other),  # board B: the same banner, another drawing
        _board(other, shift=2, quality=70),  # board B caught again, the camera moved a little
    ]
    return [{"keyframe_id": i, "clip_id": 0, "time": 5.0 * i, "jpeg": jpeg} for i, jpeg in enumerate(pictures)]


def test_strokes_added_are_build_up_steps_and_another_board_is_not_a_duplicate(boards, config):
    rows = frame_filter.filter_keyframes(boards, {frame["keyframe_id"]: BANNER for frame in boards},
                                         config.frame_filter)  # fmt: skip
    verdicts = [(row["keep"], row["reason"], row["duplicate_of"]) for row in rows]
    assert verdicts == [
        (True, frame_filter.KEPT_TEXT, None),
        (True, frame_filter.KEPT_BUILD_UP, None),
        (True, frame_filter.KEPT_BUILD_UP, None),
        (True, frame_filter.KEPT_PICTURE, None),
        (False, frame_filter.DROPPED_DUPLICATE, 3),
    ], [(row["reason"], row["changed_share"]) for row in rows]
    steps = [row["changed_share"] for row in rows[1:3]]
    assert all(share > config.frame_filter.duplicate_max_changed_share for share in steps), steps


def test_most_complete_keeps_only_the_last_step_of_the_board(boards, config):
    cfg = config.frame_filter.model_copy(update={"build_up": "most_complete"})
    rows = frame_filter.filter_keyframes(boards, {frame["keyframe_id"]: BANNER for frame in boards}, cfg)
    assert [row["keep"] for row in rows] == [False, False, True, True, False]
    assert [row["duplicate_of"] for row in rows[:2]] == [2, 2]
