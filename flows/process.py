"""Prefect flows over the DAG: each stage a task mapped over videos (pack over topics), stage after stage."""

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
from flows.report import metrics_markdown, report_url
from flows.run_files import RunFiles, StageReport
from flows.runners import apply_concurrency_limits, stage_resources, task_options, task_runner
from flows.units import UnitResult, Workspace, topic_id, topics_in_order
from pipeline.dag import ALL_STAGES, PACK_STAGE, SHARDS_STAGE, STAGES_BY_NAME, VIDEO_STAGES
from pipeline.records import VideoInput


class TransientUnitFailure(RuntimeError):
    """Raised from a task whose unit failed in a way a retry may fix, so Prefect retries it with backoff."""


_STATE_NAMES = {"done": "Completed", "skipped": "Skipped", "dropped": "Dropped", "blocked": "Blocked"}


def unit_state(result: UnitResult, retries: int) -> State:
    """The task run's state in the UI: Completed, Skipped (already done), Dropped (a filter), Blocked (an input
    failed) or Failed; a transient failure with retries left raises instead, for Prefect to retry."""
    if result.status == "failed":
        if result.transient and task_run.run_count <= retries:
            raise TransientUnitFailure(f"{result.error_type}: {result.message}")
        return Failed(message=f"{result.error_type}: {result.message}", data=result)
    message = {"skipped": "already done with these inputs"}.get(result.status, result.message)
    return Completed(name=_STATE_NAMES[result.status], message=message, data=result)


@task(task_run_name="{stage}-{video_id}", cache_policy=NO_CACHE)
def video_stage_task(stage: str, video_id: str, video: VideoInput, workspace: Workspace, force: bool) -> State:
    result = workspace.run_video_stage(stage, video, force=force)
    return unit_state(result, getattr(workspace.config.run.tasks, STAGES_BY_NAME[stage].kind).retries)


@task(task_run_name="pack-{topic_id}", cache_policy=NO_CACHE)
def pack_task(topic_id: str, topic: str, videos: list[VideoInput], workspace: Workspace, force: bool) -> State:
    return unit_state(workspace.run_pack(topic, videos, force=force), workspace.config.run.tasks.compute.retries)


@task(task_run_name="shards", cache_policy=NO_CACHE)
def shards_task(topics: list[str], workspace: Workspace, force: bool) -> State:
    return unit_state(workspace.run_shards(topics, force=force), workspace.config.run.tasks.compute.retries)


@dataclass(frozen=True)
class Submitted:
    """A submitted unit, so a task that ends without a result (a timeout, a crash) is still recorded."""

    future: PrefectFuture
    stage: str
    unit: str
    source: str


def _unit_result(submitted: Submitted, workspace: Workspace) -> UnitResult:
    outcome = submitted.future.result(raise_on_failure=False)
    if isinstance(outcome, UnitResult):
        return outcome
    error = outcome if isinstance(outcome, BaseException) else RuntimeError(f"task ended with {outcome!r}")
    message = str(error).strip().splitlines()[0][:500] if str(error).strip() else repr(error)
    workspace.record_failure(submitted.stage, submitted.unit, type(error).__name__, message, submitted.source)
    return UnitResult(submitted.stage, submitted.unit, "failed", error_type=type(error).__name__, message=message)


def gather(stage: str, submitted: Sequence[Submitted], workspace: Workspace, progress: bool) -> StageReport:
    started = time.perf_counter()
    results: list[UnitResult] = []
    by_future = {unit.future: unit for unit in submitted}
    with tqdm(total=len(submitted), desc=f"{stage:>10}", unit="unit", disable=not progress, leave=True) as bar:
        for future in as_completed(list(by_future)):
            result = _unit_result(by_future[future], workspace)
            results.append(result)
            bar.set_postfix_str(f"{result.unit}: {result.status}", refresh=False)
            bar.update()
    return StageReport.from_results(stage, results, time.perf_counter() - started)


def run_stages(
    workspace: Workspace, videos: list[VideoInput], stages: Sequence[str], force: bool
) -> list[StageReport]:
    """Run the named stages in DAG order; called inside a flow so every unit is a Prefect task run."""
    config = workspace.config
    progress = config.run.progress
    reports = []
    for stage in VIDEO_STAGES:
        if stage.name in stages:
            options = task_options(stage.name, stage.kind, stage.config_sections, config)
            stage_task = video_stage_task.with_options(**options)
            with stage_resources("gpu" in options["tags"], config.run):
                submitted = [
                    Submitted(
                        stage_task.submit(stage.name, v.video_id, v, workspace, force),
                        stage.name,
                        v.video_id,
                        v.source,
                    )  # fmt: skip
                    for v in videos
                ]
            reports.append(gather(stage.name, submitted, workspace, progress))
    topics = topics_in_order(videos)
    if PACK_STAGE in stages:
        pack = pack_task.with_options(**task_options(PACK_STAGE, "compute", ("pack",), config))
        submitted = [
            Submitted(pack.submit(unit, topic, members, workspace, force), PACK_STAGE, unit, topic)
            for topic, members in topics.items()
            for unit in [topic_id(topic)]
        ]
        reports.append(gather(PACK_STAGE, submitted, workspace, progress))
    if SHARDS_STAGE in stages:
        shards = shards_task.with_options(**task_options(SHARDS_STAGE, "compute", ("shards",), config))
        submitted = [Submitted(shards.submit(list(topics), workspace, force), SHARDS_STAGE, "all", "")]
        reports.append(gather(SHARDS_STAGE, submitted, workspace, progress))
    return reports


@flow(name="process", log_prints=True)
def process_flow(
    out: str, config: dict[str, Any], stages: list[str], video_ids: list[str] | None = None, force: bool = False
) -> dict[str, Any]:
    """Process the videos recorded in OUT/inputs.parquet through `stages`; returns the run summary."""
    files = RunFiles.open(out)
    pipeline_config: PipelineConfig = parse_config(config)
    workspace = Workspace(files.out, pipeline_config)
    videos = files.read_inputs()
    selected = [v for v in videos if video_ids is None or v.video_id in video_ids]
    apply_concurrency_limits(pipeline_config.run.concurrency_limits)
    started = time.perf_counter()
    reports = run_stages(workspace, selected, stages, force)
    summary = files.finish(workspace, videos, reports, time.perf_counter() - started)
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
    lines += ["", *(f"- failed x{count}: {reason}" for reason, count in summary["failures"]["by_reason"].items())]
    lines += [f"- dropped x{count}: {reason}" for reason, count in summary["videos"]["dropped"].items()]
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
    workspace = Workspace(files.out, config)
    videos = files.read_inputs()
    whole_run = set(stages) == set(ALL_STAGES) and video_ids is None
    if whole_run and not force and workspace.up_to_date(videos, topics_in_order(videos)):
        print("every stage is up to date: nothing to run")
        return files.finish(workspace, videos, [], 0.0)
    quiet_task_logs_on_console(config.run.progress)
    runner = task_runner(config.run)
    configured = process_flow.with_options(task_runner=runner)
    return configured(out=out, config=config.model_dump(mode="json"), stages=stages, video_ids=video_ids, force=force)
