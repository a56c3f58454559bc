"""asr: speech to timed segments and words, with Whisper's known failure modes caught and said.

The audio is decoded window by window (`pipeline.audio`), so a long video is never held whole. Each segment keeps
the language the model heard and the language of its text (py3langid), and `flags`: a reason for every guard it
trips, namely a loop of repeated phrases, a high compression ratio, a low mean log-probability, or text over
what the model itself took for no speech. With `guards.action: drop` such a segment stays out of the table, so
clips never see it, and is listed with its reasons in the table's stats. A video whose words are mostly loops is
marked `asr_repetitive`, the published metadata's `asr is repetive`.
"""

from __future__ import annotations

import re
from collections import Counter
from typing import Any

import numpy as np

from configs.schema import AsrConfig, AsrGuardsConfig
from pipeline.audio import SAMPLE_RATE, audio_chunks, speech_regions
from pipeline.engine.stage import UnitWork
from pipeline.language import detect_language
from pipeline.models.asr import AsrBackend, load_asr
from pipeline.records import StageOutput
from storage.schemas import ASR_NO_SPEECH_FLAG

VERSION = 4
REPETITION = "repetition"
HIGH_COMPRESSION_RATIO = "high_compression_ratio"
LOW_AVG_LOGPROB = "low_avg_logprob"
UNTRUSTED = frozenset({REPETITION, HIGH_COMPRESSION_RATIO, LOW_AVG_LOGPROB})  # what recovery decodes again


def _shifted(segment: dict[str, Any], offset: float) -> dict[str, Any]:
    words = [{**word, "start": word["start"] + offset, "end": word["end"] + offset} for word in segment["words"]]
    return {**segment, "start": segment["start"] + offset, "end": segment["end"] + offset, "words": words}


def uncovered(region: tuple[float, float], segments: list[dict[str, Any]]) -> list[tuple[float, float]]:
    """The parts of a stretch of speech that none of `segments` covers."""
    free = [region]
    for segment in segments:
        rest = []
        for start, end in free:
            if segment["end"] <= start or segment["start"] >= end:
                rest.append((start, end))
                continue
            if segment["start"] > start:
                rest.append((start, segment["start"]))
            if segment["end"] < end:
                rest.append((segment["end"], end))
        free = rest
    return free


def recover_lost_speech(
    samples: np.ndarray, segments: list[dict[str, Any]], backend: AsrBackend, language: str | None, cfg: AsrConfig
) -> tuple[list[dict[str, Any]], float]:
    """The window's segments with every stretch of speech that no trusted segment covers decoded again on its own
    (a loop or a guess is untrusted); untrusted segments inside a recovered stretch give way to what it decoded.
    Returns the segments in time order and the seconds recovered."""
    flagged, _ = guard_segments(segments, cfg.guards)
    trusted = [segment for segment in flagged if not UNTRUSTED.intersection(segment["flags"])]
    regions = speech_regions(samples, cfg.recovery.vad_min_silence_ms, cfg.recovery.vad_speech_pad_ms)
    lost = [part for region in regions for part in uncovered(region, trusted)
            if part[1] - part[0] >= cfg.recovery.min_lost_seconds]  # fmt: skip
    recovered = []
    for start, end in lost:
        piece = samples[int(start * SAMPLE_RATE) : int(end * SAMPLE_RATE)]
        recovered += [_shifted(segment, start) for segment in backend.transcribe(piece, language).segments]
    kept = [
        segment
        for segment, checked in zip(segments, flagged, strict=True)
        if checked in trusted
        or not any(start <= (segment["start"] + segment["end"]) / 2 <= end for start, end in lost)
    ]
    return sorted(kept + recovered, key=lambda segment: segment["start"]), sum(end - start for start, end in lost)


def transcribe_media(path: str, cfg: AsrConfig) -> tuple[list[dict[str, Any]], str | None, float, float]:
    """Segments of the whole media in media time, the language heard with its probability, and the seconds of
    speech recovered. The language heard in the first window with speech holds for the rest, so one video is
    transcribed in one language."""
    backend = load_asr(cfg)
    language, probability = cfg.language, 1.0 if cfg.language else 0.0
    segments: list[dict[str, Any]] = []
    recovered_seconds = 0.0
    for chunk in audio_chunks(path, cfg.chunk_seconds):
        transcript = backend.transcribe(chunk.samples, language)
        if language is None and transcript.language is not None:
            language, probability = transcript.language, transcript.language_probability
        window = transcript.segments
        if cfg.recovery.enabled:
            window, seconds = recover_lost_speech(chunk.samples, window, backend, language, cfg)
            recovered_seconds += seconds
        segments += [_shifted(segment, chunk.start) for segment in window]
    return segments, language, probability, recovered_seconds


def words_of(text: str) -> list[str]:
    return re.findall(r"[\w']+", text.lower())


def looped_words(words: list[str], max_ngram: int, min_repeats: int) -> list[bool]:
    """Which words belong to a phrase of at most `max_ngram` words said `min_repeats` or more times in a row:
    the loop Whisper falls into, and what a looped recording gives."""
    looped = [False] * len(words)
    for size in range(1, max_ngram + 1):
        start = 0
        while start + size * min_repeats <= len(words):
            phrase = words[start : start + size]
            repeats = 1
            while words[start + repeats * size : start + (repeats + 1) * size] == phrase:
                repeats += 1
            if repeats >= min_repeats:
                looped[start : start + repeats * size] = [True] * (repeats * size)
                start += repeats * size
            else:
                start += 1
    return looped


def segment_flags(segment: dict[str, Any], looped_share: float, cfg: AsrGuardsConfig) -> list[str]:
    """The reason for each guard the segment trips; none for a clean one."""
    over_no_speech = segment["no_speech_prob"] > cfg.no_speech_threshold
    checks = (
        (REPETITION, looped_share >= cfg.segment_repetition_share),
        (HIGH_COMPRESSION_RATIO, segment["compression_ratio"] > cfg.max_compression_ratio),
        (LOW_AVG_LOGPROB, segment["avg_logprob"] < cfg.min_avg_logprob),
        (ASR_NO_SPEECH_FLAG, over_no_speech and segment["avg_logprob"] < cfg.no_speech_max_avg_logprob),
    )
    return [reason for reason, tripped in checks if tripped]


def guard_segments(segments: list[dict[str, Any]], cfg: AsrGuardsConfig) -> tuple[list[dict[str, Any]], float]:
    """Every segment with its `flags`, and the share of the video's words that sit in loops."""
    words = [words_of(segment["text"]) for segment in segments]
    looped = looped_words([word for group in words for word in group], cfg.repetition_max_ngram,
                          cfg.repetition_min_repeats)  # fmt: skip
    flagged, position = [], 0
    for segment, group in zip(segments, words, strict=True):
        share = sum(looped[position : position + len(group)]) / len(group) if group else 0.0
        position += len(group)
        flagged.append({**segment, "flags": segment_flags(segment, share, cfg)})
    return flagged, sum(looped) / len(looped) if looped else 0.0


def asr_output(path: str, cfg: AsrConfig) -> StageOutput:
    """The asr table of one media file: kept segments as rows; the video's verdicts and the dropped segments, with
    their reasons, in the stats that storage keeps in the table's metadata."""
    segments, language, probability, recovered_seconds = transcribe_media(path, cfg)
    segments, repetitive_share = guard_segments(segments, cfg.guards)
    rows, dropped = [], []
    for segment_id, segment in enumerate(segments):
        if segment["flags"] and cfg.guards.action == "drop":
            dropped.append(
                {key: segment[key] for key in ("start", "end", "text", "flags")} | {"segment_id": segment_id}
            )
            continue
        text_language, text_confidence = detect_language(segment["text"])
        rows.append({**segment, "segment_id": segment_id, "language": language, "language_probability": probability,
                     "text_language": text_language, "text_language_confidence": text_confidence})  # fmt: skip
    video_language, video_confidence = detect_language(" ".join(row["text"] for row in rows))
    flags = Counter(reason for segment in segments for reason in segment["flags"])
    counters = {
        "segments": len(rows),
        "words": sum(len(row["words"]) for row in rows),
        "flagged": sum(1 for row in rows if row["flags"]),
        "segments_dropped": len(dropped),
        "recovered_seconds": round(recovered_seconds, 3),
        **{f"flagged_{reason}": count for reason, count in sorted(flags.items())},
    }
    values = {
        "asr_repetitive": repetitive_share > cfg.guards.max_repetitive_share,
        "repetitive_share": round(repetitive_share, 4),
        "language_probability": probability,
        "text_language_confidence": video_confidence,
        "dropped_segments": dropped,
    }
    labels = {"language": language, "text_language": video_language}
    return StageOutput(rows=rows, counters=counters, values=values, labels=labels)


def run(work: UnitWork) -> StageOutput:
    return asr_output(work.media_path, work.config.asr)
