"""Stages on real slides (../shared/data/real-slides: real lecture slides, a slow zoom, an animation, a pause, an
off-topic photo, a face), checked against its exact ground truth. Skipped, saying why, where the set is absent."""

from __future__ import annotations

import io
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from pipeline import clip_filter
from pipeline.inputs import resolve_inputs
from pipeline.keyframes import choose_keyframes
from pipeline.media import sample_frames, sample_time, scaled_size
from storage.outdir import OutDir
from tests.conftest import run_all_stages

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
    times = [sample_time(index, cfg.sample_interval_seconds) for index, _ in choose_keyframes(frames, cfg)]
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


def _frame(name: str, text: str = "") -> dict:
    """A keyframe of one of real-slides' pictures as clip_filter sees it."""
    buffer = io.BytesIO()
    Image.open(REAL_SLIDES / "templates" / f"{name}.png").convert("RGB").save(buffer, format="JPEG")
    return {"keyframe_id": len(name), "text": text, "has_text": bool(text), "jpeg": buffer.getvalue()}


def test_a_photo_or_a_face_beside_a_matching_slide_goes_on_its_own_evidence(truth, config):
    """In a clip whose slide matches the speech, a textless photo the classifier names is judged by its names
    against the speech (kept where the speech is about it), and a face is a talking head; the slide stays."""
    slide = _frame("role_of_rna_cont", "\n".join(truth["slide_text"]["role_of_rna_cont"]["body"]))
    cat, face = _frame("chelsea"), _frame("astronaut")
    cat["keyframe_id"], face["keyframe_id"] = 101, 102
    rna = "Messenger RNA maintains the triplet code, the codon, from DNA, copied with complementary base pairs."
    about_cats = "The domestic cat: a tabby has a striped coat, like this Egyptian Mau, while the messenger RNA ..."
    verdicts = clip_filter.judge_by_ocr([rna, about_cats], [[slide, cat, face], [slide, cat]], config)
    assert [v["keep_images"] for v in verdicts] == [True, True]
    assert verdicts[0]["dropped_frames"] == [{"keyframe_id": 101, "reason": clip_filter.DROPPED_UNRELATED_PICTURE},
                                             {"keyframe_id": 102, "reason": clip_filter.DROPPED_FACE}]  # fmt: skip
    assert verdicts[1]["dropped_frames"] == []


def test_the_default_config_puts_every_slide_and_no_forbidden_picture_in_the_shards(tmp_path, truth, config):
    """The whole DAG on real-slides, checked by ../shared/tools/match-slides: every slide, nothing of
    `must_not_appear`, no blank, the zoomed slide at most 3 times (first showing, zoom, return)."""
    (video,) = resolve_inputs(REAL_SLIDES / truth["video"], config.input).videos
    run_all_stages(OutDir(tmp_path / "out"), config, [video])
    tool = REAL_SLIDES.parents[1] / "tools" / "match-slides"
    result = subprocess.run([sys.executable, str(tool), str(tmp_path / "out"), str(REAL_SLIDES), "--max-per-slide",
                             "3"], capture_output=True, text=True)  # fmt: skip
    summary = result.stdout.strip().splitlines()[-1]
    found = {name: int(count) for name, count in re.findall(r"(slides|forbidden|blank|most-per-slide) (\d+)", summary)}
    assert found["slides"] == len(truth["slides"]) and found["forbidden"] == found["blank"] == 0, result.stdout
    assert found["most-per-slide"] <= 3, result.stdout  # the key words are the ASR's: README, not asserted here
