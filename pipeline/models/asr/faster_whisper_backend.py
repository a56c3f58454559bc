"""faster-whisper (CTranslate2): the embedded default on CPU, and large-v3 batched on GPU in production."""

from __future__ import annotations

import threading
from dataclasses import asdict

import numpy as np

from configs.schema import AsrConfig
from pipeline.models.asr import Transcript, segment_record
from pipeline.models.assets import resolve_local


class FasterWhisperBackend:
    """One window at a time, or with `batch_size` the BatchedInferencePipeline: the audio cut by VAD into pieces
    of at most `max_piece_seconds` that decode in batches, which is what keeps a GPU busy. A batched piece is one
    segment: its timestamp mode loses the words after a piece's last timestamp (measured on the sample)."""

    def __init__(self, cfg: AsrConfig) -> None:
        from faster_whisper import BatchedInferencePipeline, WhisperModel

        local = resolve_local(cfg.model)
        self.cfg = cfg
        self.model = WhisperModel(
            str(local) if local else cfg.model,
            device=cfg.device,
            compute_type=cfg.faster_whisper.compute_type,
            cpu_threads=cfg.cpu_threads,
            local_files_only=local is not None,
        )
        self.batched = BatchedInferencePipeline(self.model) if cfg.faster_whisper.batch_size else None
        self._lock = threading.Lock()

    def transcribe(self, samples: np.ndarray, language: str | None) -> Transcript:
        options = {
            "language": language,
            "beam_size": self.cfg.beam_size,
            "temperature": 0.0,
            "word_timestamps": True,
            "condition_on_previous_text": False,
            "no_speech_threshold": None,  # never skip a window silently: the asr stage flags it with a reason
        }
        with self._lock:
            if self.batched is not None:
                segments, info = self.batched.transcribe(
                    samples,
                    batch_size=self.cfg.faster_whisper.batch_size,
                    vad_filter=True,
                    chunk_length=self.cfg.faster_whisper.max_piece_seconds,
                    **options,
                )
            else:
                segments, info = self.model.transcribe(samples, vad_filter=self.cfg.vad_filter, **options)
            records = [segment_record(asdict(segment)) for segment in segments]  # decoding happens here
        return Transcript(records, info.language, float(info.language_probability))
