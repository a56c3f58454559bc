"""The collection front as a Prefect flow: taxonomy -> search (mapped over knowledge points) -> filter_meta.

Its product is the list of kept videos, written as OUT/inputs.parquet, which the process flow downloads and
turns into shards: each video's topic is the knowledge point that found it first.
"""

from __future__ import annotations

import time
from typing import Any

from prefect import flow, task
from prefect.cache_policies import NO_CACHE
from prefect.states import State

from configs import PipelineConfig, parse_config
from flows.process import Submitted, gather, unit_state
from flows.run_files import RunFiles, StageReport
from flows.runners import task_options, task_runner
from flows.units import COLLECTED_UNIT, UnitResult, UnitSpec, Workspace, source_fingerprint
from pipeline import filter_meta, search, taxonomy
from pipeline.inputs import ResolvedInputs
from pipeline.records import StageOutput, VideoInput
from storage import schemas
from storage.tables import read_stamp, read_table

TREE_UNIT = "tree"


def _llm(config: PipelineConfig):
    from pipeline.models.llm import load_llm

    return load_llm(config.llm)


def run_taxonomy(workspace: Workspace, force: bool = False) -> UnitResult:
    cfg = workspace.config.taxonomy
    sections = ("taxonomy",) if cfg.file else ("taxonomy", "llm")
    inputs = {"file": cfg.file and source_fingerprint(cfg.file)}
    spec = UnitSpec("taxonomy", TREE_UNIT, taxonomy.VERSION, sections, inputs, schemas.TAXONOMY, "taxonomy")

    def compute() -> StageOutput:
        if cfg.file:
            return StageOutput(rows=taxonomy.load_file(cfg.file), stats={"source": "file"})
        points, failures = taxonomy.generate(_llm(workspace.config), cfg)
        for failure in failures:
            unit = taxonomy.node_id(failure["path"].split(" > "))
            workspace.record_failure("taxonomy", unit, "LlmOutputError", failure["reason"], failure["path"])
        if not points:
            raise ValueError(f"the LLM expanded no knowledge point from {cfg.subjects}")
        return StageOutput(rows=points, stats={"points": len(points), "unexpanded": len(failures)})

    return workspace.run_unit(spec, compute, force)


def points(workspace: Workspace) -> list[dict[str, Any]]:
    path = workspace.out.stage_file("taxonomy", TREE_UNIT)
    return read_table(workspace.out, path).to_pylist() if workspace.out.exists(path) else []


def search_unit(point_id: str, point: dict[str, Any], workspace: Workspace, force: bool) -> UnitResult:
    """One knowledge point's search; with `refresh_hours`, a search older than that is made again, so a scheduled
    collection finds new uploads (and downloads only those: the rest are in the download archive)."""
    cfg = workspace.config.search
    query = cfg.query_template.format(**point)
    searched = {"query": query, "round": search.refresh_round(cfg, time.time())}
    spec = UnitSpec("search", point_id, search.VERSION, ("search",), searched, schemas.SEARCH, query)

    def compute() -> StageOutput:
        rows = search.search_point(point_id, query, cfg)
        return StageOutput(rows=rows, stats={"results": len(rows)})

    return workspace.run_unit(spec, compute, force)


@task(task_run_name="search-{point_id}", cache_policy=NO_CACHE)
def search_task(point_id: str, point: dict[str, Any], workspace: Workspace, force: bool) -> State:
    return unit_state(search_unit(point_id, point, workspace, force), workspace.config.run.tasks.network.retries)


def run_filter_meta(workspace: Workspace, tree: list[dict[str, Any]], force: bool = False) -> UnitResult:
    found = []
    for point in tree:
        stamp = read_stamp(workspace.out, workspace.out.stage_file("search", point["point_id"]))
        if stamp is not None:
            found.append([point["point_id"], stamp.fingerprint])
    if not found:
        return UnitResult("filter_meta", COLLECTED_UNIT, "blocked")
    cfg = workspace.config.filter_meta
    sections = ("filter_meta", "llm") if cfg.llm_scoring else ("filter_meta",)
    spec = UnitSpec("filter_meta", COLLECTED_UNIT, filter_meta.VERSION, sections, {"search": found}, schemas.VIDEOS)

    def compute() -> StageOutput:
        results = [
            row
            for point_id, _ in found
            for row in read_table(workspace.out, workspace.out.stage_file("search", point_id)).to_pylist()
        ]
        paths = {point["point_id"]: point["path"] for point in tree}
        llm = _llm(workspace.config) if cfg.llm_scoring else None
        rows = filter_meta.filter_videos(search.merge_results(results), paths, cfg, llm)
        kept = sum(row["keep"] for row in rows)
        dropped: dict[str, int] = {}
        for row in rows:
            if not row["keep"]:
                dropped[row["reason"]] = dropped.get(row["reason"], 0) + 1
        return StageOutput(rows=rows, stats={"videos": len(rows), "kept": kept, "dropped": dropped})

    return workspace.run_unit(spec, compute, force)


def kept_videos(workspace: Workspace) -> list[VideoInput]:
    """The videos the front kept, in search order, each under the knowledge point that found it first."""
    path = workspace.out.stage_file("filter_meta", COLLECTED_UNIT)
    if not workspace.out.exists(path):
        return []
    rows = [row for row in read_table(workspace.out, path).to_pylist() if row["keep"]]
    return [
        VideoInput(row["video_id"], row["url"], row["knowledge_points"][0], order) for order, row in enumerate(rows)
    ]


@flow(name="collect", log_prints=True)
def collect_flow(out: str, config: dict[str, Any], force: bool = False) -> list[dict[str, Any]]:
    """Subjects to a filtered list of video URLs; returns the stage reports."""
    pipeline_config = parse_config(config)
    workspace = Workspace(RunFiles.open(out).out, pipeline_config)
    progress = pipeline_config.run.progress
    reports = []
    started = time.perf_counter()
    tree_result = run_taxonomy(workspace, force)
    reports.append(StageReport.from_results("taxonomy", [tree_result], time.perf_counter() - started))
    tree = points(workspace)
    searches = search_task.with_options(**task_options("search", "network", ("search",), pipeline_config))
    submitted = [
        Submitted(searches.submit(point["point_id"], point, workspace, force), "search", point["point_id"], "")
        for point in tree
    ]
    reports.append(gather("search", submitted, workspace, progress))
    started = time.perf_counter()
    reports.append(StageReport.from_results("filter_meta", [run_filter_meta(workspace, tree, force)],
                                            time.perf_counter() - started))  # fmt: skip
    return [report.to_json() | {"stage": report.stage} for report in reports]


def collect(out: str, config: PipelineConfig, force: bool = False) -> ResolvedInputs:
    """Run the collection flow and return the kept videos as the inputs of processing."""
    from flows.process import quiet_task_logs_on_console

    quiet_task_logs_on_console(config.run.progress)
    runner = task_runner(config.run)
    reports = collect_flow.with_options(task_runner=runner)(
        out=out, config=config.model_dump(mode="json"), force=force
    )
    workspace = Workspace(RunFiles.open(out).out, config)
    for report in reports:
        print(f"{report['stage']:<12} done {report['done']}, skipped {report['skipped']}, failed {report['failed']}")
    videos_stamp = read_stamp(workspace.out, workspace.out.stage_file("filter_meta", COLLECTED_UNIT))
    if videos_stamp is not None:
        stats = videos_stamp.stats
        print(f"videos: {stats['kept']} kept of {stats['videos']} found")
        for reason, count in stats["dropped"].items():
            print(f"  dropped x{count}: {reason}")
    return ResolvedInputs(videos=kept_videos(workspace))
