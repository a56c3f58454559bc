"""Shared fixtures: the bundled sample, its ground truth, and the sample processed once by calling the stages
directly (no Prefect), which most stage tests read."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from configs import PipelineConfig, load_config
from flows.units import Workspace, topics_in_order
from pipeline.dag import VIDEO_STAGES
from pipeline.inputs import resolve_inputs
from pipeline.media import ffmpeg_exe
from pipeline.records import VideoInput
from storage.outdir import OutDir

DATA = Path(__file__).parent / "data"
TRUTH = DATA / "make_sample"
LECTURE = DATA / "lecture.mp4"
PART2 = DATA / "lecture_part2.mp4"

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")


@pytest.fixture(scope="session")
def truth() -> dict:
    return json.loads((TRUTH / "lecture.json").read_text())


@pytest.fixture(scope="session")
def config() -> PipelineConfig:
    return load_config(None)


def run_all_stages(workspace: Workspace, videos: list[VideoInput]) -> None:
    """The DAG without an executor: every stage over every video, then pack and shards."""
    for stage in VIDEO_STAGES:
        for video in videos:
            workspace.run_video_stage(stage.name, video)
    topics = topics_in_order(videos)
    for topic, members in topics.items():
        workspace.run_pack(topic, members)
    workspace.run_shards(list(topics))


@pytest.fixture(scope="session")
def processed(tmp_path_factory: pytest.TempPathFactory, config: PipelineConfig) -> tuple[Workspace, list[VideoInput]]:
    """Both sample videos through every stage, written to a session folder."""
    out = OutDir(tmp_path_factory.mktemp("processed") / "out")
    videos = resolve_inputs(DATA, config.input).videos
    workspace = Workspace(out, config)
    run_all_stages(workspace, videos)
    return workspace, videos


def ffmpeg(*args: str) -> None:
    subprocess.run([ffmpeg_exe(), "-nostdin", "-v", "error", "-y", *args], check=True)


@pytest.fixture(scope="session")
def bad_videos(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A truncated (corrupt) file, a zero-length file and a video without an audio stream."""
    folder = tmp_path_factory.mktemp("bad")
    corrupt = folder / "corrupt.mp4"
    corrupt.write_bytes(LECTURE.read_bytes()[:2048] + b"\xde\xad" * 2048)
    empty = folder / "empty.mp4"
    empty.write_bytes(b"")
    silent = folder / "noaudio.mp4"
    ffmpeg("-i", str(PART2), "-t", "5", "-an", "-c:v", "copy", str(silent))
    return {"corrupt": corrupt, "empty": empty, "noaudio": silent}


@pytest.fixture()
def mixed_folder(tmp_path: Path, bad_videos: dict[str, Path]) -> Path:
    """The short sample beside the three bad files, plus a non-video file that must be listed as ignored."""
    folder = tmp_path / "mixed"
    folder.mkdir()
    shutil.copy(PART2, folder / "lecture_part2.mp4")
    for path in bad_videos.values():
        shutil.copy(path, folder / path.name)
    (folder / "notes.txt").write_text("not a video")
    return folder


@pytest.fixture()
def media_server():
    from flows.demo_site import MediaServer

    with MediaServer(DATA) as server:
        yield server
