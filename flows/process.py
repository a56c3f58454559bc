"""Prefect flows over the DAG: videos in batches through their per-video stages, any other stage a task per unit."""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from prefect import Flow, flow, get_run_logger, task
from prefect.artifacts import create_link_artifact, create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from prefect.futures import PrefectFuture, as_completed
from prefect.logging.handlers import PrefectConsoleHandler
from prefect.runtime import task_run
from prefect.states import Completed, Failed, State
from tqdm import tqdm

from configs import PipelineConfig, parse_config
from configs.schema import RunConfig
from flows.runners import apply_concurrency_limits, stage_resources, task_options, task_runner, uses_gpu
from pipeline.dag import DAG, PROCESS_STAGES
from pipeline.engine.engine import Engine, UnitResult, error_message
from pipeline.engine.local import RunUnit, reports_of, run_units, stage_groups
from pipeline.engine.run_files import RunFiles, StageReport
from pipeline.engine.stage import ResultRef
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
    engine.make_durable()
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
    return _lost(engine, submitted.stage, submitted.unit, submitted.source, outcome)


def _lost(engine: Engine, stage: str, unit: str, source: str, outcome: object) -> UnitResult:
    """A unit whose task ended without its result (a timeout, a crash): recorded as failed with the task's error."""
    error = outcome if isinstance(outcome, BaseException) else RuntimeError(f"task ended with {outcome!r}")
    message = error_message(error)
    engine.record_failure(stage, unit, type(error).__name__, message, source)
    return UnitResult(stage, unit, "failed", error_type=type(error).__name__, message=message)


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


# -- videos through their per-video stages, in batches ---------------------------------------------------------

TASKS_PER_WORKER = 8  # batches a worker gets: enough to balance uneven videos, few enough to cost nothing


def retrying(engine: Engine, force: bool) -> RunUnit:
    """`Engine.run_unit` with the retries of the stage's kind: a transient failure (HTTP 429/5xx, an endpoint
    down, a timeout) runs again after doubling delays, in the same task; any other failure is recorded at once."""

    def run(stage: str, unit_id: str) -> UnitResult:
        policy = getattr(engine.config.run.tasks, engine.dag[stage].kind)
        result, attempt = engine.run_unit(stage, unit_id, force=force), 0
        while result.status == "failed" and result.transient and attempt < policy.retries:
            time.sleep(policy.retry_delay_seconds * 2**attempt)
            result, attempt = engine.run_unit(stage, unit_id, force=force), attempt + 1
        return result

    return run


def batch_state(done: dict[ResultRef, tuple[UnitResult, float, float]]) -> State:
    """The state of a batch task in the UI: Failed when a unit failed (its reason in the message), else named by
    what its units did: Skipped when all were already done, Completed otherwise; the message counts each status."""
    results = [result for result, _, _ in done.values()]
    counts = Counter(result.status for result in results)
    message = ", ".join(f"{count} {status}" for status, count in counts.most_common())
    failed = [result for result in results if result.status == "failed"]
    if failed:
        first = failed[0]
        reason = f"{first.stage}-{first.unit}: {first.error_type}: {first.message}"
        return Failed(message=f"{message}; {reason}", data=done)
    return Completed(name="Skipped" if set(counts) == {"skipped"} else "Completed", message=message, data=done)


def logging_each_video(
    run: RunUnit,
    engine: Engine,
    stages: list[str],
    video_ids: list[str],
    logger: logging.Logger | logging.LoggerAdapter,
) -> RunUnit:
    """`run`, and a log line for each video as soon as its last unit of `stages` ends, saying what each stage did
    (a batch task's log then follows its videos, not only its end)."""
    left = {video_id: {stage for stage in stages if video_id in engine.units(stage)} for video_id in video_ids}
    steps: dict[str, list[UnitResult]] = {video_id: [] for video_id in video_ids}
    lock = threading.Lock()

    def run_and_log(stage: str, video_id: str) -> UnitResult:
        result = run(stage, video_id)
        with lock:
            steps[video_id].append(result)
            left[video_id].discard(stage)
            finished = not left[video_id]
        if finished:
            ordered = sorted(steps[video_id], key=lambda step: stages.index(step.stage))
            logger.info("%s: %s", video_id, ", ".join(f"{r.stage} {r.status} {r.seconds:.1f} s" for r in ordered))
        return result

    return run_and_log


@task(cache_policy=NO_CACHE)
def videos_task(stages: list[str], video_ids: list[str], engine: Engine, force: bool, threads: int) -> State:
    """A batch of videos through consecutive per-video stages: each unit as soon as what it reads is done (a video
    never waits for another), on `threads` threads; one log line per video says what each stage did."""
    run = logging_each_video(retrying(engine, force), engine, stages, video_ids, get_run_logger())
    return batch_state(run_units(engine, stages, video_ids, threads, run))


def chain_name(stages: list[str]) -> str:
    return stages[0] if len(stages) == 1 else f"{stages[0]}..{stages[-1]}"


def batch_name(stages: list[str], video_ids: list[str]) -> str:
    """`<stage>-<video>` for one stage of one video (as before batching); a chain is `<first>..<last>`, a batch
    `<first video>+<more>`."""
    return f"{chain_name(stages)}-{video_ids[0]}" + (f"+{len(video_ids) - 1}" if len(video_ids) > 1 else "")


def chains(engine: Engine, stages: list[str]) -> list[list[str]]:
    """A run of per-video stages split where its model moves between CPU and GPU, so a GPU stage's tasks carry
    the `gpu` tag (and its Ray resources) and nothing else does."""
    pieces: list[list[str]] = []
    for name in stages:
        gpu = uses_gpu(engine.dag[name].sections_for(engine.config), engine.config)
        if pieces and gpu == uses_gpu(engine.dag[pieces[-1][0]].sections_for(engine.config), engine.config):
            pieces[-1].append(name)
        else:
            pieces.append([name])
    return pieces


def chain_options(engine: Engine, stages: list[str], videos: int) -> dict[str, Any]:
    """Tags of every stage in the chain (`stage:<name>`, kinds, `gpu`); no Prefect retries (units retry by kind in
    the task); the timeout is what its units would have had one by one."""
    tags, timeout = [], 0.0
    for name in stages:
        stage = engine.dag[name]
        options = task_options(name, stage.kind, stage.sections_for(engine.config), engine.config)
        tags += [tag for tag in options["tags"] if tag not in tags]
        timeout += options["timeout_seconds"] * videos
    return {"tags": tags, "timeout_seconds": timeout, "retries": 0}


def run_videos(engine: Engine, stages: list[str], video_ids: list[str], force: bool) -> list[StageReport]:
    """Per-video stages over batches of videos, without a barrier between stages: a batch goes on to its next chain
    (CPU to GPU) as soon as it finishes the last."""
    run = engine.config.run
    size = max(1, math.ceil(len(video_ids) / (run.workers * TASKS_PER_WORKER)))
    batches = [video_ids[start : start + size] for start in range(0, len(video_ids), size)]
    threads = max(1, run.workers // max(1, min(run.workers, len(batches))))  # one video alone uses every worker
    pieces = chains(engine, stages)

    def submit(piece: int, batch: list[str]) -> PrefectFuture:
        options = chain_options(engine, pieces[piece], len(batch))
        configured = videos_task.with_options(task_run_name=batch_name(pieces[piece], batch), **options)
        with stage_resources("gpu" in options["tags"], run):
            return configured.submit(pieces[piece], batch, engine, force, threads)

    done: dict[ResultRef, tuple[UnitResult, float, float]] = {}
    pending = {submit(0, batch): (0, batch) for batch in batches}
    total = len(video_ids) * len(stages)
    with tqdm(total=total, desc=chain_name(stages), unit="unit", disable=not run.progress) as bar:
        while pending:
            for future in as_completed(list(pending)):
                piece, batch = pending.pop(future)
                outcome = future.result(raise_on_failure=False)
                for ref in ((stage, video) for stage in pieces[piece] for video in batch):
                    if isinstance(outcome, dict) and ref in outcome:
                        done[ref] = outcome[ref]
                    else:  # the task timed out or crashed: each of its units is recorded as failed
                        done[ref] = (_lost(engine, *ref, ref[1], outcome), time.time(), time.time())
                bar.update(len(batch) * len(pieces[piece]))
                if piece + 1 < len(pieces):
                    pending[submit(piece + 1, batch)] = (piece + 1, batch)
    return reports_of(stages, done)


def run_stages(
    engine: Engine, stages: Sequence[str], force: bool, video_ids: Sequence[str] | None = None
) -> list[StageReport]:
    """Run the named stages in DAG order, inside a flow. Consecutive per-video stages run as batches of videos
    (only `video_ids` when given), each video through them without waiting for the others; any other stage reads
    the whole set, so it waits for everything before it and each of its units is a task run of its own."""
    config = engine.config
    reports = []
    for group in stage_groups(engine, stages):
        if engine.dag[group[0]].unit_kind == "video":
            ids = [video.video_id for video in engine.videos if video_ids is None or video.video_id in video_ids]
            reports += run_videos(engine, group, ids, force) if ids else reports_of(group, {})
            continue
        (name,) = group
        stage = engine.dag[name]
        options = task_options(stage.name, stage.kind, stage.sections_for(config), config)
        stage_task = unit_task.with_options(**options)
        with stage_resources("gpu" in options["tags"], config.run):
            submitted = [
                Submitted(stage_task.submit(name, unit.unit_id, engine, force), name, unit.unit_id, unit.source)
                for unit in engine.units(name).values()
            ]
        reports.append(gather(name, submitted, engine, config.run.progress))
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


def start_flow(flow_: Flow, run: RunConfig, **parameters: Any) -> Any:
    """Run a flow on the config's task runner, with the task logs kept off the progress bars."""
    quiet_task_logs_on_console(run.progress)
    return flow_.with_options(task_runner=task_runner(run))(**parameters)


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
    parameters = {"stages": stages, "video_ids": video_ids, "force": force}
    return start_flow(process_flow, config.run, out=out, config=config.model_dump(mode="json"), **parameters)
