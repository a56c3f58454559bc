"""probe: duration, streams, fps and resolution with PyAV; videos that cannot be used fail here, with a reason."""

from __future__ import annotations

import os

import av

from configs.schema import ProbeConfig
from pipeline.engine.stage import UnitWork
from pipeline.media import MediaError
from pipeline.records import StageOutput

VERSION = 1


def probe_video(path: str, cfg: ProbeConfig) -> dict:
    """Read stream facts from the container header; raise MediaError for a file the pipeline cannot use."""
    if not os.path.exists(path):
        raise MediaError(f"file not found: {path}")
    size = os.path.getsize(path)
    if size == 0:
        raise MediaError("empty file (0 bytes)")
    try:
        with av.open(path) as container:
            video = next(iter(container.streams.video), None)
            audio = next(iter(container.streams.audio), None)
            if video is None:
                raise MediaError("no video stream")
            if audio is None and cfg.require_audio:
                raise MediaError("no audio stream")
            duration = _duration(container, video)
            rate = video.average_rate or video.guessed_rate
            record = {
                "duration": duration,
                "container": container.format.name,
                "size_bytes": size,
                "width": video.codec_context.width,
                "height": video.codec_context.height,
                "fps": float(rate) if rate else None,
                "video_codec": video.codec_context.name,
                "audio_codec": audio.codec_context.name if audio else None,
                "audio_sample_rate": audio.codec_context.sample_rate if audio else None,
                "audio_channels": audio.codec_context.channels if audio else None,
            }
    except av.error.FFmpegError as error:
        raise MediaError(f"unreadable media: {error}") from None
    if not record["width"] or not record["height"]:
        raise MediaError("video stream has no frame size")
    if duration < cfg.min_duration_seconds:
        raise MediaError(f"too short: {duration:.2f} s < {cfg.min_duration_seconds} s")
    return record


def _duration(container: av.container.InputContainer, video: av.video.stream.VideoStream) -> float:
    if container.duration:
        return container.duration / av.time_base
    if video.duration and video.time_base:
        return float(video.duration * video.time_base)
    raise MediaError("duration unknown")


def run(work: UnitWork) -> StageOutput:
    record = probe_video(work.media_path, work.config.probe)
    return StageOutput(rows=[{"video_id": work.video.video_id, **record}], values={"duration": record["duration"]})
