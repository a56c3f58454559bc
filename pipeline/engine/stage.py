"""What a stage declares to the engine: its unit kind, how its units are planned from its inputs, what each unit
reads, and the function that turns those reads into rows. The engine knows nothing else about a stage."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any, Literal

import pyarrow as pa
from pydantic import BaseModel

from configs import PipelineConfig
from pipeline.records import StageOutput, VideoInput
from storage.outdir import OutDir
from storage.tables import Stamp, digest

if TYPE_CHECKING:
    from pipeline.engine.engine import Engine

UnitKind = Literal["video", "topic", "knowledge_point", "corpus", "batch"]
# What a stage's failures look like, for the executor's retries and timeouts: "network" fetches, "model" runs a
# model back-end (possibly on a GPU or behind an endpoint), "compute" is deterministic local work.
StageKind = Literal["network", "model", "compute"]
# The result of one unit of one stage, named as `stages/<stage>/<unit>.parquet`.
ResultRef = tuple[str, str]


def code_version(module: ModuleType, version: int = 1) -> str:
    """A stage's version: its declared number and a hash of its module's source, so a code change that may change
    its output never leaves an old result current (a refactor costs a recompute, a stale result costs a corpus)."""
    return f"{version}-{digest(inspect.getsource(module))[:8]}"


@dataclass(frozen=True)
class Unit:
    """One planned unit: the results it reads (every one of them is part of its fingerprint, whether it reads rows
    or copies bytes from it), anything outside OUT that identifies its input, and what its stage is given."""

    unit_id: str
    reads: tuple[ResultRef, ...] = ()
    external: dict[str, Any] = field(default_factory=dict)
    payload: Any = None
    source: str = ""
    media_seconds: float = 0.0


@dataclass(frozen=True)
class UnitWork:
    """What a stage's function is given: its unit, the config, the tables it declared, and where media goes."""

    stage: str
    unit: Unit
    config: Any  # the DAG's config model: PipelineConfig for the data pipeline
    tables: Callable[[ResultRef], pa.Table]
    media_dir: Path | None = None
    fingerprints: dict[ResultRef, str] = field(default_factory=dict)  # of every read, all current
    out: OutDir | None = None  # for a stage that publishes files beyond its table (shards)

    def read(self, stage: str, unit_id: str | None = None) -> pa.Table:
        """The table of (stage, unit); a per-video stage reads its own video's result by stage name alone."""
        return self.tables((stage, unit_id or self.unit.unit_id))

    @property
    def payload(self) -> Any:
        return self.unit.payload

    @property
    def inputs(self) -> OwnResults:
        """A per-unit stage's upstream tables of the same unit, by stage name: `work.inputs["clips"]`."""
        return OwnResults(self)

    @property
    def video(self) -> VideoInput:
        return self.unit.payload

    @property
    def media_path(self) -> str:
        """The local video file: the input itself, or what the download stage fetched."""
        return self.read("download")["path"][0].as_py()


@dataclass(frozen=True)
class OwnResults:
    work: UnitWork

    def __getitem__(self, stage: str) -> pa.Table:
        return self.work.read(stage)


Planner = Callable[["Engine", "Stage"], Iterable[Unit]]


@dataclass(frozen=True)
class Stage:
    """One node of the DAG.

    `plan` lists its units from the engine's run inputs and the current results of its inputs; `inputs` names the
    stages it may read (the DAG is validated against them); `sections` picks, for a config, the sections its
    result depends on (all of `config_sections` by default). `reads_media` stages need the video file on disk;
    `whole_unit_drop` passes an upstream filter's drop of the unit down as an empty result; `retire` takes files a
    stage publishes beyond its table out of view when its result stops being current."""

    name: str
    unit_kind: UnitKind
    version: str
    inputs: tuple[str, ...]
    config_sections: tuple[str, ...]
    schema: pa.Schema
    run: Callable[[UnitWork], StageOutput]
    plan: Planner
    kind: StageKind = "compute"
    reads_media: bool = False
    whole_unit_drop: bool = False
    sections: Callable[[Any], tuple[str, ...]] | None = None
    retire: Callable[[OutDir, Stamp], None] | None = None

    def sections_for(self, config: BaseModel) -> tuple[str, ...]:
        return self.sections(config) if self.sections else self.config_sections


class DagError(ValueError):
    """A DAG that cannot run: an input that no earlier stage makes, an unknown config section, a repeated name."""


@dataclass(frozen=True)
class Dag:
    """Stages in the order they run, validated when built: every input made earlier (so no cycle), every config
    section a real one of `config_model` (the data pipeline's by default; training and evaluation have theirs)."""

    stages: tuple[Stage, ...]
    config_model: type[BaseModel] = PipelineConfig

    def __post_init__(self) -> None:
        seen: set[str] = set()
        known_sections = set(self.config_model.model_fields)
        for stage in self.stages:
            if stage.name in seen:
                raise DagError(f"stage {stage.name!r} is declared twice")
            missing = [name for name in stage.inputs if name not in seen]
            if missing:
                raise DagError(f"stage {stage.name!r} reads {missing}, which no earlier stage makes")
            unknown = [name for name in stage.config_sections if name not in known_sections]
            if unknown:
                raise DagError(f"stage {stage.name!r} depends on unknown config sections {unknown}")
            seen.add(stage.name)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(stage.name for stage in self.stages)

    def __getitem__(self, name: str) -> Stage:
        for stage in self.stages:
            if stage.name == name:
                return stage
        raise KeyError(f"no stage {name!r} in the DAG ({', '.join(self.names)})")

    def __contains__(self, name: object) -> bool:
        return name in self.names

    def downstream_of(self, name: str) -> list[str]:
        """Every stage that reads `name`, directly or through others, in DAG order."""
        affected = {name}
        ordered = []
        for stage in self.stages:
            if affected.intersection(stage.inputs):
                affected.add(stage.name)
                ordered.append(stage.name)
        return ordered

    def extended(self, *stages: Stage) -> Dag:
        return Dag((*self.stages, *stages), self.config_model)

    def with_stage(self, replacement: Stage) -> Dag:
        """The same DAG with one stage swapped for another of its name (a different back-end, a held result)."""
        self[replacement.name]
        stages = tuple(replacement if stage.name == replacement.name else stage for stage in self.stages)
        return Dag(stages, self.config_model)
