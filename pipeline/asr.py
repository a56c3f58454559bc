"""asr: speech to timed segments and words with the configured back-end."""

from __future__ import annotations

from pipeline.models.asr import load_asr
from pipeline.records import StageOutput, VideoWork

VERSION = 1


def run(work: VideoWork) -> StageOutput:
    segments = load_asr(work.config.asr).transcribe(work.media_path)
    words = sum(len(segment["words"]) for segment in segments)
    return StageOutput(rows=segments, stats={"segments": len(segments), "words": words})
