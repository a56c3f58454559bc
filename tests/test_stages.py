"""Each media stage on the bundled sample, called directly (no Prefect)."""

import re

import numpy as np
import pytest
from jiwer import wer

from pipeline.clips import merge_segments
from pipeline.keyframes import choose_keyframes
from pipeline.media import MediaError, sample_frames, sample_time, scaled_size
from pipeline.probe import probe_video
from storage.tables import read_table
from tests.conftest import LECTURE

# Measured with tiny.en (int8, greedy) on the espeak-ng narration: 0.059 on lecture.mp4; the bound leaves room
# for CTranslate2 builds that round differently.
MAX_WORD_ERROR_RATE = 0.15


def _table(workspace, stage, video_id):
    return read_table(workspace.out, workspace.out.stage_file(stage, video_id)).to_pylist()


def _normalise(text: str) -> str:
    return " ".join(re.sub(r"[^a-z0-9' ]+", " ", text.lower()).split())


def test_probe_reads_streams(config, truth):
    record = probe_video(str(LECTURE), config.probe)
    assert record["duration"] == pytest.approx(truth["duration"], abs=0.2)
    assert (record["width"], record["height"]) == (truth["width"], truth["height"])
    assert record["fps"] == pytest.approx(truth["fps"], rel=0.01)
    assert record["audio_codec"] and record["audio_sample_rate"] > 0


@pytest.mark.parametrize(
    ("name", "reason"), [("corrupt", "unreadable media"), ("empty", "empty file"), ("noaudio", "no audio stream")]
)
def test_probe_rejects_unusable_files_with_reason(config, bad_videos, name, reason):
    with pytest.raises(MediaError, match=reason):
        probe_video(str(bad_videos[name]), config.probe)


def test_asr_word_error_rate_against_ground_truth(processed, truth):
    workspace, _ = processed
    segments = _table(workspace, "asr", "lecture")
    hypothesis = _normalise(" ".join(segment["text"] for segment in segments))
    error_rate = wer(_normalise(truth["transcript"]), hypothesis)
    assert error_rate < MAX_WORD_ERROR_RATE, (error_rate, hypothesis)


def test_asr_segments_carry_words_and_confidences(processed, truth):
    workspace, _ = processed
    segments = _table(workspace, "asr", "lecture")
    starts = [segment["start"] for segment in segments]
    assert starts == sorted(starts) and segments[-1]["end"] <= truth["duration"] + 0.5
    for segment in segments:
        assert segment["words"], segment
        assert segment["start"] <= segment["words"][0]["start"] + 0.5
        assert segment["avg_logprob"] < 0 and 0 <= segment["no_speech_prob"] <= 1
    assert any(word["word"].strip().lower().startswith("regression") for s in segments for word in s["words"])


def _segments(*spans: tuple[float, float, str]) -> list[dict]:
    return [{"segment_id": i, "start": s, "end": e, "text": t} for i, (s, e, t) in enumerate(spans)]


def test_clips_close_at_sentence_ends_within_bounds(config):
    segments = _segments(
        (0, 4, "First part"),
        (4, 9, "still going."),
        (9, 12, "Short."),
        (12, 18, "Now a sentence"),
        (18, 25, "that ends late."),
        (25, 29, "Tail"),
    )
    clips = merge_segments(segments, 30.0, config.clips)
    assert [c["segment_ids"] for c in clips] == [[0, 1, 2], [3, 4], [5]]
    assert clips[0]["start"] == 0 and clips[-1]["end"] == 30.0
    assert all(a["end"] == b["start"] for a, b in zip(clips, clips[1:], strict=False))
    assert clips[0]["asr"] == "First part still going. Short."


def test_clips_never_grow_past_the_maximum(config):
    segments = _segments(*[(i * 4, i * 4 + 4, "no sentence end") for i in range(10)])
    clips = merge_segments(segments, 40.0, config.clips)
    assert all(c["end"] - c["start"] <= config.clips.max_seconds for c in clips[:-1])
    assert sum(len(c["segment_ids"]) for c in clips) == 10


def test_video_shorter_than_minimum_is_one_clip(config):
    clips = merge_segments(_segments((0.5, 3, "Hello."), (3, 6, "Bye.")), 7.0, config.clips)
    assert len(clips) == 1 and clips[0]["start"] == 0 and clips[0]["end"] == 7.0


def test_clips_close_at_sentence_ends_within_the_bounds(processed, config):
    workspace, _ = processed
    clips = _table(workspace, "clips", "lecture")
    segments = {row["segment_id"]: row for row in _table(workspace, "asr", "lecture")}
    assert all(clip["end"] - clip["start"] <= config.clips.max_seconds + 1 for clip in clips)
    for clip, following in zip(clips, clips[1:], strict=False):
        # What the stage guarantees whatever a machine's int8 ASR splits: a clip closes at a sentence end once it is
        # long enough, or earlier only where the next segment would have pushed it past the maximum.
        next_end = segments[following["segment_ids"][0]]["end"]
        overflow = next_end - clip["start"] > config.clips.max_seconds
        ends_sentence = clip["asr"].rstrip().endswith(tuple(config.clips.sentence_endings))
        assert overflow or (ends_sentence and clip["end"] - clip["start"] >= config.clips.min_seconds), clip


def test_keyframes_near_every_slide_change(processed, truth, config):
    workspace, _ = processed
    times = [row["time"] for row in _table(workspace, "keyframes", "lecture")]
    tolerance = config.keyframes.sample_interval_seconds + 0.5
    missed = [change for change in truth["slide_changes"] if not any(abs(t - change) <= tolerance for t in times)]
    assert not missed, (missed, times)


def test_slow_zoom_does_not_trigger_every_frame_unlike_pixel_differencing(truth, config):
    cfg = config.keyframes
    frames = list(
        sample_frames(str(LECTURE), cfg.sample_interval_seconds, scaled_size(640, 360, cfg.motion_width), True)
    )
    zoom = truth["zoom"]
    times = [sample_time(i, cfg.sample_interval_seconds) for i in range(len(frames))]
    inside = [i for i, time in enumerate(times) if zoom["start"] < time < zoom["end"]]
    chosen = {index for index, _ in choose_keyframes(frames, cfg)}
    assert len(chosen.intersection(inside)) <= 1, sorted(chosen.intersection(inside))
    # A naive differencer on the decoded frames, tuned to catch the smallest real change (one bullet), fires on
    # most zoom frames.
    builds = [s["start"] for s in truth["slides"] if s["kind"] == "build_step"]
    step = cfg.sample_interval_seconds
    full = list(sample_frames(str(LECTURE), step, (640, 360), True))
    difference = [np.abs(full[i].astype(int) - full[i - 1]).mean() for i in range(1, len(full))]
    first_showing = [min(i for i, time in enumerate(times) if time >= t) for t in builds]
    smallest_real = min(difference[i - 1] for i in first_showing)
    fires = [i for i in inside if i >= 1 and difference[i - 1] >= smallest_real * 0.9]
    assert len(fires) >= len(inside) * 2 // 3


def test_keyframes_are_full_resolution_jpegs_named_by_clip(processed):
    workspace, _ = processed
    rows = _table(workspace, "keyframes", "lecture")
    clips = {clip["clip_id"]: clip for clip in _table(workspace, "clips", "lecture")}
    for row in rows:
        assert row["jpeg"][:2] == b"\xff\xd8" and (row["width"], row["height"]) == (640, 360)
        clip = clips[row["clip_id"]]
        assert clip["start"] <= row["time"] <= clip["end"]
        assert re.fullmatch(rf"lecture@{clip['start']:.1f}_{clip['end']:.1f}#\d+\.jpg", row["name"])
    assert len({row["name"] for row in rows}) == len(rows)


def test_ocr_finds_the_slide_titles(processed, truth):
    workspace, _ = processed
    # PP-OCR's English recogniser often drops the spaces between words, so compare without them.
    text = _normalise(" ".join(row["text"] for row in _table(workspace, "ocr", "lecture"))).replace(" ", "")
    missing = [title for title in set(truth["titles"]) if _normalise(title).replace(" ", "") not in text]
    assert not missing, (missing, text)
    rows = _table(workspace, "ocr", "lecture")
    with_text = [row for row in rows if row["lines"]]
    assert all(len(row["boxes"]) == len(row["lines"]) == len(row["confidences"]) for row in with_text)


def test_decoding_a_missing_file_raises_media_error(tmp_path):
    with pytest.raises(MediaError, match="ffmpeg failed"):
        list(sample_frames(str(tmp_path / "none.mp4"), 1.0, (64, 36), gray=True))


def test_a_rerun_with_an_unchanged_result_leaves_downstream_current(processed, tmp_path):
    import shutil

    from configs import parse_config
    from pipeline.dag import DAG
    from pipeline.engine.engine import Engine
    from storage.outdir import OutDir

    workspace, videos = processed
    shutil.copytree(workspace.out.root, tmp_path / "out")
    lecture = next(video for video in videos if video.video_id == "lecture")
    looser = parse_config({"filter_asr": {"min_words": workspace.config.filter_asr.min_words - 1}})
    rerun = Engine(OutDir(tmp_path / "out"), looser, DAG, videos)
    assert rerun.run_unit("filter_asr", lecture.video_id).status == "done"  # its config changed
    assert rerun.run_unit("clips", lecture.video_id).status == "skipped"  # but not its verdict
    forced = rerun.run_unit("filter_asr", lecture.video_id, force=True)
    assert forced.status == "done" and rerun.run_unit("clips", lecture.video_id).status == "done"
