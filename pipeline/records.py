"""Records that travel between the flow and the stages."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any


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
    failures: list[dict[str, str]] = field(default_factory=list)  # parts that failed (unit, error_type, message)


def funnel(unit: str, kept: list[bool], reasons: list[str]) -> dict[str, Any]:
    """The report's funnel of a filter stage: units in, kept, and dropped by reason (in == kept + dropped)."""
    dropped = Counter(reason for keep, reason in zip(kept, reasons, strict=True) if not keep)
    return {"unit": unit, "in": len(kept), "kept": sum(kept), "dropped": dict(sorted(dropped.items()))}


def is_transient(error: BaseException) -> bool:
    """Whether trying the same unit again later may succeed: errors say so with a `transient` attribute (a 429, an
    unreachable endpoint); timeouts and dropped connections always may."""
    return bool(getattr(error, "transient", False)) or isinstance(error, TimeoutError | ConnectionError)
