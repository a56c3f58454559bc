"""Audio for ASR: ffmpeg decodes the media to 16 kHz mono through a pipe, one window at a time.

A two-hour lecture is 460 MB as float32; windows keep one (10 minutes: 38 MB) in memory. Samples travel as s16le
and are scaled to float32, as both Whisper libraries' own loaders do, so a window transcribes as theirs would. A
window ends at the quietest tenth of a second near its end rather than at a fixed sample, so a word is rarely
cut in two.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from pipeline.media import ffmpeg_output

SAMPLE_RATE = 16000
SAMPLE_BYTES = 2  # s16le
CUT_SEARCH_SECONDS = 5.0  # a window may end this much early, at its quietest point
CUT_FRAME_SAMPLES = SAMPLE_RATE // 10


@dataclass(frozen=True)
class AudioChunk:
    """Samples of one window and where it starts in the media, so timestamps can be shifted back."""

    start: float
    samples: np.ndarray

    @property
    def seconds(self) -> float:
        return len(self.samples) / SAMPLE_RATE


def _quietest_cut(samples: np.ndarray, search_samples: int) -> int:
    """The sample index, within the last `search_samples`, at the middle of the lowest-energy 0.1 s frame."""
    first = max(0, len(samples) - search_samples)
    frames = (len(samples) - first) // CUT_FRAME_SAMPLES
    if frames == 0:
        return len(samples)
    tail = samples[first : first + frames * CUT_FRAME_SAMPLES].reshape(frames, CUT_FRAME_SAMPLES)
    quietest = int(np.argmin(np.square(tail).mean(axis=1)))
    return first + quietest * CUT_FRAME_SAMPLES + CUT_FRAME_SAMPLES // 2


def speech_regions(samples: np.ndarray, min_silence_ms: int, speech_pad_ms: int) -> list[tuple[float, float]]:
    """Stretches of speech, in seconds from the start of `samples`, by the Silero VAD model faster-whisper ships."""
    from faster_whisper.vad import VadOptions, get_speech_timestamps

    options = VadOptions(min_silence_duration_ms=min_silence_ms, speech_pad_ms=speech_pad_ms)
    return [(r["start"] / SAMPLE_RATE, r["end"] / SAMPLE_RATE) for r in get_speech_timestamps(samples, options)]


def audio_chunks(path: str, chunk_seconds: float) -> Iterator[AudioChunk]:
    """The media's audio in windows of at most `chunk_seconds`, in order, covering every sample once."""
    window = int(chunk_seconds * SAMPLE_RATE)
    args = ["-i", path, "-vn", "-ac", "1", "-ar", str(SAMPLE_RATE), "-f", "s16le"]
    carried = np.empty(0, dtype=np.float32)
    start = 0
    with ffmpeg_output(args, "ffmpeg failed to decode audio") as stdout:
        while True:
            raw = stdout.read((window - len(carried)) * SAMPLE_BYTES)
            pcm = np.frombuffer(raw[: len(raw) // SAMPLE_BYTES * SAMPLE_BYTES], np.int16)
            samples = np.concatenate([carried, pcm.astype(np.float32) / 32768.0])
            if len(samples) < window:  # the end of the stream
                if len(samples):
                    yield AudioChunk(start / SAMPLE_RATE, samples)
                break
            cut = _quietest_cut(samples, int(CUT_SEARCH_SECONDS * SAMPLE_RATE))
            yield AudioChunk(start / SAMPLE_RATE, samples[:cut])
            carried, start = samples[cut:], start + cut
