"""`textbook doctor`: what a run needs, checked before a long run finds out the hard way."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

from configs import PipelineConfig
from pipeline.media import ffmpeg_exe
from pipeline.models.assets import ModelNotFound, resolve_local

MIN_FREE_BYTES = 2 * 1024**3

Check = tuple[str, bool, str]


def _ffmpeg() -> Check:
    try:
        exe = ffmpeg_exe()
        version = subprocess.run([exe, "-version"], capture_output=True, text=True, check=True).stdout.splitlines()[0]
    except (OSError, subprocess.CalledProcessError, ImportError) as error:
        return "ffmpeg", False, f"not runnable: {error}"
    return "ffmpeg", True, f"{exe} ({version})"


def _module(name: str, purpose: str) -> Check:
    found = importlib.util.find_spec(name) is not None
    return name, found, purpose if found else f"not installed ({purpose}); run `make install`"


def _model(role: str, spec: str) -> Check:
    try:
        local = resolve_local(spec)
    except ModelNotFound as error:
        return f"model {role}", False, str(error)
    return f"model {role}", True, str(local) if local else f"{spec} (hub name: needs a download or a cache)"


def run_checks(config: PipelineConfig, out: Path) -> Iterator[Check]:
    yield _ffmpeg()
    yield _module("av", "probing with PyAV")
    yield _module("faster_whisper", "ASR")
    yield _module("rapidocr_onnxruntime", "OCR")
    yield _module("prefect", "orchestration")
    yield _model("asr", config.asr.model)
    yield _model("tokenizer", config.pack.tokenizer)
    target = out if out.exists() else Path.cwd()
    free = shutil.disk_usage(target).free
    yield "disk", free >= MIN_FREE_BYTES, f"{free / 1024**3:.1f} GiB free at {target.resolve()}"
