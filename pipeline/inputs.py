"""Turn `--input PATH` (a video, a folder, or a .txt/.csv/.parquet manifest) into ordered video inputs.

Manifest entries may be http(s) URLs, fetched by the download stage. A `video_id` comes from the file name (or
the URL), reduced to `[A-Za-z0-9._-]`; a collision gets a short hash of the source added, so two inputs never
share files and no name can reach outside OUT. A video listed twice, or under two names with the same content, or
as two URLs of one video, is kept once (the first) and the others are recorded with a reason code, so a corpus
never holds a video twice.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from configs.schema import InputConfig
from pipeline.download import is_url
from pipeline.media import file_fingerprint
from pipeline.records import VideoInput
from storage.tables import digest

MANIFEST_SUFFIXES = {".txt", ".csv", ".parquet"}
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
MAX_ID_LENGTH = 80


class InputError(ValueError):
    """An input that names no usable video list."""


DUPLICATE_CONTENT = "duplicate_content"
DUPLICATE_URL = "duplicate_url"
YOUTUBE_HOSTS = {"youtube.com", "www.youtube.com", "m.youtube.com", "youtu.be", "www.youtu.be"}


@dataclass
class ResolvedInputs:
    videos: list[VideoInput]
    ignored: list[str] = field(default_factory=list)
    duplicates: list[dict[str, str]] = field(default_factory=list)  # source, duplicate_of, reason


def source_fingerprint(path: str) -> str:
    """Content identity of a source file (`file_fingerprint`). A URL is identified by itself: what it serves is
    pinned by the download stage's result, whose content the pack stage compares across videos."""
    if is_url(path):
        return digest(path)
    if not os.path.isfile(path):
        return "missing"
    return file_fingerprint(path)


def url_identity(url: str) -> str:
    """One key for every spelling of one online video: YouTube's id from watch, short, embed and youtu.be links;
    otherwise the URL without its scheme, fragment and a trailing slash."""
    parsed = urlparse(url)
    host = parsed.netloc.lower()
    if host in YOUTUBE_HOSTS:
        if video := parse_qs(parsed.query).get("v"):
            return f"youtube:{video[0]}"
        parts = [part for part in parsed.path.split("/") if part]
        if parts and (host.endswith("youtu.be") or parts[0] in {"shorts", "embed", "live"}):
            return f"youtube:{parts[-1]}"
    query = f"?{parsed.query}" if parsed.query else ""
    return f"{host}{parsed.path.rstrip('/')}{query}"


def _identity(source: str) -> tuple[str, str]:
    """(key, the reason code of a repeat): what makes two inputs the same video."""
    if is_url(source):
        return f"url:{url_identity(source)}", DUPLICATE_URL
    fingerprint = source_fingerprint(source)
    return (f"path:{source}" if fingerprint == "missing" else f"content:{fingerprint}"), DUPLICATE_CONTENT


def deduplicate(entries: list[tuple[str, str | None]]) -> tuple[list[tuple[str, str | None]], list[dict[str, str]]]:
    """The first entry of each video, in order, and a record for each repeat."""
    first: dict[str, str] = {}
    kept, repeats = [], []
    for source, topic in entries:
        key, reason = _identity(source)
        if key in first:
            repeats.append({"source": source, "duplicate_of": first[key], "reason": reason})
            continue
        first[key] = source
        kept.append((source, topic))
    return kept, repeats


def sanitize_id(name: str) -> str:
    """A file-system-safe id: allowed characters only, starting with a letter or digit, never empty."""
    cleaned = _UNSAFE.sub("_", name).strip("._-")[:MAX_ID_LENGTH].strip("._-")
    return cleaned or "video"


def url_stem(url: str) -> str:
    """A readable name for a URL: YouTube's `v=` id, else the last path component without its extension."""
    parsed = urlparse(url)
    if video := parse_qs(parsed.query).get("v"):
        return video[0]
    return Path(parsed.path).stem or parsed.netloc


def _short_hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:8]


def readable_name(path: str) -> str:
    """A path as text that survives UTF-8 (JSON, Parquet, HTML): a byte of a non-UTF-8 file name becomes U+FFFD."""
    return os.fsencode(path).decode("utf-8", errors="replace")


def _nameable(source: str) -> bool:
    """Whether a source can be recorded as it is: no NUL (no file has one), and UTF-8 (inputs.parquet, the
    failures and the report hold text). Any other is listed as ignored, under its readable name."""
    return "\x00" not in source and readable_name(source) == source


def _within(path: Path, roots: list[Path]) -> bool:
    resolved = path.resolve()
    return any(resolved.is_relative_to(root) for root in roots)


def _check_allowed(sources: list[str], cfg: InputConfig) -> None:
    """With `allowed_roots`, refuse an input any of whose local files (symlinks resolved) lies outside them."""
    if not cfg.allowed_roots:
        return
    roots = [Path(root).expanduser().resolve() for root in cfg.allowed_roots]
    for source in sources:
        if not is_url(source) and not _within(Path(source), roots):
            raise InputError(
                f"{readable_name(source)} is outside input.allowed_roots ({', '.join(cfg.allowed_roots)})"
            )


def resolve_inputs(path: str | Path, cfg: InputConfig) -> ResolvedInputs:
    path = Path(path)
    if not path.exists():
        raise InputError(f"input not found: {path}")
    _check_allowed([str(path)], cfg)
    extensions = {ext.lower() for ext in cfg.video_extensions}
    ignored: list[str] = []
    if path.is_dir():
        entries: list[tuple[str, str | None]] = []
        for child in sorted(path.iterdir()):
            leaves = child.is_symlink() and not _within(child, [path.resolve()])
            if child.is_file() and child.suffix.lower() in extensions and (cfg.follow_symlinks or not leaves):
                entries.append((str(child), None))
            else:
                ignored.append(readable_name(str(child)))
        default_topic = path.resolve().name
    elif path.suffix.lower() in MANIFEST_SUFFIXES:
        entries = _read_manifest(path)
        default_topic = path.stem
    elif path.suffix.lower() in extensions:
        entries = [(str(path), None)]
        default_topic = path.stem
    else:
        raise InputError(f"{path} is neither a video ({', '.join(sorted(extensions))}), a folder nor a manifest")
    ignored += [readable_name(source) for source, _ in entries if not _nameable(source)]
    entries = [(source, topic) for source, topic in entries if _nameable(source)]
    if not entries:
        raise InputError(f"no videos in {path}")
    _check_allowed([source for source, _ in entries], cfg)
    entries, duplicates = deduplicate(entries)
    videos = _assign_ids(entries, sanitize_id(default_topic))
    return ResolvedInputs(videos=videos, ignored=ignored, duplicates=duplicates)


def _read_manifest(path: Path) -> list[tuple[str, str | None]]:
    base = path.parent
    if path.suffix.lower() == ".txt":
        lines = [line.strip() for line in path.read_text().splitlines()]
        return [(_local(line, base), None) for line in lines if line and not line.startswith("#")]
    table = pq.read_table(path) if path.suffix.lower() == ".parquet" else pacsv.read_csv(path)
    if "path" not in table.column_names:
        raise InputError(f"manifest {path} has no 'path' column (columns: {', '.join(table.column_names)})")
    paths = table["path"].to_pylist()
    topics = table["topic"].to_pylist() if "topic" in table.column_names else [None] * len(paths)
    return [(_local(str(p), base), str(t) if t is not None else None) for p, t in zip(paths, topics, strict=True) if p]


def _local(entry: str, base: Path) -> str:
    """Relative manifest paths are relative to the manifest's folder; URLs stay as they are."""
    if is_url(entry):
        return entry
    candidate = Path(entry).expanduser()
    return str(candidate if candidate.is_absolute() else base / candidate)


def _assign_ids(entries: list[tuple[str, str | None]], default_topic: str) -> list[VideoInput]:
    videos: list[VideoInput] = []
    taken: set[str] = set()
    for order, (source, topic) in enumerate(entries):
        video_id = sanitize_id(url_stem(source) if is_url(source) else Path(source).stem)
        if video_id in taken:
            video_id = f"{video_id[: MAX_ID_LENGTH - 9]}-{_short_hash(source + str(order))}"
        taken.add(video_id)
        videos.append(VideoInput(video_id, source, sanitize_id(topic) if topic else default_topic, order))
    return videos
