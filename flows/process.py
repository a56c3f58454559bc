"""Prefect flows over the DAG: each stage a task mapped over its planned units, stage after stage."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from prefect import flow, task
from prefect.artifacts import create_link_artifact, create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from prefect.futures import PrefectFuture, as_completed
from prefect.logging.handlers import PrefectConsoleHandler
from prefect.runtime import task_run
from prefect.states import Completed, Failed, State
from tqdm import tqdm

from configs import PipelineConfig, parse_config
from flows.runners import apply_concurrency_limits, stage_resources, task_options, task_runner
from pipeline.dag import DAG, PROCESS_STAGES
from pipeline.engine.engine import Engine, UnitResult, error_message
from pipeline.engine.run_files import RunFiles, StageReport
from pipeline.metrics.report import markdown_text, metrics_markdown, report_url


class TransientUnitFailure(RuntimeError):
    """Raised from a task whose unit failed in a way a retry may fix, so Prefect retries it with backoff."""


_STATE_NAMES = {"done": "Completed", "skipped": "Skipped", "dropped": "Dropped", "blocked": "Blocked"}


def unit_state(result: UnitResult, retries: int) -> State:
    """The task run's state in the UI: Completed, Skipped (already done), Dropped (a filter), Blocked (an input
    failed or is not current) or Failed; a transient failure with retries left raises instead, for Prefect to
    retry."""
    if result.status == "failed":
        if result.transient and task_run.run_count <= retries:
            raise TransientUnitFailure(f"{result.error_type}: {result.message}")
        return Failed(message=f"{result.error_type}: {result.message}", data=result)
    message = {"skipped": "already done with these inputs"}.get(result.status, result.message)
    return Completed(name=_STATE_NAMES[result.status], message=message, data=result)


def retry_only_transient(task: object, task_run: object, state: State) -> bool:
    """Prefect retries a task whose unit failed in a way a retry may fix (it raised TransientUnitFailure); a unit
    that failed for good (a 404, a missing file, corrupt media) returned its Failed state and is recorded at once,
    instead of holding a worker through the retry delays."""
    return isinstance(state.result(raise_on_failure=False), TransientUnitFailure)


@task(task_run_name="{stage}-{unit_id}", cache_policy=NO_CACHE, retry_condition_fn=retry_only_transient)
def unit_task(stage: str, unit_id: str, engine: Engine, force: bool) -> State:
    result = engine.run_unit(stage, unit_id, force=force)
    return unit_state(result, getattr(engine.config.run.tasks, engine.dag[stage].kind).retries)


@dataclass(frozen=True)
class Submitted:
    """A submitted unit, so a task that ends without a result (a timeout, a crash) is still recorded."""

    future: PrefectFuture
    stage: str
    unit: str
    source: str


def _unit_result(submitted: Submitted, engine: Engine) -> UnitResult:
    outcome = submitted.future.result(raise_on_failure=False)
    if isinstance(outcome, UnitResult):
        return outcome
    error = outcome if isinstance(outcome, BaseException) else RuntimeError(f"task ended with {outcome!r}")
    message = error_message(error)
    engine.record_failure(submitted.stage, submitted.unit, type(error).__name__, message, submitted.source)
    return UnitResult(submitted.stage, submitted.unit, "failed", error_type=type(error).__name__, message=message)


def gather(stage: str, submitted: Sequence[Submitted], engine: Engine, progress: bool) -> StageReport:
    started = time.perf_counter()
    results: list[UnitResult] = []
    by_future = {unit.future: unit for unit in submitted}
    with tqdm(total=len(submitted), desc=f"{stage:>10}", unit="unit", disable=not progress, leave=True) as bar:
        for future in as_completed(list(by_future)):
            result = _unit_result(by_future[future], engine)
            results.append(result)
            bar.set_postfix_str(f"{result.unit}: {result.status}", refresh=False)
            bar.update()
    return StageReport.from_results(stage, results, time.perf_counter() - started)


def run_stages(
    engine: Engine, stages: Sequence[str], force: bool, video_ids: Sequence[str] | None = None
) -> list[StageReport]:
    """Run the named stages in DAG order, every planned unit a Prefect task run (per-video stages only over
    `video_ids` when given); called inside a flow."""
    config = engine.config
    reports = []
    for stage in engine.dag.stages:
        if stage.name not in stages:
            continue
        options = task_options(stage.name, stage.kind, stage.config_sections, config)
        stage_task = unit_task.with_options(**options)
        with stage_resources("gpu" in options["tags"], config.run):
            submitted = [
                Submitted(
                    stage_task.submit(stage.name, unit.unit_id, engine, force), stage.name, unit.unit_id, unit.source
                )  # fmt: skip
                for unit in engine.units(stage.name).values()
                if video_ids is None or stage.unit_kind != "video" or unit.unit_id in video_ids
            ]
        reports.append(gather(stage.name, submitted, engine, config.run.progress))
    return reports


@flow(name="process", log_prints=True)
def process_flow(
    out: str, config: dict[str, Any], stages: list[str], video_ids: list[str] | None = None, force: bool = False
) -> dict[str, Any]:
    """Process the videos recorded in OUT/inputs.parquet through `stages`; returns the run summary."""
    files = RunFiles.open(out)
    pipeline_config: PipelineConfig = parse_config(config)
    engine = Engine(files.out, pipeline_config, DAG, files.read_inputs())
    apply_concurrency_limits(pipeline_config.run.concurrency_limits)
    started = time.perf_counter()
    reports = run_stages(engine, stages, force, video_ids)
    summary = files.finish(engine, reports, time.perf_counter() - started)
    written = summary["metrics"]
    metrics = files.out.read_json(files.out.path(written["file"])) if "file" in written else None
    markdown = summary_markdown(summary, metrics)
    create_markdown_artifact(key="run-summary", markdown=markdown, description=f"run of {out}")
    if written.get("report"):
        create_link_artifact(
            key="run-report", link=report_url(files.out), link_text=written["report"], description=f"report of {out}"
        )
    return summary


def summary_markdown(summary: dict[str, Any], metrics: dict[str, Any] | None = None) -> str:
    """The run summary as a markdown table, for the Prefect UI, with the report's figures when there are some."""
    lines = [
        f"**{summary['videos']['in']} videos, {summary['videos']['failed']} failed, {summary['samples']} samples** "
        f"in {', '.join(summary['shards']) or 'no shard'}",
        "",
        "| stage | done | skipped (already done) | dropped | failed | blocked | wall s | video s/s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for stage, row in summary["stages"].items():
        rate = row["media_seconds_per_second"] or "-"
        counts = " | ".join(str(row[key]) for key in ("done", "skipped", "dropped", "failed", "blocked"))
        lines.append(f"| {stage} | {counts} | {row['wall_seconds']} | {rate} |")
    failed, dropped = summary["failures"]["by_reason"], summary["videos"]["dropped"]
    lines += ["", *(f"- failed x{count}: {markdown_text(reason)}" for reason, count in failed.items())]
    lines += [f"- dropped x{count}: {markdown_text(reason)}" for reason, count in dropped.items()]
    if metrics is not None:
        lines += ["", metrics_markdown(metrics)]
    return "\n".join(lines)


def _timeout_warning(record: logging.LogRecord) -> bool:
    # Prefect warns on every task that a timeout cannot interrupt a worker thread mid-call (the unit fails when
    # the call returns); run.tasks in the config says it once instead.
    return record.name == "prefect.task_runs" and record.getMessage().startswith("Timeout of")


def quiet_task_logs_on_console(progress: bool) -> None:
    """With progress bars, per-task "Finished" lines would tear them apart; they still reach the API and the UI."""
    for name in ("", "prefect"):
        for handler in logging.getLogger(name).handlers:
            if isinstance(handler, PrefectConsoleHandler):
                handler.addFilter(lambda record: not _timeout_warning(record))
                if progress:
                    handler.addFilter(
                        lambda record: record.name != "prefect.task_runs" or record.levelno >= logging.WARNING
                    )


def process(
    out: str, config: PipelineConfig, stages: list[str], video_ids: list[str] | None = None, force: bool = False
) -> dict[str, Any]:
    """Run `process_flow` with a thread pool sized by `run.workers`, so videos of one stage run side by side.

    When every unit is already done, Prefect is not started at all: a finished run answers in a second.
    """
    files = RunFiles.open(out)
    engine = Engine(files.out, config, DAG, files.read_inputs())
    whole_run = set(stages) == set(PROCESS_STAGES) and video_ids is None
    if whole_run and not force and engine.up_to_date(PROCESS_STAGES):
        print("every stage is up to date: nothing to run")
        return files.finish(engine, [], 0.0)
    quiet_task_logs_on_console(config.run.progress)
    runner = task_runner(config.run)
    configured = process_flow.with_options(task_runner=runner)
    return configured(out=out, config=config.model_dump(mode="json"), stages=stages, video_ids=video_ids, force=force)
