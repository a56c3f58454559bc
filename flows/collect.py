"""The collection front as a Prefect flow: taxonomy -> search (mapped over knowledge points) -> filter_meta, the
same engine stages as the rest of the DAG.

Its product is the list of kept videos, written as OUT/inputs.parquet, which the process flow downloads and
turns into shards: each video's topic is the knowledge point that found it first.
"""

from __future__ import annotations

from typing import Any

from prefect import flow

from configs import PipelineConfig, parse_config
from flows.process import run_stages, start_flow
from pipeline.dag import DAG, FRONT_STAGES, VIDEOS_UNIT
from pipeline.engine.engine import Engine
from pipeline.engine.run_files import RunFiles
from pipeline.inputs import ResolvedInputs
from pipeline.records import VideoInput


def kept_videos(engine: Engine) -> list[VideoInput]:
    """The videos the front kept, in search order, each under the knowledge point that found it first."""
    ref = ("filter_meta", VIDEOS_UNIT)
    if engine.current(ref) is None:
        return []
    rows = [row for row in engine.table(ref).to_pylist() if row["keep"]]
    return [
        VideoInput(row["video_id"], row["url"], row["knowledge_points"][0], order) for order, row in enumerate(rows)
    ]


@flow(name="collect", log_prints=True)
def collect_flow(out: str, config: dict[str, Any], force: bool = False) -> list[dict[str, Any]]:
    """Subjects to a filtered list of video URLs; returns the stage reports."""
    engine = Engine(RunFiles.open(out).out, parse_config(config), DAG)
    reports = run_stages(engine, FRONT_STAGES, force)
    return [report.to_json() | {"stage": report.stage} for report in reports]


def collect(out: str, config: PipelineConfig, force: bool = False) -> ResolvedInputs:
    """Run the collection flow and return the kept videos as the inputs of processing."""
    reports = start_flow(collect_flow, config.run, out=out, config=config.model_dump(mode="json"), force=force)
    for report in reports:
        print(f"{report['stage']:<12} done {report['done']}, skipped {report['skipped']}, failed {report['failed']}")
    engine = Engine(RunFiles.open(out).out, config, DAG)
    stamp = engine.current_stamp(("filter_meta", VIDEOS_UNIT))
    if stamp is not None:
        counters = stamp.stats["counters"]
        print(f"videos: {counters['kept']} kept of {counters['videos']} found")
        for reason, count in stamp.stats["funnel"]["dropped"].items():
            print(f"  dropped x{count}: {reason}")
        if counters["llm_unparsed"]:
            print(f"  kept unscored (the LLM's answer never parsed): {counters['llm_unparsed']}")
    return ResolvedInputs(videos=kept_videos(engine))
