"""Turn `--input PATH` (a video, a folder, or a .txt/.csv/.parquet manifest) into ordered video inputs.

Manifest entries may be http(s) URLs, fetched by the download stage. A `video_id` comes from the file name (or
the URL), reduced to `[A-Za-z0-9._-]`; a collision gets a short hash of the source added, so two inputs never
share files and no name can reach outside OUT.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from configs.schema import InputConfig
from pipeline.download import is_url
from pipeline.records import VideoInput

MANIFEST_SUFFIXES = {".txt", ".csv", ".parquet"}
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
MAX_ID_LENGTH = 80


class InputError(ValueError):
    """An input that names no usable video list."""


@dataclass
class ResolvedInputs:
    videos: list[VideoInput]
    ignored: list[str] = field(default_factory=list)


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


def resolve_inputs(path: str | Path, cfg: InputConfig) -> ResolvedInputs:
    path = Path(path)
    if not path.exists():
        raise InputError(f"input not found: {path}")
    extensions = {ext.lower() for ext in cfg.video_extensions}
    ignored: list[str] = []
    if path.is_dir():
        entries: list[tuple[str, str | None]] = []
        for child in sorted(path.iterdir()):
            if child.is_file() and child.suffix.lower() in extensions:
                entries.append((str(child), None))
            else:
                ignored.append(str(child))
        default_topic = path.resolve().name
    elif path.suffix.lower() in MANIFEST_SUFFIXES:
        entries = _read_manifest(path)
        default_topic = path.stem
    elif path.suffix.lower() in extensions:
        entries = [(str(path), None)]
        default_topic = path.stem
    else:
        raise InputError(f"{path} is neither a video ({', '.join(sorted(extensions))}), a folder nor a manifest")
    if not entries:
        raise InputError(f"no videos in {path}")
    return ResolvedInputs(videos=_assign_ids(entries, sanitize_id(default_topic)), ignored=ignored)


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
