"""Records that travel between the flow and the stages."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa

from configs import PipelineConfig


@dataclass(frozen=True)
class VideoInput:
    """One input video: `video_id` names every file made from it; `order` is its place in the input."""

    video_id: str
    source: str
    topic: str
    order: int


@dataclass
class StageOutput:
    """The rows a stage made for one unit, and figures about the work for the summary.

    A filter drops its whole video by setting `stats["dropped"]` to the reason: later stages then skip it."""

    rows: list[dict[str, Any]]
    stats: dict[str, Any] = field(default_factory=dict)


def funnel(unit: str, kept: list[bool], reasons: list[str]) -> dict[str, Any]:
    """The report's funnel of a filter stage: units in, kept, and dropped by reason (in == kept + dropped)."""
    dropped = Counter(reason for keep, reason in zip(kept, reasons, strict=True) if not keep)
    return {"unit": unit, "in": len(kept), "kept": sum(kept), "dropped": dict(sorted(dropped.items()))}


@dataclass(frozen=True)
class VideoWork:
    """What a per-video stage is given: its video, its upstream tables by stage name, the config, and the local
    folder downloads go to."""

    video: VideoInput
    inputs: dict[str, pa.Table]
    config: PipelineConfig
    media_dir: Path | None = None

    @property
    def media_path(self) -> str:
        """The local video file: the input itself, or what the download stage fetched."""
        return self.inputs["download"]["path"][0].as_py()


def is_transient(error: BaseException) -> bool:
    """Whether trying the same unit again later may succeed: errors say so with a `transient` attribute (a 429, an
    unreachable endpoint); timeouts and dropped connections always may."""
    return bool(getattr(error, "transient", False)) or isinstance(error, TimeoutError | ConnectionError)
