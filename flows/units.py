"""One unit of work, executor-free: decide whether it is done, read its inputs, run the stage, write the result
atomically with its stamp, and turn an exception into a recorded failure. Prefect tasks only call these."""

from __future__ import annotations

import hashlib
import os
import time
import traceback
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Literal

import pyarrow as pa

from configs import PipelineConfig
from pipeline import pack
from pipeline.dag import PACK_INPUT, PACK_STAGE, PACK_VERSION, SHARDS_STAGE, STAGES_BY_NAME, VideoStage
from pipeline.inputs import sanitize_id
from pipeline.records import StageOutput, VideoInput, VideoWork
from storage import schemas
from storage.outdir import OutDir
from storage.shards import read_index, resolve_images, write_shards
from storage.tables import Stamp, digest, read_stamp, read_table, rows_to_table, write_table

Status = Literal["done", "skipped", "failed", "blocked"]
SOURCE_SAMPLE_BYTES = 1 << 20
SHARDS_VERSION = 1


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


def source_fingerprint(path: str) -> str:
    """Content identity of a source video from its size and first and last MiB: cheap even for long videos."""
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


def topic_id(topic: str) -> str:
    return sanitize_id(topic)


class Workspace:
    """The output folder seen by the stages: stamps, inputs, results and failures of every unit."""

    def __init__(self, out: OutDir, config: PipelineConfig) -> None:
        self.out = out
        self.config = config

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

    def _write(self, stage: str, path: str, table: pa.Table, input_key: str, inputs: dict, stats: dict,
               force: bool) -> None:
        fingerprint = digest([input_key, time.time_ns()]) if force else input_key
        write_table(self.out, path, table, Stamp(stage, input_key, fingerprint, inputs, stats))

    def failure_path(self, stage: str, unit: str) -> str:
        return self.out.path("failures", stage, f"{unit}.json")

    def failures(self) -> list[dict[str, Any]]:
        records = []
        for stage_dir in self.out.list("failures"):
            stage = stage_dir.rsplit("/", 1)[-1]
            records += [self.out.read_json(path) for path in self.out.list("failures", stage)]
        return sorted(records, key=lambda record: (record["stage"], record["video_id"]))

    def _record(self, result: UnitResult, source: str, started: float, work: Any) -> UnitResult:
        try:
            output: StageOutput = work()
        except Exception as error:  # every failure becomes a record; the run goes on
            result.status, result.error_type = "failed", type(error).__name__
            result.message = str(error).strip().splitlines()[0][:500] if str(error).strip() else repr(error)
            result.seconds = time.perf_counter() - started
            self.out.write_json(
                self.failure_path(result.stage, result.unit),
                {"video_id": result.unit, "stage": result.stage, "error_type": result.error_type,
                 "message": result.message, "source": source, "traceback": traceback.format_exc(limit=5)},
            )
            return result
        self.out.remove(self.failure_path(result.stage, result.unit))
        result.status, result.stats = "done", output.stats
        result.seconds = time.perf_counter() - started
        return result

    def run_video_stage(self, stage_name: str, video: VideoInput, force: bool = False) -> UnitResult:
        stage = STAGES_BY_NAME[stage_name]
        result = UnitResult(stage.name, video.video_id, "blocked")
        inputs = self.video_inputs(stage, video)
        if inputs is None:
            return result
        path = self.out.stage_file(stage.name, video.video_id)
        input_key = self._input_key(stage.name, stage.version, stage.config_sections, inputs)
        result.media_seconds = self.duration(video.video_id)
        if not force and self.is_current(path, input_key):
            result.status = "skipped"
            return result
        started = time.perf_counter()

        def work() -> StageOutput:
            tables = {name: read_table(self.out, self.out.stage_file(name, video.video_id)) for name in stage.inputs}
            output = stage.run(VideoWork(video, tables, self.config))
            table = rows_to_table(output.rows, stage.schema)
            self._write(stage.name, path, table, input_key, inputs, output.stats, force)
            return output

        result = self._record(result, video.source, started, work)
        if stage.name == "probe" and result.status == "done":
            result.media_seconds = result.stats["duration"]
        return result

    def duration(self, video_id: str) -> float:
        stamp = read_stamp(self.out, self.out.stage_file("probe", video_id))
        return float(stamp.stats.get("duration", 0.0)) if stamp else 0.0

    def run_pack(self, topic: str, videos: list[VideoInput], force: bool = False) -> UnitResult:
        unit = topic_id(topic)
        result = UnitResult(PACK_STAGE, unit, "blocked")
        ready = [v for v in videos if read_stamp(self.out, self.out.stage_file(PACK_INPUT, v.video_id)) is not None]
        if not ready:
            self.out.remove(self.out.stage_file(PACK_STAGE, unit))
            return result
        inputs = {
            v.video_id: read_stamp(self.out, self.out.stage_file(PACK_INPUT, v.video_id)).fingerprint for v in ready
        }
        ordered = [[v.video_id, v.source, inputs[v.video_id]] for v in ready]
        input_key = self._input_key(PACK_STAGE, PACK_VERSION, ("pack",), {"fragments": ordered, "topic": topic})
        path = self.out.stage_file(PACK_STAGE, unit)
        result.media_seconds = sum(self.duration(v.video_id) for v in ready)
        if not force and self.is_current(path, input_key):
            result.status = "skipped"
            return result
        started = time.perf_counter()

        def work() -> StageOutput:
            fragments = [
                (v, read_table(self.out, self.out.stage_file(PACK_INPUT, v.video_id)).to_pylist()) for v in ready
            ]
            output = pack.run(topic, fragments, self.config.pack)
            table = rows_to_table(output.rows, schemas.PACK)
            self._write(PACK_STAGE, path, table, input_key, {"fragments": ordered}, output.stats, force)
            return output

        return self._record(result, topic, started, work)

    def run_shards(self, topics: list[str], force: bool = False) -> UnitResult:
        result = UnitResult(SHARDS_STAGE, "all", "blocked")
        packs = [(topic_id(t), read_stamp(self.out, self.out.stage_file(PACK_STAGE, topic_id(t)))) for t in topics]
        inputs = {"packs": [[unit, stamp.fingerprint] for unit, stamp in packs if stamp is not None]}
        if not inputs["packs"]:
            return result
        input_key = self._input_key(SHARDS_STAGE, SHARDS_VERSION, ("shards",), inputs)
        index = read_index(self.out)
        if not force and index is not None and index.get("input_key") == input_key:
            result.status, result.stats = "skipped", {"shards": len(index["shards"])}
            return result
        started = time.perf_counter()

        def work() -> StageOutput:
            samples = (
                row
                for unit, _ in inputs["packs"]
                for row in read_table(self.out, self.out.stage_file(PACK_STAGE, unit)).to_pylist()
            )
            fingerprint = digest([input_key, time.time_ns()]) if force else input_key
            stamp = Stamp(SHARDS_STAGE, input_key, fingerprint, inputs)
            rows = resolve_images(samples, self._keyframe_bytes)
            written = write_shards(self.out, rows, self.config.shards.target_bytes, stamp)
            return StageOutput(rows=[], stats={"shards": len(written), "samples": sum(s["samples"] for s in written)})

        return self._record(result, "shards", started, work)

    @lru_cache(maxsize=8)  # noqa: B019 - one workspace per run; caches the keyframes of the videos being joined
    def _keyframes_of(self, video_id: str) -> dict[int, bytes]:
        table = read_table(self.out, self.out.stage_file("keyframes", video_id)).select(["keyframe_id", "jpeg"])
        return dict(zip(table["keyframe_id"].to_pylist(), table["jpeg"].to_pylist(), strict=True))

    def _keyframe_bytes(self, video_id: str, keyframe_id: int) -> bytes:
        return self._keyframes_of(video_id)[keyframe_id]
