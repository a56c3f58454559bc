"""The `instruct` flow: every unit of the instruct DAG a Prefect task (the same `unit_task` the data pipeline's
stages run as), stage after stage, then the funnel report as an artifact, and its deployment."""

from __future__ import annotations

from typing import Any

from prefect import flow
from prefect.artifacts import create_markdown_artifact
from prefect.deployments.runner import RunnerDeployment

from configs.instruct import InstructConfig, parse_instruct_config
from flows.process import run_stages, start_flow
from flows.runners import apply_concurrency_limits
from instruct.dag import STAGES, instruct_dag, summarize
from instruct.report import report_markdown
from pipeline.engine.engine import Engine
from storage.outdir import OutDir


def instruct_engine(out: str, shards: str | None, config: InstructConfig) -> Engine:
    return Engine(OutDir(out), config, instruct_dag(shards))


@flow(name="instruct", log_prints=True)
def instruct_flow(out: str, shards: str | None, config: dict[str, Any], force: bool = False) -> dict[str, Any]:
    """Instruction data from the shards in `shards` (None: user sets only) and the config's sources into OUT."""
    instruct_config = parse_instruct_config(config)
    engine = instruct_engine(out, shards, instruct_config)
    apply_concurrency_limits(instruct_config.run.concurrency_limits)
    report = summarize(engine, run_stages(engine, list(STAGES), force))
    create_markdown_artifact(key="instruct-funnel", markdown=report_markdown(report), description=out)
    return report


def run_instruct(out: str, shards: str | None, config: InstructConfig, force: bool = False) -> dict[str, Any]:
    """Run `instruct_flow` with the config's task runner. When every unit is current, Prefect is not started: the
    report is written again from the tables."""
    engine = instruct_engine(out, shards, config)
    if not force and engine.up_to_date(STAGES):
        print("every instruct unit is up to date: nothing to run")
        return summarize(engine, [])
    return start_flow(instruct_flow, config.run, out=out, shards=shards, config=config.model_dump(mode="json"),
                      force=force)  # fmt: skip


def instruct_deployment(out: str, shards: str, config: InstructConfig) -> RunnerDeployment:
    """The `instruct` deployment `textbook serve` registers: run when triggered (a newly published shard set adds
    its own batches; finished ones are skipped)."""
    return instruct_flow.to_deployment(
        name="instruct",
        parameters={"out": out, "shards": shards, "config": config.model_dump(mode="json")},
        description="instruction conversations from the current shards (MAmmoTH-VL style); finished batches skipped",
    )
