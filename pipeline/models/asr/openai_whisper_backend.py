"""openai-whisper (PyTorch), on the same weights as the default: a CTranslate2 model folder is converted once to
an openai-whisper checkpoint; a checkpoint file or a model name it knows loads as is.

It is given decoded samples, never a path: its own loader would call an `ffmpeg` from PATH, which may not exist.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np

from configs.schema import AsrConfig
from pipeline.audio import SAMPLE_RATE
from pipeline.models.asr import Transcript, segment_record
from pipeline.models.asr.ct2_checkpoint import alignment_heads_dump, converted_checkpoint, ct2_config
from pipeline.models.assets import resolve_local


def load_whisper_model(cfg: AsrConfig) -> Any:
    """A CTranslate2 folder (converted, with its word-alignment heads), a checkpoint file, or a model name."""
    import whisper

    local = resolve_local(cfg.model)
    cache_dir = Path(cfg.openai_whisper.model_cache_dir).expanduser()
    if local is None:  # fetched into the cache on a machine that has not got it: production only
        return whisper.load_model(cfg.model, device=cfg.device, download_root=str(cache_dir))
    if local.is_file():
        return whisper.load_model(str(local), device=cfg.device)
    model = whisper.load_model(str(converted_checkpoint(local, cache_dir)), device="cpu")
    heads = ct2_config(local).get("alignment_heads")
    if heads:
        model.set_alignment_heads(alignment_heads_dump(heads, model.dims.n_text_layer, model.dims.n_text_head))
    return model.to(cfg.device)


def speech_only(samples: np.ndarray) -> tuple[np.ndarray, Any]:
    """The speech of `samples` joined (faster-whisper's Silero VAD, its default options) and the map that turns
    times in it back into times in `samples`; no speech gives an empty array."""
    from faster_whisper.vad import SpeechTimestampsMap, VadOptions, collect_chunks, get_speech_timestamps

    speech = get_speech_timestamps(samples, VadOptions())
    if not speech:
        return np.empty(0, dtype=np.float32), None
    joined, _ = collect_chunks(samples, speech)
    return joined[0], SpeechTimestampsMap(speech, SAMPLE_RATE)


def _restore_times(segment: dict[str, Any], timeline: Any) -> dict[str, Any]:
    for item in (segment, *segment["words"]):
        item["start"] = timeline.get_original_time(item["start"])
        item["end"] = timeline.get_original_time(item["end"], is_end=True)
    return segment


class OpenAiWhisperBackend:
    """Greedy decoding (beam_size 1) or beam search, one 30 s window after another, word timestamps from the
    cross-attention alignment heads."""

    def __init__(self, cfg: AsrConfig) -> None:
        import torch

        if cfg.cpu_threads:
            torch.set_num_threads(cfg.cpu_threads)
        self.cfg = cfg
        self.model = load_whisper_model(cfg)
        self.fp16 = cfg.openai_whisper.fp16 and self.model.device.type == "cuda"
        self._lock = threading.Lock()

    def _language(self, samples: np.ndarray, language: str | None) -> tuple[str, float]:
        if language is not None or not self.model.is_multilingual:
            return language or "en", 1.0
        import whisper

        mel = whisper.log_mel_spectrogram(whisper.pad_or_trim(samples), self.model.dims.n_mels)
        _, probabilities = self.model.detect_language(mel.to(self.model.device))
        detected = max(probabilities, key=probabilities.get)
        return detected, float(probabilities[detected])

    def transcribe(self, samples: np.ndarray, language: str | None) -> Transcript:
        import whisper

        with self._lock:
            timeline = None
            if self.cfg.vad_filter:
                samples, timeline = speech_only(samples)
                if not len(samples):
                    known = language or (None if self.model.is_multilingual else "en")
                    return Transcript([], known, 1.0 if known else 0.0)
            language, probability = self._language(samples, language)
            result = whisper.transcribe(
                self.model,
                samples,
                language=language,
                temperature=0.0,
                beam_size=self.cfg.beam_size if self.cfg.beam_size > 1 else None,
                word_timestamps=True,
                condition_on_previous_text=False,
                no_speech_threshold=None,  # never skip a window silently: the asr stage flags it with a reason
                fp16=self.fp16,
                verbose=None,
            )
        segments = [segment_record(segment) for segment in result["segments"]]
        if timeline is not None:
            segments = [_restore_times(segment, timeline) for segment in segments]
        return Transcript(segments, language, probability)
