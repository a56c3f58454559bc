"""The processing DAG: each stage, what it reads, which config sections it depends on, and what it writes.

Adding a stage is one module in `pipeline/`, one schema in `storage/schemas.py` and one entry here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import pyarrow as pa

from pipeline import (
    asr,
    clip_filter,
    clips,
    download,
    filter_asr,
    frame_filter,
    interleave,
    keyframes,
    ocr,
    pack,
    probe,
    refine,
)
from pipeline.records import StageOutput, VideoWork
from storage import schemas

# What a stage's failures look like, for the executor's retries and timeouts: "network" fetches, "model" runs a
# model back-end (possibly on a GPU or behind an endpoint), "compute" is deterministic local work.
StageKind = Literal["network", "model", "compute"]


@dataclass(frozen=True)
class VideoStage:
    """A stage whose unit of work is one video."""

    name: str
    version: int
    inputs: tuple[str, ...]
    config_sections: tuple[str, ...]
    schema: pa.Schema
    run: Callable[[VideoWork], StageOutput]
    uses_source: bool = False
    reads_media: bool = False
    kind: StageKind = "compute"


VIDEO_STAGES: tuple[VideoStage, ...] = (
    VideoStage(
        "download",
        download.VERSION,
        (),
        ("download",),
        schemas.DOWNLOAD,
        download.run,
        uses_source=True,
        kind="network",
    ),  # fmt: skip
    VideoStage("probe", probe.VERSION, ("download",), ("probe",), schemas.PROBE, probe.run, reads_media=True),
    VideoStage(
        "asr", asr.VERSION, ("download", "probe"), ("asr",), schemas.ASR, asr.run, reads_media=True, kind="model"
    ),  # fmt: skip
    VideoStage(
        "filter_asr",
        filter_asr.VERSION,
        ("probe", "asr"),
        ("filter_asr", "llm"),
        schemas.FILTER_ASR,
        filter_asr.run,
        kind="model",
    ),  # fmt: skip
    VideoStage("clips", clips.VERSION, ("probe", "asr", "filter_asr"), ("clips",), schemas.CLIPS, clips.run),
    VideoStage(
        "refine",
        refine.VERSION,
        ("clips",),
        ("refine", "llm", "embeddings"),
        schemas.REFINE,
        refine.run,
        kind="model",
    ),  # fmt: skip
    VideoStage(
        "keyframes",
        keyframes.VERSION,
        ("download", "probe", "clips"),
        ("keyframes",),
        schemas.KEYFRAMES,
        keyframes.run,
        reads_media=True,
    ),  # fmt: skip
    VideoStage("ocr", ocr.VERSION, ("keyframes",), ("ocr",), schemas.OCR, ocr.run, kind="model"),
    VideoStage(
        "frame_filter",
        frame_filter.VERSION,
        ("keyframes", "ocr"),
        ("frame_filter",),
        schemas.FRAME_FILTER,
        frame_filter.run,
    ),  # fmt: skip
    VideoStage(
        "clip_filter",
        clip_filter.VERSION,
        ("clips", "keyframes", "ocr", "frame_filter"),
        ("clip_filter", "embeddings", "vlm"),
        schemas.CLIP_FILTER,
        clip_filter.run,
        kind="model",
    ),  # fmt: skip
    VideoStage(
        "interleave",
        interleave.VERSION,
        ("clips", "refine", "keyframes", "ocr", "frame_filter", "clip_filter"),
        ("interleave",),
        schemas.INTERLEAVE,
        interleave.run,
    ),  # fmt: skip
)
STAGES_BY_NAME = {stage.name: stage for stage in VIDEO_STAGES}

PACK_STAGE = "pack"
PACK_VERSION = pack.VERSION
PACK_INPUT = "interleave"
SHARDS_STAGE = "shards"
ALL_STAGES = (*STAGES_BY_NAME, PACK_STAGE, SHARDS_STAGE)


def downstream_of(name: str) -> list[str]:
    """Every stage that reads `name`, directly or through others, in DAG order."""
    affected = {name}
    ordered = []
    for stage in VIDEO_STAGES:
        if affected.intersection(stage.inputs):
            affected.add(stage.name)
            ordered.append(stage.name)
    if name != SHARDS_STAGE:
        ordered += [PACK_STAGE, SHARDS_STAGE] if name != PACK_STAGE else [SHARDS_STAGE]
    return ordered
