"""Records that travel between the flow and the stages."""

from __future__ import annotations

import re
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
    """The rows a stage made for one unit, and typed figures about the work.

    `counters` add up over units (segments, keyframes, bytes); `values` are one unit's measurements and verdicts,
    never added up (a duration, a score, a flag); `labels` name categories (the method that judged). A filter that
    drops its whole unit sets `drop` to its reason code: later stages then pass the drop down as empty results.
    `failures` are parts of the unit that failed (unit, error_type, message) and are recorded as such."""

    rows: list[dict[str, Any]]
    counters: dict[str, int | float] = field(default_factory=dict)
    values: dict[str, Any] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)
    funnel: dict[str, Any] | None = None
    drop: dict[str, str] | None = None
    failures: list[dict[str, str]] = field(default_factory=list)

    @property
    def stats(self) -> dict[str, Any]:
        """The figures as the stamp keeps them, in one shape for every stage."""
        return {"counters": self.counters, "values": self.values, "labels": self.labels, "funnel": self.funnel,
                "drop": self.drop}  # fmt: skip


def unit_drop(stage: str, reason: str) -> dict[str, str]:
    return {"stage": stage, "reason": reason}


def funnel(unit: str, kept: list[bool], reasons: list[str]) -> dict[str, Any]:
    """The report's funnel of a filter stage: units in, kept, and dropped by reason (in == kept + dropped)."""
    dropped = Counter(reason for keep, reason in zip(kept, reasons, strict=True) if not keep)
    return {"unit": unit, "in": len(kept), "kept": sum(kept), "dropped": dict(sorted(dropped.items()))}


def is_transient(error: BaseException) -> bool:
    """Whether trying the same unit again later may succeed: errors say so with a `transient` attribute (a 429, an
    unreachable endpoint); timeouts and dropped connections always may."""
    return bool(getattr(error, "transient", False)) or isinstance(error, TimeoutError | ConnectionError)


def reason_code(error: BaseException) -> str:
    """A failure's countable code: the error's own `reason` when it has one (`empty_file`, `http_404`), else its
    type in snake case (`timeout_error`, `json_decode_error`)."""
    reason = getattr(error, "reason", None)
    return reason if isinstance(reason, str) and reason else type_code(type(error).__name__)


def type_code(error_type: str) -> str:
    """`TimeoutError` -> `timeout_error`: the code of a failure that names no reason of its own."""
    return re.sub(r"(?<!^)(?=[A-Z])", "_", error_type).lower()
