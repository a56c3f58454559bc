"""The DAG without an executor: every planned unit of each stage in turn, in this process. Tests, benchmarks and
the check of a finished run use it; the flows submit the same `Engine.run_unit` calls as Prefect tasks."""

from __future__ import annotations

import time
from collections.abc import Iterable

from pipeline.engine.engine import Engine
from pipeline.engine.run_files import StageReport


def run_stages(engine: Engine, stage_names: Iterable[str], force: bool = False) -> list[StageReport]:
    wanted = set(stage_names)
    reports = []
    for stage in engine.dag.stages:
        if stage.name in wanted:
            started = time.perf_counter()
            results = [engine.run_unit(stage.name, unit_id, force) for unit_id in list(engine.units(stage.name))]
            reports.append(StageReport.from_results(stage.name, results, time.perf_counter() - started))
    return reports
