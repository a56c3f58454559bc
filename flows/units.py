"""One unit of work, executor-free: decide whether it is done, read its inputs, run the stage, write the result
atomically with its stamp, and turn an exception into a recorded failure. Prefect tasks only call these."""

from __future__ import annotations

import hashlib
import os
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import pyarrow as pa

from configs import PipelineConfig
from pipeline import pack
from pipeline.dag import PACK_INPUT, PACK_STAGE, PACK_VERSION, SHARDS_STAGE, STAGES_BY_NAME, VideoStage
from pipeline.download import is_url
from pipeline.inputs import sanitize_id
from pipeline.records import StageOutput, VideoInput, VideoWork, is_transient
from storage import schemas
from storage.outdir import OutDir
from storage.shards import read_index, resolve_images, write_shards
from storage.tables import Stamp, content_digest, digest, read_stamp, read_table, rows_to_table, write_table

Status = Literal["done", "skipped", "failed", "blocked", "dropped"]
SOURCE_SAMPLE_BYTES = 1 << 20
SHARDS_VERSION = 1


@dataclass(frozen=True)
class UnitSpec:
    """What identifies a generic unit's result: its stage, name, code version, config sections and inputs."""

    stage: str
    unit: str
    version: int
    sections: tuple[str, ...]
    inputs: dict[str, Any]
    schema: pa.Schema
    source: str = ""


@dataclass
class UnitResult:
    """What happened to one unit in one stage; `seconds` is compute time, `media_seconds` the video it covered."""

    stage: str
    unit: str
    status: Status
    seconds: float = 0.0
    media_seconds: float = 0.0
    stats: dict[str, Any] = field(default_factory=dict)
    error_type: str | None = None
    message: str | None = None
    transient: bool = False


def source_fingerprint(path: str) -> str:
    """Content identity of a source video from its size and first and last MiB: cheap even for long videos.
    A URL is identified by itself: what it serves is pinned by the download stage's result."""
    if is_url(path):
        return digest(path)
    if not os.path.isfile(path):
        return "missing"
    size = os.path.getsize(path)
    sha = hashlib.sha256(str(size).encode())
    with open(path, "rb") as handle:
        sha.update(handle.read(SOURCE_SAMPLE_BYTES))
        if size > SOURCE_SAMPLE_BYTES:
            handle.seek(max(SOURCE_SAMPLE_BYTES, size - SOURCE_SAMPLE_BYTES))
            sha.update(handle.read(SOURCE_SAMPLE_BYTES))
    return sha.hexdigest()[:16]


def drop_label(stats: dict[str, Any], stage: str) -> str | None:
    """ "<filter stage>: <reason>" when the stats of `stage`'s result say a filter dropped the video, else None."""
    return f"{stats.get('dropped_by', stage)}: {stats['dropped']}" if stats.get("dropped") else None


def topic_id(topic: str) -> str:
    return sanitize_id(topic)


def topics_in_order(videos: list[VideoInput]) -> dict[str, list[VideoInput]]:
    """Topics in the order of their first video, each with its videos in input order."""
    topics: dict[str, list[VideoInput]] = {}
    for video in sorted(videos, key=lambda v: v.order):
        topics.setdefault(video.topic, []).append(video)
    return topics


def result_fingerprint(input_key: str, force: bool, table: pa.Table | None = None) -> str:
    """A result is named by its content when there is one table to hash, so a rerun whose result did not change
    (an LLM setting that gives the same verdicts) leaves everything downstream current; otherwise by its inputs.
    A forced recompute gets a new name, which makes everything downstream stale."""
    if force:
        return digest([input_key, time.time_ns()])
    return content_digest(table) if table is not None else input_key


# The collection front's table of found videos, scores and reasons.
COLLECTED_STAGE = "filter_meta"
COLLECTED_UNIT = "videos"


class Workspace:
    """The output folder seen by the stages: stamps, inputs, results and failures of every unit."""

    def __init__(self, out: OutDir, config: PipelineConfig) -> None:
        self.out = out
        self.config = config
        self._collected_rows: dict[str, dict[str, Any]] | None = None

    def _section_key(self, sections: tuple[str, ...]) -> dict[str, Any]:
        return {name: getattr(self.config, name).model_dump(mode="json") for name in sections}

    def _input_key(self, stage: str, version: int, sections: tuple[str, ...], inputs: dict[str, str]) -> str:
        return digest({"stage": stage, "version": version, "config": self._section_key(sections), "inputs": inputs})

    def video_inputs(self, stage: VideoStage, video: VideoInput) -> dict[str, str] | None:
        """Fingerprints of what `stage` reads for `video`, or None while an input is not done."""
        inputs = {"source": source_fingerprint(video.source)} if stage.uses_source else {}
        for upstream in stage.inputs:
            stamp = read_stamp(self.out, self.out.stage_file(upstream, video.video_id))
            if stamp is None:
                return None
            inputs[upstream] = stamp.fingerprint
        return inputs

    def is_current(self, path: str, input_key: str) -> bool:
        stamp = read_stamp(self.out, path)
        return stamp is not None and stamp.input_key == input_key

    def _write(
        self, stage: str, path: str, table: pa.Table, input_key: str, inputs: dict, stats: dict, force: bool
    ) -> None:
        write_table(
            self.out, path, table, Stamp(stage, input_key, result_fingerprint(input_key, force, table), inputs, stats)
        )

    def failure_path(self, stage: str, unit: str) -> str:
        return self.out.path("failures", stage, f"{unit}.json")

    def failures(self) -> list[dict[str, Any]]:
        records = []
        for stage_dir in self.out.list("failures"):
            stage = stage_dir.rsplit("/", 1)[-1]
            records += [self.out.read_json(path) for path in self.out.list("failures", stage)]
        return sorted(records, key=lambda record: (record["stage"], record["video_id"]))

    def record_failure(
        self, stage: str, unit: str, error_type: str, message: str, source: str, detail: str = ""
    ) -> None:
        record = {"video_id": unit, "stage": stage, "error_type": error_type, "message": message, "source": source}
        self.out.write_json(self.failure_path(stage, unit), {**record, "traceback": detail})

    def _record(self, result: UnitResult, source: str, started: float, work: Any) -> UnitResult:
        try:
            output: StageOutput = work()
        except Exception as error:  # every failure becomes a record; the run goes on
            result.status, result.error_type, result.transient = "failed", type(error).__name__, is_transient(error)
            result.message = str(error).strip().splitlines()[0][:500] if str(error).strip() else repr(error)
            result.seconds = time.perf_counter() - started
            self.record_failure(result.stage, result.unit, result.error_type, result.message, source,
                                traceback.format_exc(limit=5))  # fmt: skip
            return result
        self.out.remove(self.failure_path(result.stage, result.unit))
        result.status, result.stats = "done", output.stats
        result.seconds = time.perf_counter() - started
        return result

    def run_unit(self, spec: UnitSpec, compute: Callable[[], StageOutput], force: bool = False) -> UnitResult:
        """A unit of the collection front (the tree, one knowledge point, the videos table): same stamps, same
        skip-if-current and failure records as the per-video stages."""
        result = UnitResult(spec.stage, spec.unit, "blocked")
        path = self.out.stage_file(spec.stage, spec.unit)
        input_key = self._input_key(spec.stage, spec.version, spec.sections, spec.inputs)
        if not force and self.is_current(path, input_key):
            result.status = "skipped"
            return result

        def work() -> StageOutput:
            output = compute()
            self._write(spec.stage, path, rows_to_table(output.rows, spec.schema), input_key, spec.inputs,
                        output.stats, force)  # fmt: skip
            return output

        return self._record(result, spec.source, time.perf_counter(), work)

    def _video_plan(self, stage: VideoStage, video: VideoInput) -> tuple[str, str, dict[str, str]] | None:
        """(output path, input key, input fingerprints) of one video in one stage; None while inputs are missing."""
        inputs = self.video_inputs(stage, video)
        if inputs is None:
            return None
        key = self._input_key(stage.name, stage.version, stage.config_sections, inputs)
        return self.out.stage_file(stage.name, video.video_id), key, inputs

    def _pack_plan(self, topic: str, videos: list[VideoInput]) -> tuple[str, str, dict[str, Any], list] | None:
        ready = []
        for video in videos:
            stamp = read_stamp(self.out, self.out.stage_file(PACK_INPUT, video.video_id))
            if stamp is not None:
                ready.append((video, stamp.fingerprint))
        if not ready:
            return None
        inputs = {"topic": topic, "fragments": [[v.video_id, v.source, fingerprint] for v, fingerprint in ready]}
        key = self._input_key(PACK_STAGE, PACK_VERSION, ("pack",), inputs)
        return self.out.stage_file(PACK_STAGE, topic_id(topic)), key, inputs, [v for v, _ in ready]

    def _shards_plan(self, topics: list[str]) -> tuple[str, dict[str, Any]] | None:
        packs = [(topic_id(t), read_stamp(self.out, self.out.stage_file(PACK_STAGE, topic_id(t)))) for t in topics]
        inputs = {"packs": [[unit, stamp.fingerprint] for unit, stamp in packs if stamp is not None]}
        if not inputs["packs"]:
            return None
        return self._input_key(SHARDS_STAGE, SHARDS_VERSION, ("shards",), inputs), inputs

    def _shards_current(self, input_key: str) -> bool:
        index = read_index(self.out)
        return index is not None and index.get("input_key") == input_key

    def up_to_date(self, videos: list[VideoInput], topics: dict[str, list[VideoInput]]) -> bool:
        """True when every unit of every stage is done with its current inputs: a run would only skip."""
        for stage in STAGES_BY_NAME.values():
            for video in videos:
                plan = self._video_plan(stage, video)
                if plan is None or not self.is_current(plan[0], plan[1]):
                    return False
        for topic, members in topics.items():
            plan = self._pack_plan(topic, members)
            if plan is None or not self.is_current(plan[0], plan[1]):
                return False
        shards = self._shards_plan(list(topics))
        return shards is not None and self._shards_current(shards[0])

    def run_video_stage(self, stage_name: str, video: VideoInput, force: bool = False) -> UnitResult:
        stage = STAGES_BY_NAME[stage_name]
        result = UnitResult(stage.name, video.video_id, "blocked")
        plan = self._video_plan(stage, video)
        if plan is None:
            return result
        path, input_key, inputs = plan
        result.media_seconds = self.duration(video.video_id)
        if not force and self.is_current(path, input_key):
            result.status = "skipped"
            return result
        started = time.perf_counter()
        dropped = self.dropped_reason(stage.inputs, video.video_id)

        def work() -> StageOutput:
            if dropped is not None:
                output = StageOutput(rows=[], stats={"dropped": dropped[1], "dropped_by": dropped[0]})
                self._write(stage.name, path, rows_to_table([], stage.schema), input_key, inputs, output.stats, force)
                return output
            tables = {name: read_table(self.out, self.out.stage_file(name, video.video_id)) for name in stage.inputs}
            output = stage.run(VideoWork(video, tables, self.config, self.media_dir))
            self._write(
                stage.name, path, rows_to_table(output.rows, stage.schema), input_key, inputs, output.stats, force
            )
            return output

        result = self._record(result, video.source, started, work)
        if result.status == "done" and (label := drop_label(result.stats, stage.name)):
            result.status, result.message = "dropped", label
        if stage.name == "probe" and result.status == "done":
            result.media_seconds = result.stats["duration"]
        if stage.reads_media and result.status == "done" and not self.config.download.keep_media:
            self._release_media(video)
        return result

    def dropped_reason(self, stages: tuple[str, ...], video_id: str) -> tuple[str, str] | None:
        """(filter stage, reason) if a filter upstream dropped the video: the drop passes down the DAG as empty
        results, so later stages cost nothing and the reason reaches the summary."""
        for name in stages:
            stamp = read_stamp(self.out, self.out.stage_file(name, video_id))
            if stamp is not None and stamp.stats.get("dropped"):
                return stamp.stats.get("dropped_by", name), stamp.stats["dropped"]
        return None

    @property
    def media_dir(self) -> Path | None:
        return Path(self.out.root) / "media" if self.out.is_local else None

    def _release_media(self, video: VideoInput) -> None:
        """Delete a downloaded video once every stage that reads it is current (`keep_media: false`)."""
        for stage in (stage for stage in STAGES_BY_NAME.values() if stage.reads_media):
            plan = self._video_plan(stage, video)
            if plan is None or not self.is_current(plan[0], plan[1]):
                return
        record = read_table(self.out, self.out.stage_file("download", video.video_id)).to_pylist()[0]
        if record["downloaded"] and os.path.exists(record["path"]):
            os.remove(record["path"])

    def duration(self, video_id: str) -> float:
        stamp = read_stamp(self.out, self.out.stage_file("probe", video_id))
        return float(stamp.stats.get("duration", 0.0)) if stamp else 0.0

    def run_pack(self, topic: str, videos: list[VideoInput], force: bool = False) -> UnitResult:
        result = UnitResult(PACK_STAGE, topic_id(topic), "blocked")
        plan = self._pack_plan(topic, videos)
        if plan is None:
            self.out.remove(self.out.stage_file(PACK_STAGE, topic_id(topic)))
            return result
        path, input_key, inputs, ready = plan
        result.media_seconds = sum(self.duration(v.video_id) for v in ready)
        if not force and self.is_current(path, input_key):
            result.status = "skipped"
            return result
        started = time.perf_counter()

        def work() -> StageOutput:
            fragments = [
                (v, read_table(self.out, self.out.stage_file(PACK_INPUT, v.video_id)).to_pylist()) for v in ready
            ]
            details = {v.video_id: self._source_details(v) for v in ready}
            output = pack.run(topic, fragments, details, self.config.pack)
            self._write(
                PACK_STAGE, path, rows_to_table(output.rows, schemas.PACK), input_key, inputs, output.stats, force
            )
            return output

        return self._record(result, topic, started, work)

    def _source_details(self, video: VideoInput) -> dict[str, Any]:
        """Where a video came from, for the samples' metadata: source, the search result that found it (title,
        channel, license, knowledge points) and what the download reported where the search said nothing."""
        found = self._collected().get(video.video_id, {})
        path = self.out.stage_file("download", video.video_id)
        fetched = read_table(self.out, path).to_pylist()[0] if self.out.exists(path) else {}
        details = {
            key: found.get(key) or fetched.get(key)
            for key in ("url", "title", "channel", "license", "knowledge_points")
            if found.get(key) or fetched.get(key)
        }
        return {"source": video.source, **details}

    def _collected(self) -> dict[str, dict[str, Any]]:
        """The collection front's videos table by video id; empty for runs on local files."""
        if self._collected_rows is None:
            path = self.out.stage_file(COLLECTED_STAGE, COLLECTED_UNIT)
            rows = read_table(self.out, path).to_pylist() if self.out.exists(path) else []
            self._collected_rows = {row["video_id"]: row for row in rows}
        return self._collected_rows

    def run_shards(self, topics: list[str], force: bool = False) -> UnitResult:
        result = UnitResult(SHARDS_STAGE, "all", "blocked")
        plan = self._shards_plan(topics)
        if plan is None:
            return result
        input_key, inputs = plan
        if not force and self._shards_current(input_key):
            result.status = "skipped"
            return result
        started = time.perf_counter()

        def work() -> StageOutput:
            samples = (
                row
                for unit, _ in inputs["packs"]
                for row in read_table(self.out, self.out.stage_file(PACK_STAGE, unit)).to_pylist()
            )
            stamp = Stamp(SHARDS_STAGE, input_key, result_fingerprint(input_key, force), inputs)
            rows = resolve_images(samples, self._keyframe_reader())
            written = write_shards(self.out, rows, self.config.shards.target_bytes, stamp)
            return StageOutput(rows=[], stats={"shards": len(written), "samples": sum(s["samples"] for s in written)})

        return self._record(result, "shards", started, work)

    def _keyframe_reader(self) -> Callable[[str, int], bytes]:
        """JPEG bytes by (video, keyframe); samples visit videos in input order, so one video is held at a time."""
        held: dict[str, dict[int, bytes]] = {}

        def keyframe_bytes(video_id: str, keyframe_id: int) -> bytes:
            if video_id not in held:
                held.clear()
                table = read_table(self.out, self.out.stage_file("keyframes", video_id)).select(
                    ["keyframe_id", "jpeg"]
                )
                held[video_id] = dict(zip(table["keyframe_id"].to_pylist(), table["jpeg"].to_pylist(), strict=True))
            return held[video_id][keyframe_id]

        return keyframe_bytes
