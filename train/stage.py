"""Training as a stage of the engine: one unit is one training run over one shard set under one training config
(unit kind "corpus"), run under a `TrainJobConfig`.

The unit's id and its `external` name the shard set (the set id of `index.json`) and the config's digest, so a newly
published set or a changed config is a new run, in a folder of its own (`OUT/runs/<unit>/`), and a finished run is
skipped. The run's checkpoints are the unit's append-only progress log: a killed unit (or a Prefect retry) resumes
from the latest complete checkpoint. The engine writes the run's row (its final figures) to
`stages/train/<unit>.parquet`; `summarize` lists every planned run in `OUT/summary.json`.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from configs.train import TrainJobConfig
from pipeline.engine.engine import Engine
from pipeline.engine.run_files import StageReport
from pipeline.engine.stage import Dag, Stage, Unit, UnitWork, code_version
from pipeline.records import StageOutput
from storage import schemas
from storage.outdir import OutDir
from storage.shards import ShardSet
from storage.tables import digest
from train import checkpoint
from train.report import LOSS_PLOT, METRICS_FILE
from train.run import MODEL_DIR, train
from train.sft import open_training_data
from train.shardset import from_pinned

TRAIN_STAGE = "train"
RUNS_DIR = "runs"
SUMMARY_FILE = "summary.json"
VERSION = 1


def run_folder(out: OutDir, unit_id: str) -> Path:
    """A run's local folder (checkpoints are written with local renames and fsyncs)."""
    if not out.is_local:
        raise ValueError(f"a training run's folder is local: {out.url} is not (the shards may be remote)")
    return Path(out.path(RUNS_DIR, unit_id))


def config_digest(job: TrainJobConfig) -> str:
    return digest(job.train.model_dump(mode="json"))


def latest_pinned_set(out: OutDir, config: str) -> ShardSet | None:
    """The set that this config's most recently checkpointed run in OUT pinned, if there is one."""
    latest = [
        found
        for folder in out.list(RUNS_DIR)
        if folder.endswith(f"-{config}") and (found := checkpoint.latest(Path(folder))) is not None
    ]
    if not latest:
        return None
    newest = max(latest, key=lambda folder: (folder / checkpoint.STATE_FILE).stat().st_mtime)
    return from_pinned(json.loads((newest / checkpoint.STATE_FILE).read_text())["shards"])


@dataclass(frozen=True)
class TrainRuns:
    """The train stage's planner and run function over the shards folder `shards`; with `resume`, the run planned
    is this config's latest one in OUT, on the set it pinned, even when a newer set has been published since."""

    shards: str
    resume: bool = False

    def plan(self, engine: Engine, stage: Stage) -> Iterator[Unit]:
        config = config_digest(engine.config)
        pinned = latest_pinned_set(engine.out, config) if self.resume else None
        shard_set = pinned or open_training_data(self.shards)
        external = {"shards": shard_set.set_id, "config": config}
        yield Unit(f"{shard_set.set_id}-{config}", external=external, payload=shard_set, source=shard_set.url)

    def run(self, work: UnitWork) -> StageOutput:
        folder = run_folder(work.out, work.unit.unit_id)
        job: TrainJobConfig = work.config
        metrics = train(job.train, work.payload, folder, resume=checkpoint.latest(folder) is not None)
        model = folder / MODEL_DIR if job.train.run.save_model else None
        row = {name: metrics.get(name) for name in schemas.TRAIN_RUN.names}
        row |= {"shard_set": work.payload.set_id, "run_folder": str(folder), "model": model and str(model)}
        return StageOutput(
            rows=[row],
            counters={"steps": metrics["steps"], "tokens": metrics["tokens"], "images": metrics["images"]},
            values={"final_loss": metrics["final_loss"], "tokens_per_s": metrics["tokens_per_s"]},
        )


def train_dag(shards: str, resume: bool = False) -> Dag:
    runs = TrainRuns(shards, resume)
    version = code_version(sys.modules[__name__], VERSION)
    stage = Stage(TRAIN_STAGE, "corpus", version, (), (), schemas.TRAIN_RUN, runs.run, runs.plan, kind="model")
    return Dag((stage,), config_model=TrainJobConfig)


def summarize(engine: Engine, reports: list[StageReport]) -> dict[str, Any]:
    """`OUT/summary.json`: every planned run with its row and files when it is current; a run that failed or is
    still to do is listed without them, with the failures."""
    runs = []
    for unit_id, unit in engine.units(TRAIN_STAGE).items():
        entry: dict[str, Any] = {"unit": unit_id, "shard_set": unit.external["shards"], "current": False}
        if engine.current((TRAIN_STAGE, unit_id)) is not None:
            row = engine.table((TRAIN_STAGE, unit_id)).to_pylist()[0]
            folder = Path(row["run_folder"])
            entry |= {"current": True, "row": row, "metrics": str(folder / METRICS_FILE),
                      "loss_curve": str(folder / LOSS_PLOT)}  # fmt: skip
        runs.append(entry)
    summary = {
        "runs": runs,
        "current": bool(runs) and all(run["current"] for run in runs),
        "failures": [f"{f['video_id']}: {f['error_type']}: {f['message']}" for f in engine.failures()],
        "stages": {report.stage: report.to_json() for report in reports},
    }
    engine.out.write_json(engine.out.path(SUMMARY_FILE), summary)
    return summary
