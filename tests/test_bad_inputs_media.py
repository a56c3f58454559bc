"""The media half of the bad-input matrix: every file made here with the imageio-ffmpeg binary goes through one run of
the whole DAG beside the others, and each is either processed or a recorded failure with its reason code; the run
goes on either way."""

from __future__ import annotations

import io
import json
import shutil
import threading
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from PIL import Image

from configs import parse_config
from pipeline.dag import DAG, PROCESS_STAGES
from pipeline.engine.engine import Engine
from pipeline.engine.local import run_stages
from pipeline.inputs import resolve_inputs
from storage.outdir import OutDir
from tests.conftest import LECTURE, ffmpeg, shard_files

CONFIG = parse_config({"filter_asr": {"min_words": 3, "min_speech_seconds": 1, "llm_scoring": False}})
SPEECH = ("-ss", "0.5", "-t", "3", "-i", str(LECTURE))  # "Welcome to this lecture on linear regression."
ENCODE = ("-c:v", "libx264", "-preset", "ultrafast", "-c:a", "aac")

# name: (the outcome of its first run, the failure's reason code or None)
EXPECTED = {
    "zero_length": ("failed", "empty_file"),
    "truncated": ("failed", "unreadable_media"),
    "truncated_faststart": ("done", None),  # what arrived is processed
    "wrong_extension": ("done", None),
    "audio_only": ("failed", "no_video_stream"),
    "video_only": ("failed", "no_audio_stream"),
    "silent_audio": ("dropped", None),
    "tiny_16x16": ("failed", "frame_too_small"),
    "huge_4k": ("done", None),
    "variable_frame_rate": ("done", None),
    "rotated_phone": ("done", None),
    "half_second": ("failed", "too_short"),
    "not_media": ("failed", "unreadable_media"),
    "growing": ("failed", "file_changing"),
}


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("bad-media")
    work = tmp_path_factory.mktemp("bad-media-parts")
    files = {name: folder / f"{name}.mp4" for name in EXPECTED}
    files["wrong_extension"] = folder / "wrong_extension.webm"
    clip = work / "clip.mp4"
    ffmpeg(*SPEECH, "-vf", "scale=640:-2", *ENCODE, str(clip))
    files["zero_length"].write_bytes(b"")
    whole = clip.read_bytes()
    files["truncated"].write_bytes(whole[: len(whole) // 2])  # the index (moov) is at the end: nothing readable
    faststart = work / "faststart.mp4"
    ffmpeg("-i", str(clip), "-c", "copy", "-movflags", "+faststart", str(faststart))
    files["truncated_faststart"].write_bytes(faststart.read_bytes()[: len(faststart.read_bytes()) * 2 // 3])
    shutil.copy(clip, files["wrong_extension"])
    ffmpeg(*SPEECH, "-vn", "-c:a", "aac", str(files["audio_only"]))
    ffmpeg(*SPEECH, "-an", "-vf", "scale=640:-2", "-c:v", "libx264", "-preset", "ultrafast", str(files["video_only"]))
    ffmpeg(*SPEECH, "-f", "lavfi", "-i", "anullsrc=r=16000:cl=mono", "-map", "0:v", "-map", "1:a", "-shortest",
           "-vf", "scale=640:-2", *ENCODE, str(files["silent_audio"]))  # fmt: skip
    ffmpeg(*SPEECH, "-vf", "scale=16:16", *ENCODE, str(files["tiny_16x16"]))
    ffmpeg("-ss", "0.5", "-t", "1.5", "-i", str(LECTURE), "-vf", "scale=3840:2160", *ENCODE, str(files["huge_4k"]))
    ffmpeg(*SPEECH, "-vf", r"scale=640:-2,select='lt(n\,20)+not(mod(n\,4))'", "-fps_mode", "vfr", *ENCODE,
           str(files["variable_frame_rate"]))  # fmt: skip
    ffmpeg("-display_rotation", "90", "-i", str(clip), "-c", "copy", str(files["rotated_phone"]))
    ffmpeg("-t", "0.5", "-i", str(clip), *ENCODE, str(files["half_second"]))
    files["not_media"].write_bytes(b"this is a lecture, honestly\n" * 200)
    fragmented = work / "fragmented.mp4"
    ffmpeg("-i", str(clip), "-c", "copy", "-movflags", "frag_keyframe+empty_moov", str(fragmented))
    files["growing"].write_bytes(fragmented.read_bytes()[: len(fragmented.read_bytes()) // 3])
    files["growing_rest"] = work / "growing.rest"
    files["growing_rest"].write_bytes(fragmented.read_bytes()[len(fragmented.read_bytes()) // 3 :])
    return files


def _grow(path: Path, rest: bytes, stop: threading.Event) -> int:
    """Append `rest` a little at a time, as a recorder still writing the file would, until told to stop."""
    step, offset = max(1, len(rest) // 2000), 0
    while not stop.is_set() and offset < len(rest):
        with path.open("ab") as handle:
            handle.write(rest[offset : offset + step])
        offset += step
        time.sleep(0.01)
    return offset


@pytest.fixture(scope="module")
def matrix(media: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> tuple[Engine, dict[str, str]]:
    """One run over every file while `growing` is still being appended to; each unit's worst status per video."""
    videos = resolve_inputs(media["growing"].parent, CONFIG.input).videos
    engine = Engine(OutDir(tmp_path_factory.mktemp("bad-media-out") / "out"), CONFIG, DAG, videos)
    rest = media["growing_rest"].read_bytes()
    stop, written = threading.Event(), []
    grower = threading.Thread(target=lambda: written.append(_grow(media["growing"], rest, stop)), daemon=True)
    grower.start()
    try:
        reports = run_stages(engine, ["download", "probe"])  # while `growing` is still being written
    finally:
        stop.set()
        grower.join()
    with media["growing"].open("ab") as handle:  # the recorder finishes the file
        handle.write(rest[written[0] :])
    reports += run_stages(engine, [name for name in PROCESS_STAGES if name not in ("download", "probe")])
    statuses: dict[str, str] = {}
    for report in reports:
        for result in report.results:
            if report.stage in DAG_VIDEO_STAGES and statuses.get(result.unit) not in ("failed", "dropped"):
                statuses[result.unit] = result.status
    return engine, statuses


DAG_VIDEO_STAGES = {stage.name for stage in DAG.stages if stage.unit_kind == "video"}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_each_bad_file_is_processed_or_a_recorded_failure_with_its_reason(matrix, name):
    engine, statuses = matrix
    status, reason = EXPECTED[name]
    failures = {record["video_id"]: record for record in engine.failures()}
    assert statuses[name] == status, (statuses[name], failures.get(name))
    if reason is not None:
        assert failures[name]["reason"] == reason and failures[name]["message"]
    else:
        assert name not in failures


def test_the_run_goes_on_and_every_processed_file_reaches_the_shards(matrix):
    engine, statuses = matrix
    processed = {name for name, (status, _) in EXPECTED.items() if status == "done"}
    samples = [row for path in shard_files(engine.out) for row in pq.read_table(path).to_pylist()]
    videos = {video["video_id"] for row in samples for video in json.loads(row["metadata"])["videos"]}
    assert videos == processed
    for row in samples:
        for image in row["images"]:
            if image is not None:
                Image.open(io.BytesIO(image["bytes"])).convert("RGB")


def test_a_rotated_phone_video_gives_upright_keyframes(matrix):
    engine, _ = matrix
    probe = engine.table(("probe", "rotated_phone")).to_pylist()[0]
    keyframe = engine.table(("keyframes", "rotated_phone")).to_pylist()[0]
    assert (probe["width"], probe["height"]) == (360, 640)  # the 640x360 clip turned a quarter
    assert (keyframe["width"], keyframe["height"]) == (360, 640)


def test_a_file_that_stopped_growing_is_processed_on_the_next_run(matrix):
    engine, _ = matrix
    again = Engine(engine.out, CONFIG, DAG, engine.videos)
    reports = {report.stage: report for report in run_stages(again, PROCESS_STAGES)}
    assert [r.status for r in reports["probe"].results if r.unit == "growing"] == ["done"]
    assert again.current(("interleave", "growing"))
