"""Prefect flows over the DAG: each stage a task mapped over videos (pack over topics), stage after stage."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any

from prefect import flow, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from prefect.futures import PrefectFuture, as_completed
from prefect.logging.handlers import PrefectConsoleHandler
from tqdm import tqdm

from configs import PipelineConfig, parse_config
from flows.run_files import RunFiles, StageReport
from flows.runners import task_runner
from flows.units import UnitResult, Workspace, topic_id, topics_in_order
from pipeline.dag import ALL_STAGES, PACK_STAGE, SHARDS_STAGE, VIDEO_STAGES
from pipeline.records import VideoInput


@task(task_run_name="{stage}-{video_id}", cache_policy=NO_CACHE)
def video_stage_task(stage: str, video_id: str, video: VideoInput, workspace: Workspace, force: bool) -> UnitResult:
    return workspace.run_video_stage(stage, video, force=force)


@task(task_run_name="pack-{topic_id}", cache_policy=NO_CACHE)
def pack_task(topic_id: str, topic: str, videos: list[VideoInput], workspace: Workspace, force: bool) -> UnitResult:
    return workspace.run_pack(topic, videos, force=force)


@task(task_run_name="shards", cache_policy=NO_CACHE)
def shards_task(topics: list[str], workspace: Workspace, force: bool) -> UnitResult:
    return workspace.run_shards(topics, force=force)


def gather(stage: str, futures: Sequence[PrefectFuture], progress: bool) -> StageReport:
    started = time.perf_counter()
    results: list[UnitResult] = []
    with tqdm(total=len(futures), desc=f"{stage:>10}", unit="unit", disable=not progress, leave=True) as bar:
        for future in as_completed(list(futures)):
            result = future.result()
            results.append(result)
            bar.set_postfix_str(f"{result.unit}: {result.status}", refresh=False)
            bar.update()
    return StageReport.from_results(stage, results, time.perf_counter() - started)


def run_stages(
    workspace: Workspace, videos: list[VideoInput], stages: Sequence[str], force: bool
) -> list[StageReport]:
    """Run the named stages in DAG order; called inside a flow so every unit is a Prefect task run."""
    progress = workspace.config.run.progress
    reports = []
    for stage in VIDEO_STAGES:
        if stage.name in stages:
            futures = [
                video_stage_task.submit(stage.name, video.video_id, video, workspace, force) for video in videos
            ]
            reports.append(gather(stage.name, futures, progress))
    topics = topics_in_order(videos)
    if PACK_STAGE in stages:
        futures = [
            pack_task.submit(topic_id(topic), topic, members, workspace, force) for topic, members in topics.items()
        ]
        reports.append(gather(PACK_STAGE, futures, progress))
    if SHARDS_STAGE in stages:
        reports.append(gather(SHARDS_STAGE, [shards_task.submit(list(topics), workspace, force)], progress))
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
    started = time.perf_counter()
    reports = run_stages(workspace, selected, stages, force)
    summary = files.finish(workspace, videos, reports, time.perf_counter() - started)
    create_markdown_artifact(key="run-summary", markdown=summary_markdown(summary), description=f"run of {out}")
    return summary


def summary_markdown(summary: dict[str, Any]) -> str:
    """The run summary as a markdown table, for the Prefect UI."""
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
    return "\n".join(lines)


def quiet_task_logs_on_console() -> None:
    """Per-task "Finished" lines would tear the progress bars apart; they still reach the API and the UI."""
    for name in ("", "prefect"):
        for handler in logging.getLogger(name).handlers:
            if isinstance(handler, PrefectConsoleHandler):
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
    if config.run.progress:
        quiet_task_logs_on_console()
    runner = task_runner(config.run)
    configured = process_flow.with_options(task_runner=runner)
    return configured(out=out, config=config.model_dump(mode="json"), stages=stages, video_ids=video_ids, force=force)
