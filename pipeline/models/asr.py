"""ASR back-ends behind one call: `transcribe(path) -> list of segment records`."""

from __future__ import annotations

import threading
from functools import lru_cache
from typing import Any, Protocol

from configs.schema import AsrConfig
from pipeline.models.assets import resolve_local


class AsrBackend(Protocol):
    def transcribe(self, path: str) -> list[dict[str, Any]]: ...


class FasterWhisperBackend:
    """faster-whisper (CTranslate2): greedy by default, and never a temperature fallback, so output is repeatable."""

    def __init__(self, cfg: AsrConfig) -> None:
        from faster_whisper import WhisperModel

        local = resolve_local(cfg.model)
        self.cfg = cfg
        self.model = WhisperModel(
            str(local) if local else cfg.model,
            device=cfg.device,
            compute_type=cfg.compute_type,
            cpu_threads=cfg.cpu_threads,
            local_files_only=local is not None,
        )
        self._lock = threading.Lock()

    def transcribe(self, path: str) -> list[dict[str, Any]]:
        with self._lock:
            segments, info = self.model.transcribe(
                path,
                language=self.cfg.language,
                beam_size=self.cfg.beam_size,
                temperature=0.0,
                word_timestamps=True,
                vad_filter=self.cfg.vad_filter,
                condition_on_previous_text=False,
            )
            return [_segment_record(index, segment, info.language) for index, segment in enumerate(segments)]


def _segment_record(index: int, segment: Any, language: str) -> dict[str, Any]:
    words = [
        {"start": word.start, "end": word.end, "word": word.word, "probability": word.probability}
        for word in segment.words or []
    ]
    return {
        "segment_id": index,
        "start": segment.start,
        "end": segment.end,
        "text": segment.text.strip(),
        "words": words,
        "avg_logprob": segment.avg_logprob,
        "no_speech_prob": segment.no_speech_prob,
        "compression_ratio": segment.compression_ratio,
        "language": language,
    }


@lru_cache(maxsize=4)
def load_asr(cfg: AsrConfig) -> AsrBackend:
    """One loaded model per config and process, shared by every video."""
    return FasterWhisperBackend(cfg)
