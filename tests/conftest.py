"""Shared fixtures: the bundled sample, its ground truth, and the sample processed once by calling the stages
directly (no Prefect), which most stage tests read."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import wave
from pathlib import Path

import numpy as np
import pytest

from configs import PipelineConfig, load_config
from pipeline.audio import SAMPLE_RATE
from pipeline.dag import DAG, PROCESS_STAGES
from pipeline.engine.engine import Engine
from pipeline.engine.local import run_stages
from pipeline.engine.run_files import RunFiles, StageReport
from pipeline.inputs import resolve_inputs
from pipeline.media import ffmpeg_exe
from pipeline.records import VideoInput
from storage.outdir import OutDir
from storage.shards import read_index

DATA = Path(__file__).parent / "data"
TRUTH = DATA / "make_sample"
LECTURE = DATA / "lecture.mp4"
PART2 = DATA / "lecture_part2.mp4"
TRAIN_TINY_CONFIG = Path(__file__).parents[1] / "configs" / "train-tiny.yaml"
LOOPED_PHRASE = 1  # "Linear regression is one of the simplest and most useful models in machine learning."
LOOP_REPEATS = 8

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")


@pytest.fixture(scope="session")
def truth() -> dict:
    return json.loads((TRUTH / "lecture.json").read_text())


@pytest.fixture(scope="session")
def config() -> PipelineConfig:
    return load_config(None)


def run_all_stages(out: OutDir, config: PipelineConfig, videos: list[VideoInput]) -> tuple[Engine, list[StageReport]]:
    """The processing DAG without an executor over `videos`, each stage timed."""
    engine = Engine(out, config, DAG, videos)
    return engine, run_stages(engine, PROCESS_STAGES)


@pytest.fixture(scope="session")
def processed(tmp_path_factory: pytest.TempPathFactory, config: PipelineConfig) -> tuple[Engine, list[VideoInput]]:
    """Both sample videos through every stage, written to a session folder with the run files a `textbook run`
    writes (summary, metrics, report)."""
    out = OutDir(tmp_path_factory.mktemp("processed") / "out")
    inputs = resolve_inputs(DATA, config.input)
    files = RunFiles(out)
    files.start(config, inputs)
    started = time.perf_counter()
    engine, reports = run_all_stages(out, config, inputs.videos)
    files.finish(engine, reports, time.perf_counter() - started)
    return engine, inputs.videos


def shard_files(out: OutDir | Path) -> list[str]:
    """The current set's shard paths in order, from its index."""
    out = out if isinstance(out, OutDir) else OutDir(out)
    index = read_index(out)
    return [out.path("shards", entry["file"]) for entry in index["shards"]] if index else []


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


def _write_wav(path: Path, samples: np.ndarray) -> Path:
    with wave.open(str(path), "wb") as handle:
        handle.setnchannels(1)
        handle.setsampwidth(2)
        handle.setframerate(SAMPLE_RATE)
        handle.writeframes((np.clip(samples, -1, 1) * 32767).astype(np.int16).tobytes())
    return path


def _as_video(audio: Path, video: Path) -> Path:
    """A black 64x64 video carrying `audio`, so the media goes through the stages like any lecture."""
    ffmpeg("-f", "lavfi", "-i", "color=c=black:s=64x64:r=5", "-i", str(audio), "-shortest", "-c:v", "mpeg4",
           "-c:a", "aac", str(video))  # fmt: skip
    return video


@pytest.fixture(scope="session")
def looped_video(tmp_path_factory: pytest.TempPathFactory, truth: dict) -> Path:
    """One sentence of the sample's narration, said eight times in a row."""
    folder = tmp_path_factory.mktemp("loop")
    line = truth["narration"][LOOPED_PHRASE]
    phrase = folder / "phrase.wav"
    ffmpeg("-ss", f"{line['start'] - 0.1:.3f}", "-to", f"{line['end'] + 0.15:.3f}", "-i", str(LECTURE), "-vn",
           "-ac", "1", "-ar", str(SAMPLE_RATE), str(phrase))  # fmt: skip
    looped = folder / "looped.wav"
    ffmpeg("-stream_loop", str(LOOP_REPEATS - 1), "-i", str(phrase), str(looped))
    return _as_video(looped, folder / "looped.mp4")


def _music(seconds: float, rng: np.random.Generator) -> np.ndarray:
    """Random notes with two overtones, half a second each, over a little hiss."""
    time = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    notes = 220 * 2 ** (rng.integers(0, 24, int(seconds * 2)) / 12)
    frequency = np.repeat(notes, SAMPLE_RATE // 2)[: len(time)]
    tone = sum(np.sin(2 * np.pi * frequency * overtone * time) / overtone for overtone in (1, 2, 3))
    return 0.2 * tone / np.abs(tone).max() + 0.02 * rng.standard_normal(len(time))


@pytest.fixture(scope="session")
def no_speech_videos(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """30 s of music, and 30 s of noise, each under a black picture."""
    folder = tmp_path_factory.mktemp("nospeech")
    rng = np.random.default_rng(0)
    sounds = {"music": _music(30, rng), "noise": 0.1 * rng.standard_normal(30 * SAMPLE_RATE)}
    return {
        name: _as_video(_write_wav(folder / f"{name}.wav", s), folder / f"{name}.mp4") for name, s in sounds.items()
    }


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


def save_tiny_llava(folder: Path, overrides: dict[str, object]) -> Path:
    """The tiny LLaVA of `configs/train-tiny.yaml` (random weights, SmolLM2's tokenizer with `<image>`), built by
    train's own builder and saved as train exports it: model and processor in the HF format."""
    from configs.train import load_train_config
    from train.model import build_model

    model, processor = build_model(load_train_config(TRAIN_TINY_CONFIG, overrides).model, seed=0)
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_llava(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny LLaVA checkpoint the eval tests evaluate, built once per session."""
    return save_tiny_llava(tmp_path_factory.mktemp("tiny-llava"), {})


@pytest.fixture()
def media_server():
    from tests.demo_site import MediaServer

    with MediaServer(DATA) as server:
        yield server
