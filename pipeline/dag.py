"""The DAG: each stage, its unit kind, how its units are planned, what they read and which config sections their
results depend on.

Adding a stage: a module in `pipeline/` with a `run(work: UnitWork) -> StageOutput` and its planner (or a shared
one from `pipeline/engine/plans.py`), a schema in `storage/schemas.py`, a config section in `configs/schema.py`
with its defaults in `configs/default.yaml` (and `production.yaml` where it differs), and one entry below. The
engine and the flows pick it up whatever its unit kind; the DAG is validated when this module is imported.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

from configs import PipelineConfig
from pipeline import (
    asr,
    clip_filter,
    clips,
    download,
    filter_asr,
    filter_meta,
    frame_filter,
    interleave,
    keyframes,
    ocr,
    pack,
    probe,
    refine,
    search,
    shards,
    taxonomy,
)
from pipeline.engine.engine import Engine
from pipeline.engine.plans import current_members, per_video
from pipeline.engine.stage import Dag, Stage, Unit, code_version
from pipeline.inputs import sanitize_id, source_fingerprint
from pipeline.records import VideoInput
from storage import schemas
from storage.shards import retire_shards

TREE_UNIT = "tree"
VIDEOS_UNIT = "videos"
SHARDS_UNIT = "all"


def topic_id(topic: str) -> str:
    return sanitize_id(topic)


def plan_tree(engine: Engine, stage: Stage) -> Iterator[Unit]:
    cfg = engine.config.taxonomy
    if cfg.subjects or cfg.file:
        yield Unit(TREE_UNIT, external={"file": cfg.file and source_fingerprint(cfg.file)}, source="taxonomy")


def plan_points(engine: Engine, stage: Stage) -> Iterator[Unit]:
    """One search per knowledge point of the current tree; with `refresh_hours`, a search older than that is
    made again, so a scheduled collection finds new uploads (the download archive skips the rest)."""
    tree = ("taxonomy", TREE_UNIT)
    if engine.current(tree) is None:
        return
    cfg = engine.config.search
    for point in engine.table(tree).to_pylist():
        query = cfg.query_template.format(**point)
        external = {"query": query, "round": search.refresh_round(cfg, time.time())}
        yield Unit(point["point_id"], external=external, payload=point, source=query)


def plan_collected(engine: Engine, stage: Stage) -> Iterator[Unit]:
    tree = ("taxonomy", TREE_UNIT)
    if engine.current(tree) is None:
        return
    searches = current_members(engine, [("search", point) for point in engine.units("search")])
    yield Unit(VIDEOS_UNIT, reads=(tree, *searches), source="filter_meta")


def earlier_copies(engine: Engine) -> dict[str, VideoInput]:
    """Each finished video whose fetched content an earlier finished video (in input order) already has, with that
    video: two URLs of one file, or a URL and a local copy, are one video in the corpus. Only finished videos count,
    so a copy stands in when the first one failed."""
    first: dict[str, VideoInput] = {}
    copies: dict[str, VideoInput] = {}
    for video in sorted(engine.videos, key=lambda v: v.order):
        if engine.current(("interleave", video.video_id)) is None:
            continue
        fetched = engine.current_stamp(("download", video.video_id))
        content = None if fetched is None else fetched.stats["values"].get("content")
        if content in first:
            copies[video.video_id] = first[content]
        elif content is not None:
            first[content] = video
    return copies


def plan_topics(engine: Engine, stage: Stage) -> Iterator[Unit]:
    """One unit per topic over its videos whose interleave is current (a failed video is left out and listed) and
    whose content no earlier video has (recorded as `duplicate_content`, reading both downloads and the first
    one's interleave, so the verdict is redone when either changes); the collection front's videos table is read
    too when there is one, for the samples' source details."""
    collected = (pack.COLLECTED_STAGE, VIDEOS_UNIT)
    extra = (collected,) if engine.current(collected) is not None else ()
    copies = earlier_copies(engine)
    for topic, members in engine.topics.items():
        finished = [v for v in members if engine.current(("interleave", v.video_id)) is not None]
        ready = [v for v in finished if v.video_id not in copies]
        reads = [ref for v in ready for ref in (("interleave", v.video_id), ("download", v.video_id))]
        repeats = [pack.repeat_record(v, copies[v.video_id]) for v in finished if v.video_id in copies]
        for v in finished:
            if v.video_id in copies:
                first = copies[v.video_id].video_id
                reads += [("download", v.video_id), ("download", first), ("interleave", first)]
        reads = reads or [("interleave", v.video_id) for v in members]
        media = sum(engine.duration(v.video_id) for v in ready)
        payload = pack.TopicMembers(topic, ready, repeats)
        yield Unit(topic_id(topic), (*reads, *extra), payload=payload, source=topic, media_seconds=media)


def plan_shards(engine: Engine, stage: Stage) -> Iterator[Unit]:
    """One unit over every current topic, reading each pack and the keyframes its images' bytes come from."""
    packs = current_members(engine, [("pack", unit_id) for unit_id in engine.units("pack")])
    if not packs:
        return
    reads, topics = list(packs), []
    for ref in packs:
        videos = engine.units("pack")[ref[1]].payload.videos
        reads += [("keyframes", video.video_id) for video in videos]
        topics.append((ref[1], [video.video_id for video in videos]))
    yield Unit(SHARDS_UNIT, tuple(reads), payload=topics, source="shards")


def taxonomy_sections(config: PipelineConfig) -> tuple[str, ...]:
    return ("taxonomy",) if config.taxonomy.file else ("taxonomy", "llm")


def filter_meta_sections(config: PipelineConfig) -> tuple[str, ...]:
    return ("filter_meta", "llm") if config.filter_meta.llm_scoring else ("filter_meta",)


def video_stage(module, inputs: tuple[str, ...], sections: tuple[str, ...], schema, **options) -> Stage:
    """A stage whose unit is one video, named after its module, reading that video's results of `inputs`."""
    name = module.__name__.rsplit(".", 1)[-1]
    planner = per_video(source_fingerprint=options.pop("uses_source", False))
    return Stage(name, "video", code_version(module, module.VERSION), inputs, sections, schema, module.run,
                 planner, whole_unit_drop=True, **options)  # fmt: skip


FRONT = Dag(
    (
        Stage("taxonomy", "corpus", code_version(taxonomy, taxonomy.VERSION), (), ("taxonomy", "llm"),
              schemas.TAXONOMY, taxonomy.run, plan_tree, kind="model", sections=taxonomy_sections),
        Stage("search", "knowledge_point", code_version(search, search.VERSION), ("taxonomy",), ("search",),
              schemas.SEARCH, search.run, plan_points, kind="network"),
        Stage("filter_meta", "corpus", code_version(filter_meta, filter_meta.VERSION), ("taxonomy", "search"),
              ("filter_meta", "llm"), schemas.VIDEOS, filter_meta.run, plan_collected, kind="model",
              sections=filter_meta_sections),
    )
)  # fmt: skip

DAG = FRONT.extended(
    video_stage(download, (), ("download",), schemas.DOWNLOAD, uses_source=True, kind="network"),
    video_stage(probe, ("download",), ("probe",), schemas.PROBE, reads_media=True),
    video_stage(asr, ("download", "probe"), ("asr",), schemas.ASR, reads_media=True, kind="model"),
    video_stage(filter_asr, ("probe", "asr"), ("filter_asr", "llm"), schemas.FILTER_ASR, kind="model"),
    video_stage(clips, ("probe", "asr", "filter_asr"), ("clips",), schemas.CLIPS),
    video_stage(refine, ("clips",), ("refine", "llm", "embeddings"), schemas.REFINE, kind="model"),
    video_stage(keyframes, ("download", "probe", "clips"), ("keyframes",), schemas.KEYFRAMES, reads_media=True),
    video_stage(ocr, ("keyframes",), ("ocr",), schemas.OCR, kind="model"),
    video_stage(frame_filter, ("keyframes", "ocr"), ("frame_filter",), schemas.FRAME_FILTER),
    video_stage(clip_filter, ("clips", "keyframes", "ocr", "frame_filter"), ("clip_filter", "embeddings", "vlm"),
                schemas.CLIP_FILTER, kind="model"),  # fmt: skip
    video_stage(interleave, ("clips", "refine", "keyframes", "ocr", "frame_filter", "clip_filter"), ("interleave",),
                schemas.INTERLEAVE),  # fmt: skip
    Stage("pack", "topic", code_version(pack, pack.VERSION), ("download", "interleave", "filter_meta"), ("pack",),
          schemas.PACK, pack.run, plan_topics),
    Stage("shards", "corpus", code_version(shards, shards.VERSION), ("pack", "keyframes"), ("shards",),
          schemas.SHARD_SET, shards.run, plan_shards, retire=lambda out, stamp: retire_shards(out)),
)  # fmt: skip

FRONT_STAGES = FRONT.names
PROCESS_STAGES = tuple(name for name in DAG.names if name not in FRONT_STAGES)
VIDEO_STAGES = tuple(stage for stage in DAG.stages if stage.unit_kind == "video")
