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
    """Read stream facts from the container header and the first frame (its display rotation: a phone video's
    frames are decoded upright, so its width and height are swapped); raise MediaError for a file the pipeline
    cannot use, or one that changes while it is read (still being written)."""
    if not os.path.exists(path):
        raise MediaError(f"file not found: {path}", "file_not_found")
    before = os.stat(path)
    if before.st_size == 0:
        raise MediaError("empty file (0 bytes)", "empty_file")
    try:
        with av.open(path) as container:
            video = next(iter(container.streams.video), None)
            audio = next(iter(container.streams.audio), None)
            if video is None:
                raise MediaError("no video stream", "no_video_stream")
            if audio is None and cfg.require_audio:
                raise MediaError("no audio stream", "no_audio_stream")
            duration = _duration(container, video)
            rate = video.average_rate or video.guessed_rate
            first = next(container.decode(video), None)
            if first is None:
                raise MediaError("no decodable video frame", "no_video_frame")
            width, height = video.codec_context.width, video.codec_context.height
            if first.rotation % 180:
                width, height = height, width
            record = {
                "duration": duration,
                "container": container.format.name,
                "size_bytes": before.st_size,
                "width": width,
                "height": height,
                "fps": float(rate) if rate else None,
                "video_codec": video.codec_context.name,
                "audio_codec": audio.codec_context.name if audio else None,
                "audio_sample_rate": audio.codec_context.sample_rate if audio else None,
                "audio_channels": audio.codec_context.channels if audio else None,
            }
    except av.error.FFmpegError as error:
        raise MediaError(f"unreadable media: {error}", "unreadable_media") from None
    after = os.stat(path)
    if (after.st_size, after.st_mtime_ns) != (before.st_size, before.st_mtime_ns):
        raise MediaError(f"file changed while read ({before.st_size} -> {after.st_size} bytes)", "file_changing")
    if not record["width"] or not record["height"]:
        raise MediaError("video stream has no frame size", "no_frame_size")
    if min(width, height) < cfg.min_frame_side:
        raise MediaError(f"frame too small: {width}x{height} < {cfg.min_frame_side} px", "frame_too_small")
    if duration < cfg.min_duration_seconds:
        raise MediaError(f"too short: {duration:.2f} s < {cfg.min_duration_seconds} s", "too_short")
    return record


def _duration(container: av.container.InputContainer, video: av.video.stream.VideoStream) -> float:
    if container.duration:
        return container.duration / av.time_base
    if video.duration and video.time_base:
        return float(video.duration * video.time_base)
    raise MediaError("duration unknown", "duration_unknown")


def run(work: UnitWork) -> StageOutput:
    fetched = work.read("download").to_pylist()[0]
    record = probe_video(fetched["path"], work.config.probe)
    if record["size_bytes"] != fetched["size_bytes"]:  # still being written: what is probed now is not what is read
        raise MediaError(
            f"file changed while read ({fetched['size_bytes']} -> {record['size_bytes']} bytes)", "file_changing"
        )
    return StageOutput(rows=[{"video_id": work.video.video_id, **record}], values={"duration": record["duration"]})
