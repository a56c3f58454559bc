"""download: fetch a URL input with yt-dlp, or pass a local file through unchanged.

yt-dlp writes `<id>.<ext>.part` and renames it when complete, so an interrupted download is never taken as
done: the next attempt resumes it when the server allows ranges, else starts over. A download archive keeps a
finished video from being fetched twice. Transient failures (HTTP 429 and 5xx, timeouts) are retried with
exponential backoff, or as long as a 429's Retry-After asks (within `max_retry_after_seconds`); permanent ones (404,
403, 410, private, a redirect loop, over the size bound) fail at once with their reason and its code. The size bound
holds before the download finishes: an announced length over it is refused before any byte, an unannounced one is
stopped as soon as more than the bound has arrived.
"""

from __future__ import annotations

import logging
import os
import re
import threading
import time
from email.utils import parsedate_to_datetime
from functools import lru_cache
from pathlib import Path
from typing import Any

from configs.schema import DownloadConfig
from configs.secrets import redact
from pipeline.engine.stage import UnitWork
from pipeline.media import MediaError, file_fingerprint
from pipeline.records import StageOutput
from storage.outdir import OutDir

VERSION = 1
ARCHIVE_FILE = "archive.txt"
logger = logging.getLogger(__name__)
URL_PATTERN = re.compile(r"^https?://", re.IGNORECASE)
_TRANSIENT = re.compile(r"HTTP Error (429|5\d\d)|timed out|timeout|Connection reset|Temporary failure", re.I)


class DownloadFailed(MediaError):
    """A video that could not be fetched; `transient` says whether trying again later may help, `retry_after` how
    long the server asked to wait (HTTP 429's Retry-After), in seconds."""

    def __init__(self, message: str, transient: bool = False, reason: str = "download_failed",
                 retry_after: float | None = None) -> None:  # fmt: skip
        super().__init__(message, reason)
        self.transient = transient
        self.retry_after = retry_after


class TooLarge(Exception):
    """Raised from yt-dlp's progress hook: the bytes received passed the size bound (no length was announced)."""


def is_url(source: str) -> bool:
    return bool(URL_PATTERN.match(source))


_REASONS = (
    ("private video", "private video", "private_video"),
    ("video unavailable", "unavailable", "unavailable"),
    ("is not available", "unavailable", "unavailable"),
    ("sign in to confirm", "login required", "login_required"),
    ("timed out", "timeout", "timeout"),
    ("redirect loop", "redirect loop", "redirect_loop"),
    ("connection reset", "connection reset", "connection_reset"),
    ("remotedisconnected", "connection closed", "connection_reset"),
    ("incompleteread", "connection closed mid-file", "connection_reset"),
    ("unsupported url", "unsupported URL", "unsupported_url"),
)


def classify(message: str) -> tuple[str, str]:
    """A short, countable reason in words, and its code, from a yt-dlp error message."""
    lowered = message.lower()
    for needle, reason, code in _REASONS:
        if needle in lowered:
            return reason, code
    if match := re.search(r"HTTP Error (\d{3})", message):
        code = match.group(1)
        names = {"403": "forbidden", "404": "not found", "410": "gone", "429": "rate limited"}
        return (
            f"HTTP {code} ({names.get(code, 'server error' if code.startswith('5') else 'client error')})",
            f"http_{code}",
        )
    return message.removeprefix("ERROR: ").strip()[:200], "download_failed"


def reason_of(message: str) -> str:
    return classify(message)[0]


def _retry_after(error: BaseException) -> float | None:
    """The Retry-After of the HTTP response behind a yt-dlp error, in seconds (a number or an HTTP date)."""
    cause = (getattr(error, "exc_info", None) or (None, None))[1]
    value = getattr(getattr(cause, "response", None), "headers", {}).get("Retry-After")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        try:
            return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
        except (TypeError, ValueError):
            return None


@lru_cache(maxsize=8)
def _slots(concurrent: int) -> threading.BoundedSemaphore:
    """One gate per process bounds concurrent downloads, whatever the task runner's width."""
    return threading.BoundedSemaphore(concurrent)


class _QuietLog:
    """yt-dlp's messages, kept off the console: its errors come back as exceptions and are recorded (credentials
    masked), and what it prints could name the proxy with its password."""

    def debug(self, message: str) -> None:
        logger.debug(redact(message))

    info = warning = error = debug


def _options(cfg: DownloadConfig, media_dir: Path, video_id: str, archive: Path) -> dict[str, Any]:
    options: dict[str, Any] = {
        "format": cfg.format,
        "outtmpl": str(media_dir / f"{video_id}.%(ext)s"),
        "continuedl": True,
        "retries": 0,
        "fragment_retries": 3,
        "socket_timeout": cfg.socket_timeout_seconds,
        "quiet": True,
        "no_warnings": True,
        "logger": _QuietLog(),
        "noprogress": True,
        "noplaylist": True,
        "merge_output_format": "mp4",
        "download_archive": str(archive),
    }
    if cfg.rate_limit_bytes_per_second:
        options["ratelimit"] = cfg.rate_limit_bytes_per_second
    if cfg.max_filesize_mb:
        bound = int(cfg.max_filesize_mb * 1024 * 1024)
        options["max_filesize"] = bound  # refused before the download when the server announces its length

        def stop_when_over(progress: dict[str, Any]) -> None:  # else stopped as soon as more arrived than the bound
            if (progress.get("downloaded_bytes") or 0) > bound:
                raise TooLarge(f"over the size bound ({cfg.max_filesize_mb} MB)")

        options["progress_hooks"] = [stop_when_over]
    if cfg.cookiefile:
        options["cookiefile"] = cfg.cookiefile
    if proxy := (os.environ.get(cfg.proxy_env) if cfg.proxy_env else None) or cfg.proxy:
        options["proxy"] = proxy
    return options


SECRET_HEADERS = {"cookie", "authorization", "proxy-authorization"}


def without_secrets(value: Any) -> Any:
    """`value` without the cookies yt-dlp puts in an info dict (a format's `cookies`) or credential headers."""
    if isinstance(value, dict):
        return {key: without_secrets(item) for key, item in value.items()
                if key != "cookies" and str(key).lower() not in SECRET_HEADERS}  # fmt: skip
    if isinstance(value, list):
        return [without_secrets(item) for item in value]
    return value


def _write_info(media_dir: Path, video_id: str, info: dict[str, Any]) -> None:
    """`<id>.info.json` as yt-dlp would write it, less its secrets, atomically (yt-dlp's own keeps the cookies)."""
    folder = OutDir(media_dir)
    folder.write_json(folder.path(f"{video_id}.info.json"), without_secrets(info))


def _remove_partial(media_dir: Path, video_id: str) -> None:
    for path in media_dir.glob(f"{video_id}.*part"):
        path.unlink(missing_ok=True)


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
    except TooLarge as error:
        _remove_partial(media_dir, video_id)
        raise DownloadFailed(str(error), reason="too_large") from None
    except yt_dlp.utils.DownloadError as error:
        message = str(error)
        if isinstance((error.exc_info or (None, None))[1], TooLarge):
            _remove_partial(media_dir, video_id)
            raise DownloadFailed(str(error.exc_info[1]), reason="too_large") from None
        reason, code = classify(message)
        transient = bool(_TRANSIENT.search(message))
        raise DownloadFailed(reason, transient, code, _retry_after(error) if transient else None) from None
    path = _finished_file(media_dir, video_id)
    if path is not None and info.get("requested_downloads"):
        _write_info(media_dir, video_id, yt_dlp.YoutubeDL.sanitize_info(info, remove_private_keys=True))
    if path is not None:
        return info | {"filepath": str(path)}
    if not info.get("requested_downloads"):
        raise DownloadFailed(
            f"in {ARCHIVE_FILE} but its file is gone (keep_media: false?); remove its line to refetch", reason="gone"
        )
    if cfg.max_filesize_mb:
        raise DownloadFailed(f"over the size bound ({cfg.max_filesize_mb} MB)", reason="too_large")
    raise DownloadFailed("no file written", reason="no_file_written")


def download(url: str, video_id: str, media_dir: Path, cfg: DownloadConfig) -> dict[str, Any]:
    """Fetch `url` into `media_dir/<video_id>.<ext>` with its `.info.json` (cookies and credentials left out);
    retries transient failures."""
    media_dir.mkdir(parents=True, exist_ok=True)
    for attempt in range(cfg.attempts):
        try:
            with _slots(cfg.concurrent):
                return _attempt(url, video_id, media_dir, cfg)
        except DownloadFailed as error:
            if not error.transient or attempt == cfg.attempts - 1:
                if error.transient:
                    message = f"{error} after {cfg.attempts} attempts"
                    raise DownloadFailed(message, transient=True, reason=error.reason) from None
                raise
            wait = cfg.backoff_seconds * 2**attempt
            if error.retry_after is not None:  # the server said when: wait that long, within the configured bound
                wait = max(wait, min(error.retry_after, cfg.max_retry_after_seconds))
            time.sleep(wait)
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
            raise MediaError(f"file not found: {video.source}", "file_not_found")
        record = media_record(video.video_id, video.source, False, {})
        content = {"content": file_fingerprint(video.source)}
        return StageOutput(rows=[record], counters={"downloaded": 0}, values=content)
    folder = work.config.download.media_dir or work.media_dir
    if folder is None:
        raise MediaError("download.media_dir must be set when OUT is not a local folder", "no_media_dir")
    media_dir = Path(folder)
    info = download(video.source, video.video_id, media_dir, work.config.download)
    record = media_record(video.video_id, info["filepath"], True, info)
    counters = {"downloaded": 1, "bytes": record["size_bytes"]}
    return StageOutput(rows=[record], counters=counters, values={"content": file_fingerprint(info["filepath"])})
