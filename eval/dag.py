"""Evaluation as a stage of the engine: one unit per benchmark x shot count, run under an `EvalConfig`.

A cell's result is current while the checkpoint's files, the benchmark files it reads and the settings it depends
on are what they were: a retrained checkpoint or a changed setting reruns only the cells it reaches, a finished
cell is skipped. The engine writes each cell's row to `stages/eval/<benchmark>-<shots>.parquet`; the cell's
prediction file (`predictions/<benchmark>-<k>shot.jsonl`) is its progress log, so a rerun generates only the
queries without a prediction under the same settings. `summarize` then writes the paper's table and the plot.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from configs.eval import EvalConfig
from eval import run as eval_run
from eval import score, scorers
from pipeline.engine.engine import Engine
from pipeline.engine.run_files import StageReport
from pipeline.engine.stage import Dag, Stage, Unit, UnitWork, code_version
from pipeline.models.assets import file_digests, resolve_local
from pipeline.records import StageOutput
from storage import schemas
from storage.outdir import OutDir
from storage.tables import digest

EVAL_STAGE = "eval"
VERSION = 1
# The code that turns predictions into a cell's row: a change to it rescores (predictions are kept).
ROW_MODULES = (sys.modules[__name__], eval_run, score, scorers)

_digests: dict[tuple[str, tuple[tuple[str, int, int], ...]], str] = {}
_shared_lock = threading.Lock()
_shared: dict[str, eval_run.EvalRun] = {}


def cell_id(benchmark: str, shots: int) -> str:
    return f"{benchmark}-{shots}"


def files_fingerprint(spec: str | None) -> str | None:
    """The sha256 of every file under a local model or data path, by name relative to it (a copy elsewhere is the
    same content); None for a hub id or no path, whose name is in the settings. Every byte is read, because a
    retrain that keeps some tensors frozen can leave a file's size, head and tail as they were; the digest is
    kept per process while no file's size or modification time changes."""
    local = resolve_local(spec) if spec else None
    if local is None:
        return None
    files = sorted(p for p in local.rglob("*") if p.is_file()) if local.is_dir() else [local]
    key = (str(local.resolve()), tuple((str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in files))
    if key not in _digests:
        root = local if local.is_dir() else local.parent
        _digests[key] = digest({str(Path(p).relative_to(root)): sha for p, sha in file_digests(local).items()})
    return _digests[key]


def scoring_settings(config: EvalConfig, benchmark: str) -> dict[str, Any]:
    """What a cell's row depends on beyond its predictions: how they are scored, over how many queries, its title."""
    bench = config.benchmarks[benchmark]
    math = config.math_scoring.model_dump(mode="json") if bench.scorer == "math" else None
    return {"scorer": bench.scorer, "title": bench.title, "limit": config.limit, "math_scoring": math}


@contextmanager
def shared_run(
    config: EvalConfig, model: str, checkpoint: dict[str, Any], out: OutDir, max_shots: int
) -> Iterator[eval_run.EvalRun]:
    """The process's one EvalRun (sets, embeddings and model loaded once for all its cells), held by one cell at a
    time: the model is what a cell spends its time in, and two cells at once would only split its cores. Another
    config, output, shot range or checkpoint content (a retrain in place) makes a new one and releases the old."""
    key = digest([config.model_dump(mode="json"), model, checkpoint, out.url, max_shots])
    with _shared_lock:
        if key not in _shared:
            _shared.clear()
            _shared[key] = eval_run.EvalRun(config, model, out, max_shots)
        yield _shared[key]


@dataclass(frozen=True)
class EvalCells:
    """The cells of one evaluation of one model: the eval stage's planner and its run function."""

    model: str
    benchmarks: tuple[str, ...]
    shots: tuple[int, ...]

    def plan(self, engine: Engine, stage: Stage) -> Iterator[Unit]:
        config: EvalConfig = engine.config
        checkpoint = {"spec": self.model, "files": files_fingerprint(self.model)}
        for name in self.benchmarks:
            bench = config.benchmarks[name]
            for shots in self.shots:
                sets = [bench.queries, bench.support] if shots else [bench.queries]
                external = {
                    "model": checkpoint,
                    "data": {set_name: files_fingerprint(config.datasets[set_name].path) for set_name in sets},
                    "generation": eval_run.generation_settings(config, name, shots),
                    "scoring": scoring_settings(config, name),
                }
                yield Unit(
                    cell_id(name, shots), external=external, payload=(name, shots), source=f"{name} {shots}-shot"
                )

    def run(self, work: UnitWork) -> StageOutput:
        benchmark, shots = work.payload
        with shared_run(work.config, self.model, work.unit.external["model"], work.out, max(self.shots)) as run:
            result = run.run_cell(benchmark, shots)
        return StageOutput(
            rows=[{name: result[name] for name in schemas.EVAL_CELL.names}],
            counters={"queries": result["count"], "generated": result["generated_now"]},
            values={"accuracy": result["accuracy"], "context_overflow": result["context_overflow"]},
        )


def no_config_sections(config: EvalConfig) -> tuple[str, ...]:
    """A cell's key takes its exact settings from its unit (one benchmark's templates, sets, scorer), not whole
    sections, so a change reaches only the cells it concerns."""
    return ()


def eval_dag(
    config: EvalConfig, model: str, benchmarks: list[str] | None = None, shots: list[int] | None = None
) -> Dag:
    """The evaluation DAG of `model` over `benchmarks` x `shots` (defaults: the config's), checked against it.
    `generation` is declared as the section it reads so the executor tags the stage `gpu` on a CUDA device."""
    names, shot_counts = eval_run.cells(config, benchmarks, shots)
    cells = EvalCells(model, tuple(names), tuple(shot_counts))
    version = f"{VERSION}-{digest([code_version(module) for module in ROW_MODULES])[:8]}"
    stage = Stage(EVAL_STAGE, "batch", version, (), ("generation",), schemas.EVAL_CELL, cells.run, cells.plan,
                  kind="model", sections=no_config_sections)  # fmt: skip
    return Dag((stage,), config_model=EvalConfig)


def summarize(engine: Engine, model: str, reports: list[StageReport]) -> dict[str, Any]:
    """`results.md`, `accuracy_by_shots.png` and `summary.json` over every current cell. A cell that failed or is
    blocked is no part of the table: it is listed under `missing`, and its failure under `failures`."""
    results: dict[str, dict[int, dict[str, Any]]] = {}
    missing = []
    shot_counts: list[int] = []
    for unit in engine.units(EVAL_STAGE).values():
        benchmark, shots = unit.payload
        shot_counts += [shots] if shots not in shot_counts else []
        if engine.current((EVAL_STAGE, unit.unit_id)) is None:
            missing.append(unit.unit_id)
            continue
        results.setdefault(benchmark, {})[shots] = engine.table((EVAL_STAGE, unit.unit_id)).to_pylist()[0]
    failures = [f"{f['video_id']}: {f['error_type']}: {f['message']}" for f in engine.failures()]
    stages = {report.stage: report.to_json() for report in reports}
    return eval_run.write_results(engine.out, engine.config, model, shot_counts, results, stages=stages,
                                  missing=missing, failures=failures, current=not missing)  # fmt: skip
