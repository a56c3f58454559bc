"""Planners shared by stages of the same unit kind: how a stage's units follow from the run's inputs."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from pipeline.engine.stage import Planner, Stage, Unit
from pipeline.inputs import source_fingerprint as fingerprint

if TYPE_CHECKING:
    from pipeline.engine.engine import Engine


def per_video(source_fingerprint: bool = False) -> Planner:
    """One unit per input video, reading its own results of every input stage; with `source_fingerprint` the
    content of the source file (or its URL) identifies the unit's input too."""

    def plan(engine: Engine, stage: Stage) -> Iterator[Unit]:
        for video in engine.videos:
            external = {"source": fingerprint(video.source)} if source_fingerprint else {}
            reads = tuple((name, video.video_id) for name in stage.inputs)
            yield Unit(video.video_id, reads, external, payload=video, source=video.source)

    return plan


def current_members(engine: Engine, refs: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """The refs whose results are current; all of them when none is, so the unit is planned but blocked (and an
    older result of it retired) rather than left unplanned and silently served."""
    current = [ref for ref in refs if engine.current(ref) is not None]
    return current or refs
