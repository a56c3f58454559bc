"""Stages on real slides (../shared/data/real-slides: real lecture slides, a slow zoom, an animation, a pause, an
off-topic photo, a face), checked against its exact ground truth. Skipped, saying why, where the set is absent."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipeline.keyframes import choose_keyframes
from pipeline.media import sample_frames, scaled_size

REAL_SLIDES = Path(__file__).resolve().parents[2] / "shared" / "data" / "real-slides"


@pytest.fixture(scope="module")
def truth() -> dict:
    if not (REAL_SLIDES / "truth.json").is_file():
        pytest.skip(f"the real-slides development set is not at {REAL_SLIDES}")
    return json.loads((REAL_SLIDES / "truth.json").read_text())


def test_keyframes_see_every_real_change_and_a_zoom_as_one_slide(truth, config):
    cfg = config.keyframes
    size = scaled_size(truth["width"], truth["height"], cfg.motion_width)
    frames = sample_frames(str(REAL_SLIDES / truth["video"]), cfg.sample_interval_seconds, size, gray=True)
    times = [index * cfg.sample_interval_seconds for index, _ in choose_keyframes(frames, cfg)]
    segments = truth["timeline"]
    changes = [segment["start"] for segment in segments if segment["kind"] != "zoom"]
    missed = [change for change in changes if not any(abs(t - change) <= 1.0 for t in times)]
    assert not missed, (missed, times)
    for segment in segments:
        inside = [t for t in times if segment["start"] < t < segment["end"]]
        if segment["kind"] == "zoom":
            assert len(inside) <= 1, (segment, inside)  # the zoom adds at most one keyframe
        if segment["kind"] == "animation":
            assert len([t for t in times if segment["start"] <= t < segment["end"]]) <= 3, (segment, times)
