"""Decoding with ffmpeg as a subprocess: frames stream through a pipe, so no video is ever held whole in memory."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from typing import IO

import numpy as np


class MediaError(Exception):
    """A video that cannot be used; the message says why in words a user can act on, `reason` is a short code to
    count failures by (`empty_file`, `no_audio_stream`, `http_404`, ...)."""

    def __init__(self, message: str, reason: str = "bad_media") -> None:
        super().__init__(message)
        self.reason = reason


FINGERPRINT_SAMPLE_BYTES = 1 << 20


def file_fingerprint(path: str) -> str:
    """Content identity of a file from its size and first and last MiB: cheap even for long videos, and the same
    for one video under two names or fetched from two URLs."""
    size = os.path.getsize(path)
    sha = hashlib.sha256(str(size).encode())
    with open(path, "rb") as handle:
        sha.update(handle.read(FINGERPRINT_SAMPLE_BYTES))
        if size > FINGERPRINT_SAMPLE_BYTES:
            handle.seek(max(FINGERPRINT_SAMPLE_BYTES, size - FINGERPRINT_SAMPLE_BYTES))
            sha.update(handle.read(FINGERPRINT_SAMPLE_BYTES))
    return sha.hexdigest()[:16]


@lru_cache(maxsize=1)
def ffmpeg_exe() -> str:
    """The system ffmpeg when there is one, else the binary the imageio-ffmpeg wheel ships."""
    system = shutil.which("ffmpeg")
    if system:
        return system
    import imageio_ffmpeg

    return imageio_ffmpeg.get_ffmpeg_exe()


def scaled_size(width: int, height: int, target_width: int | None) -> tuple[int, int]:
    """Even dimensions no wider than `target_width`, keeping the aspect ratio."""
    if target_width is None or target_width >= width:
        return width - width % 2, height - height % 2
    scaled_height = max(2, round(height * target_width / width / 2) * 2)
    return target_width - target_width % 2, scaled_height


@contextmanager
def ffmpeg_output(args: list[str], failure: str) -> Iterator[IO[bytes]]:
    """ffmpeg's output as a pipe to read at the caller's pace. Read to the end, a failed ffmpeg raises `MediaError`
    with `failure` and its last error lines; whatever the exit (early stop included) the process is ended."""
    command = [ffmpeg_exe(), "-nostdin", "-v", "error", *args, "-"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert process.stdout is not None and process.stderr is not None
    try:
        yield process.stdout
        stderr = process.stderr.read().decode(errors="replace")
        if process.wait() != 0:
            raise MediaError(f"{failure}: {stderr.strip()[-500:]}", "decode_failed")
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        process.stdout.close()
        process.stderr.close()


def _stream_frames(args: list[str], frame_bytes: int, shape: tuple[int, ...]) -> Iterator[np.ndarray]:
    with ffmpeg_output(args, "ffmpeg failed") as stdout:
        while len(chunk := stdout.read(frame_bytes)) == frame_bytes:
            yield np.frombuffer(chunk, dtype=np.uint8).reshape(shape)


def sample_time(index: int, interval_seconds: float) -> float:
    """When sample `index` of `sample_frames` was on screen, in seconds from the start."""
    return round((index + 0.5) * interval_seconds, 3)


def sample_frames(
    path: str, interval_seconds: float, size: tuple[int, int], gray: bool, only: list[int] | None = None
) -> Iterator[np.ndarray]:
    """Frames at one per `interval_seconds`, scaled to `size`; with `only`, just those sample indices.

    Sample n is the last frame before (n + 0.5) * interval_seconds (ffmpeg's fps filter gives each output slot the
    last frame that rounds to it), so both passes (all samples at low resolution, then chosen ones at full
    resolution) index the same frames, and `sample_time` says when each was on screen. Frames no other frame is
    predicted from are not decoded (`-skip_frame noref`: about half of a usual H.264 stream's, so half its
    decoding); a sample is then at most a frame or two earlier, and every IDR frame is still decoded.
    """
    width, height = size
    filters = [f"fps=fps=1/{interval_seconds}", f"scale={width}:{height}:flags=area"]
    if only is not None:
        if not only:
            return
        filters.insert(1, "select='" + "+".join(f"eq(n\\,{index})" for index in sorted(set(only))) + "'")
    pixel_format, channels = ("gray", 1) if gray else ("rgb24", 3)
    shape = (height, width) if gray else (height, width, channels)
    args = ["-skip_frame:v", "noref", "-i", path, "-an", "-vf", ",".join(filters), "-fps_mode", "passthrough"]
    args += ["-f", "rawvideo", "-pix_fmt", pixel_format]
    yield from _stream_frames(args, width * height * channels, shape)
