"""ASR back-ends behind one call: `transcribe(16 kHz float32 samples, language) -> Transcript`.

Both decode with no temperature fallback (greedy or beam search), so the same audio gives the same text, and
neither skips a window it thinks is silent: that verdict is the asr stage's, which records why.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from configs.schema import AsrConfig
from pipeline.models.loading import loaded_once


@dataclass(frozen=True)
class Transcript:
    """Segments with times relative to the samples given; the language the model heard and its probability
    (1.0 when it was given or the model knows only English; None when nothing was heard to tell)."""

    segments: list[dict[str, Any]]
    language: str | None
    language_probability: float


class AsrBackend(Protocol):
    def transcribe(self, samples: np.ndarray, language: str | None) -> Transcript: ...


def segment_record(segment: dict[str, Any]) -> dict[str, Any]:
    """One segment in the asr table's terms, from either library's segment as a dict."""
    words = [
        {"start": float(w["start"]), "end": float(w["end"]), "word": w["word"], "probability": float(w["probability"])}
        for w in segment.get("words") or []
    ]
    return {
        "start": float(segment["start"]),
        "end": float(segment["end"]),
        "text": segment["text"].strip(),
        "words": words,
        "avg_logprob": float(segment["avg_logprob"]),
        "no_speech_prob": float(segment["no_speech_prob"]),
        "compression_ratio": float(segment["compression_ratio"]),
    }


@loaded_once
def load_asr(cfg: AsrConfig) -> AsrBackend:
    """One loaded model per config and process, shared by every video."""
    if cfg.backend == "openai-whisper":
        from pipeline.models.asr.openai_whisper_backend import OpenAiWhisperBackend

        return OpenAiWhisperBackend(cfg)
    from pipeline.models.asr.faster_whisper_backend import FasterWhisperBackend

    return FasterWhisperBackend(cfg)
