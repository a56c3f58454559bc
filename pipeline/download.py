"""download: fetch a URL input with yt-dlp, or pass a local file through unchanged.

yt-dlp writes `<id>.<ext>.part` and renames it when complete, so an interrupted download is never taken as
done: the next attempt resumes it when the server allows ranges, else starts over. A download archive keeps a
finished video from being fetched twice. Transient failures (HTTP 429 and 5xx, timeouts) are retried with
exponential backoff; permanent ones (404, 403, private, over the size bound) fail at once with their reason.
"""

from __future__ import annotations

import os
import re
import threading
import time
from functools import lru_cache
from pathlib import Path
from typing import Any

from configs.schema import DownloadConfig
from pipeline.engine.stage import UnitWork
from pipeline.media import MediaError
from pipeline.records import StageOutput

VERSION = 1
ARCHIVE_FILE = "archive.txt"
URL_PATTERN = re.compile(r"^https?://", re.IGNORECASE)
_TRANSIENT = re.compile(r"HTTP Error (429|5\d\d)|timed out|timeout|Connection reset|Temporary failure", re.I)


class DownloadFailed(MediaError):
    """A video that could not be fetched; `transient` says whether trying again later may help."""

    def __init__(self, message: str, transient: bool = False) -> None:
        super().__init__(message)
        self.transient = transient


def is_url(source: str) -> bool:
    return bool(URL_PATTERN.match(source))


def reason_of(message: str) -> str:
    """A short, countable reason from a yt-dlp error message."""
    if match := re.search(r"HTTP Error (\d{3})", message):
        code = match.group(1)
        names = {"403": "forbidden", "404": "not found", "410": "gone", "429": "rate limited"}
        return f"HTTP {code} ({names.get(code, 'server error' if code.startswith('5') else 'client error')})"
    lowered = message.lower()
    for needle, reason in (
        ("private video", "private video"),
        ("video unavailable", "unavailable"),
        ("is not available", "unavailable"),
        ("sign in to confirm", "login required"),
        ("timed out", "timeout"),
        ("unsupported url", "unsupported URL"),
    ):
        if needle in lowered:
            return reason
    return message.removeprefix("ERROR: ").strip()[:200]


@lru_cache(maxsize=8)
def _slots(concurrent: int) -> threading.BoundedSemaphore:
    """One gate per process bounds concurrent downloads, whatever the task runner's width."""
    return threading.BoundedSemaphore(concurrent)


def _options(cfg: DownloadConfig, media_dir: Path, video_id: str, archive: Path) -> dict[str, Any]:
    options: dict[str, Any] = {
        "format": cfg.format,
        "outtmpl": str(media_dir / f"{video_id}.%(ext)s"),
        "writeinfojson": True,
        "continuedl": True,
        "retries": 0,
        "fragment_retries": 3,
        "socket_timeout": cfg.socket_timeout_seconds,
        "quiet": True,
        "no_warnings": True,
        "noprogress": True,
        "noplaylist": True,
        "merge_output_format": "mp4",
        "download_archive": str(archive),
    }
    if cfg.rate_limit_bytes_per_second:
        options["ratelimit"] = cfg.rate_limit_bytes_per_second
    if cfg.max_filesize_mb:
        options["max_filesize"] = int(cfg.max_filesize_mb * 1024 * 1024)
    if cfg.cookiefile:
        options["cookiefile"] = cfg.cookiefile
    if cfg.proxy:
        options["proxy"] = cfg.proxy
    return options


def _finished_file(media_dir: Path, video_id: str) -> Path | None:
    for path in sorted(media_dir.glob(f"{video_id}.*")):
        if path.suffix not in {".json", ".part", ".ytdl", ".partial"} and not path.name.endswith(".info.json"):
            return path
    return None


def _attempt(url: str, video_id: str, media_dir: Path, cfg: DownloadConfig) -> dict[str, Any]:
    import yt_dlp

    options = _options(cfg, media_dir, video_id, media_dir / ARCHIVE_FILE)
    try:
        with yt_dlp.YoutubeDL(options) as client:
            info = client.extract_info(url, download=True) or {}
    except yt_dlp.utils.DownloadError as error:
        message = str(error)
        raise DownloadFailed(reason_of(message), transient=bool(_TRANSIENT.search(message))) from None
    path = _finished_file(media_dir, video_id)
    if path is not None:
        return info | {"filepath": str(path)}
    if not info.get("requested_downloads"):
        raise DownloadFailed(
            f"in {ARCHIVE_FILE} but its file is gone (keep_media: false?); remove its line to refetch"
        )
    raise DownloadFailed(
        f"over the size bound ({cfg.max_filesize_mb} MB)" if cfg.max_filesize_mb else "no file written"
    )


def download(url: str, video_id: str, media_dir: Path, cfg: DownloadConfig) -> dict[str, Any]:
    """Fetch `url` into `media_dir/<video_id>.<ext>` with its `.info.json`; retries transient failures."""
    media_dir.mkdir(parents=True, exist_ok=True)
    for attempt in range(cfg.attempts):
        try:
            with _slots(cfg.concurrent):
                return _attempt(url, video_id, media_dir, cfg)
        except DownloadFailed as error:
            if not error.transient or attempt == cfg.attempts - 1:
                if error.transient:
                    raise DownloadFailed(f"{error} after {cfg.attempts} attempts", transient=True) from None
                raise
            time.sleep(cfg.backoff_seconds * 2**attempt)
    raise AssertionError("unreachable: the loop returns or raises")


def media_record(video_id: str, path: str, downloaded: bool, info: dict[str, Any]) -> dict[str, Any]:
    return {
        "video_id": video_id,
        "path": path,
        "downloaded": downloaded,
        "url": info.get("webpage_url") or info.get("original_url"),
        "title": info.get("title"),
        "channel": info.get("channel") or info.get("uploader"),
        "license": info.get("license"),
        "size_bytes": os.path.getsize(path),
    }


def run(work: UnitWork) -> StageOutput:
    video = work.video
    if not is_url(video.source):
        if not os.path.exists(video.source):
            raise MediaError(f"file not found: {video.source}")
        return StageOutput(rows=[media_record(video.video_id, video.source, False, {})], counters={"downloaded": 0})
    folder = work.config.download.media_dir or work.media_dir
    if folder is None:
        raise MediaError("download.media_dir must be set when OUT is not a local folder")
    media_dir = Path(folder)
    info = download(video.source, video.video_id, media_dir, work.config.download)
    record = media_record(video.video_id, info["filepath"], True, info)
    return StageOutput(rows=[record], counters={"downloaded": 1, "bytes": record["size_bytes"]})
