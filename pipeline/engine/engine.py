"""The executor-free engine: one path plans, skips, runs, writes and records every unit of every stage.

A result is current when its stamp's input key equals the key its stage would compute now: the stage's code
version, the config sections it reads under the *current* config, what identifies its input outside OUT, and the
fingerprints of every result it reads, each of them current in turn. A unit whose inputs are not current is
blocked; an older result that is not current is moved to `OUT/stale/` when its recompute fails or is blocked, so
nothing downstream (and no shard) is ever served from a config the run was not made with.
"""

from __future__ import annotations

import os
import threading
import time
import traceback
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import pyarrow as pa

from configs.secrets import redact
from pipeline.engine.stage import Dag, ResultRef, Stage, Unit, UnitWork
from pipeline.records import StageOutput, VideoInput, is_transient, reason_code, type_code
from storage.outdir import OutDir, OutputUnwritable, make_durable
from storage.tables import Stamp, content_digest, digest, read_stamp, read_table, rows_to_table, write_table

Status = Literal["done", "skipped", "failed", "blocked", "dropped"]
STATUSES: tuple[Status, ...] = ("done", "skipped", "failed", "blocked", "dropped")
STALE_DIR = "stale"
SYNC_EVERY_SECONDS = 1.0  # a power cut loses at most about this much finished work


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


def drop_label(stats: dict[str, Any]) -> str | None:
    """ "<filter stage>: <reason>" when a result's stats say a filter dropped its unit, else None."""
    drop = stats.get("drop")
    return f"{drop['stage']}: {drop['reason']}" if drop else None


def result_fingerprint(input_key: str, force: bool, table: pa.Table) -> str:
    """A result is named by its content, so a rerun whose result did not change (a setting that gives the same
    verdicts) leaves everything downstream current. A forced recompute gets a new name, which makes everything
    downstream stale."""
    if force:
        return digest([input_key, time.time_ns()])
    return content_digest(table)


def error_message(error: BaseException) -> str:
    """The first line of an error, credentials masked: it goes to failures, the summary, the report and Prefect."""
    text = redact(str(error).strip())
    return text.splitlines()[0][:500] if text else redact(repr(error))


class Engine:
    """The output folder seen through the DAG: which results are current, and the one way a unit is run.

    Currency and plans are memoised per process and refreshed downstream of every write; the engine pickles
    without them, so Ray and Dask workers rebuild their own."""

    def __init__(self, out: OutDir, config: Any, dag: Dag, videos: Iterable[VideoInput] = ()) -> None:
        if not isinstance(config, dag.config_model):
            raise TypeError(f"this DAG runs under a {dag.config_model.__name__}, not a {type(config).__name__}")
        self.out = out
        self.config = config
        self.dag = dag
        self.videos = list(videos)
        self._reset_memos()

    def _reset_memos(self) -> None:
        self._lock = threading.RLock()
        self._plans: dict[str, dict[str, Unit]] = {}
        self._current: dict[str, dict[str, str | None]] = {}
        self._sections: dict[str, dict[str, Any]] = {}
        self._written: dict[str, Stamp] = {}  # stamps of the results this engine wrote, by path
        self._unsynced: list[str] = []  # results written but not yet made durable
        self._synced_at = time.monotonic()

    def __getstate__(self) -> dict[str, Any]:
        self.make_durable()
        state = self.__dict__.copy()
        for name in ("_lock", "_plans", "_current", "_sections", "_written", "_unsynced", "_synced_at"):
            state.pop(name)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._reset_memos()

    @property
    def topics(self) -> dict[str, list[VideoInput]]:
        """Topics in the order of their first video, each with its videos in input order."""
        topics: dict[str, list[VideoInput]] = {}
        for video in sorted(self.videos, key=lambda v: v.order):
            topics.setdefault(video.topic, []).append(video)
        return topics

    @property
    def media_dir(self) -> Path | None:
        return Path(self.out.root) / "media" if self.out.is_local else None

    def result_path(self, ref: ResultRef) -> str:
        return self.out.stage_file(*ref)

    def stamp(self, ref: ResultRef) -> Stamp | None:
        path = self.result_path(ref)
        with self._lock:
            written = self._written.get(path)
        return written if written is not None else read_stamp(self.out, path)

    def table(self, ref: ResultRef) -> pa.Table:
        return read_table(self.out, self.result_path(ref))

    # -- planning and currency ----------------------------------------------------------------------------------

    def units(self, stage_name: str) -> dict[str, Unit]:
        """The units of a stage under the current config and inputs, by id."""
        with self._lock:
            if stage_name not in self._plans:
                stage = self.dag[stage_name]
                self._plans[stage_name] = {unit.unit_id: unit for unit in stage.plan(self, stage)}
            return self._plans[stage_name]

    def input_key(self, stage: Stage, unit: Unit) -> str | None:
        """What the unit's result must have been computed from to be current now; None while a read is not."""
        reads = {}
        for ref in unit.reads:
            fingerprint = self.current(ref)
            if fingerprint is None:
                return None
            reads["/".join(ref)] = fingerprint
        with self._lock:
            if stage.name not in self._sections:  # the config does not change under an engine
                self._sections[stage.name] = {name: getattr(self.config, name).model_dump(mode="json")
                                              for name in stage.sections_for(self.config)}  # fmt: skip
            config = self._sections[stage.name]
        return digest({"stage": stage.name, "version": stage.version, "config": config,
                       "external": unit.external, "reads": reads})  # fmt: skip

    def current(self, ref: ResultRef) -> str | None:
        """The fingerprint of a result that is current under this config and these inputs, else None."""
        stage_name, unit_id = ref
        with self._lock:
            known = self._current.get(stage_name, {})
            if unit_id in known:
                return known[unit_id]
            stamp = self.current_stamp(ref)
            return None if stamp is None else stamp.fingerprint

    def current_stamp(self, ref: ResultRef) -> Stamp | None:
        """The stamp of a result that is current, for a caller that needs its figures: read once, where `current`
        then `stamp` would read it twice."""
        stage_name, unit_id = ref
        with self._lock:
            unit = self.units(stage_name).get(unit_id)
            key = None if unit is None else self.input_key(self.dag[stage_name], unit)
            stamp = self.stamp(ref) if key is not None else None
            fresh = stamp if stamp is not None and stamp.input_key == key else None
            self._current.setdefault(stage_name, {})[unit_id] = None if fresh is None else fresh.fingerprint
            return fresh

    def _changed(self, stage_name: str) -> None:
        """A result of `stage_name` was written or moved: forget what was concluded downstream of it."""
        with self._lock:
            self._current.pop(stage_name, None)
            for name in self.dag.downstream_of(stage_name):
                self._plans.pop(name, None)
                self._current.pop(name, None)

    def up_to_date(self, stage_names: Iterable[str]) -> bool:
        """True when every planned unit of these stages is current and the last one made something: a run of
        them would only skip."""
        names = list(stage_names)
        for name in names:
            if not all(self.current((name, unit_id)) for unit_id in self.units(name)):
                return False
        return bool(names) and bool(self.units(names[-1]))

    # -- running ------------------------------------------------------------------------------------------------

    def run_unit(self, stage_name: str, unit_id: str, force: bool = False) -> UnitResult:
        """Run one unit: skip it when current, block it while an input is not, else compute, write atomically
        and record; an exception becomes a recorded failure and the run goes on."""
        stage = self.dag[stage_name]
        result = UnitResult(stage.name, unit_id, "blocked")
        unit = self.units(stage.name).get(unit_id)
        if unit is None:
            result.message = "not planned under the current inputs"
            return result
        result.media_seconds = unit.media_seconds or self.duration(unit_id if stage.unit_kind == "video" else "")
        ref = (stage.name, unit_id)
        key = self.input_key(stage, unit)
        if key is None:
            result.message = "an input is not current under this config"
            self.retire(stage, unit_id)
            return result
        stamp = self.stamp(ref)
        if not force and stamp is not None and stamp.input_key == key:
            result.status = "skipped"
            return result
        started = time.perf_counter()
        try:
            output = self._compute(stage, unit)
            table = rows_to_table(output.rows, stage.schema)
            fingerprint = result_fingerprint(key, force, table)
            inputs = {"/".join(read): self.current(read) for read in unit.reads}
            written, path = Stamp(stage.name, key, fingerprint, inputs, output.stats), self.result_path(ref)
            write_table(self.out, path, table, written, durable=False)
            self._wrote(path, written)
        except OutputUnwritable:  # a full or read-only OUT: no unit can finish, so the run stops with the cause
            raise
        except Exception as error:  # every failure becomes a record; the run goes on
            result.status, result.error_type, result.transient = "failed", type(error).__name__, is_transient(error)
            result.message, result.seconds = error_message(error), time.perf_counter() - started
            self.record_failure(stage.name, unit_id, result.error_type, result.message, unit.source,
                                traceback.format_exc(limit=5), reason_code(error))  # fmt: skip
            self.retire(stage, unit_id)
            return result
        self._changed(stage.name)
        with self._lock:
            self._current.setdefault(stage.name, {})[unit_id] = fingerprint
        self.out.remove(self.failure_path(stage.name, unit_id))
        for part in output.failures:
            self.record_failure(stage.name, part["unit"], part["error_type"], part["message"], part.get("source", ""),
                                reason=part.get("reason"))  # fmt: skip
        result.status, result.stats, result.seconds = "done", output.stats, time.perf_counter() - started
        if label := drop_label(output.stats):
            result.status, result.message = "dropped", label
        if stage.name == "probe":
            result.media_seconds = float(output.values.get("duration", 0.0))
        if stage.reads_media and not self.config.download.keep_media:  # media stages are the data pipeline's
            self._release_media(unit_id)
        return result

    def _wrote(self, path: str, stamp: Stamp) -> None:
        """A result is written: a kill cannot hurt it (it was renamed into place whole); it is made durable against
        a power cut with the others of the last second, in one flush, instead of two fsyncs a result."""
        with self._lock:
            self._written[path] = stamp
            self._unsynced.append(path)
            due = time.monotonic() - self._synced_at >= SYNC_EVERY_SECONDS
        if due:
            self.make_durable()

    def make_durable(self) -> None:
        """Flush every result written since the last flush (the schedulers call it when their units are done)."""
        with self._lock:
            paths, self._unsynced, self._synced_at = self._unsynced, [], time.monotonic()
        if paths and self.out.is_local:
            make_durable(paths)

    def _compute(self, stage: Stage, unit: Unit) -> StageOutput:
        if stage.whole_unit_drop and (drop := self.upstream_drop(unit.reads)):
            return StageOutput(rows=[], drop=drop)
        allowed = set(unit.reads)

        def tables(ref: ResultRef) -> pa.Table:
            if ref not in allowed:  # what is not in the fingerprint must not reach the result
                raise KeyError(f"{stage.name}/{unit.unit_id} reads {'/'.join(ref)}, which its plan does not declare")
            return self.table(ref)

        fingerprints = {ref: self.current(ref) for ref in unit.reads}
        return stage.run(UnitWork(stage.name, unit, self.config, tables, self.media_dir, fingerprints, self.out))

    def upstream_drop(self, reads: Iterable[ResultRef]) -> dict[str, str] | None:
        """The drop (filter stage, reason) of a unit a filter upstream dropped: it passes down the DAG as empty
        results, so later stages cost nothing and the reason reaches the summary."""
        for ref in reads:
            stamp = self.stamp(ref)
            if stamp is not None and stamp.stats.get("drop"):
                return stamp.stats["drop"]
        return None

    def retire(self, stage: Stage, unit_id: str) -> None:
        """Move a result that is not current out of the DAG's view, to `stale/<stage>/<unit>.<fingerprint>`,
        kept for debugging; a stage that publishes files beyond its table retires those too."""
        ref = (stage.name, unit_id)
        stamp = self.stamp(ref)
        if stamp is None or self.current(ref) is not None:
            return
        path = self.result_path(ref)
        stale = self.out.path(STALE_DIR, stage.name, f"{unit_id}.{stamp.fingerprint}.parquet")
        self.out.fs.makedirs(stale.rsplit("/", 1)[0], exist_ok=True)
        self.out.fs.mv(path, stale)
        with self._lock:
            self._written.pop(path, None)
        if stage.retire is not None:
            stage.retire(self.out, stamp)
        self._changed(stage.name)

    # -- failures -----------------------------------------------------------------------------------------------

    def failure_path(self, stage: str, unit: str) -> str:
        return self.out.path("failures", stage, f"{unit}.json")

    def failures(self) -> list[dict[str, Any]]:
        records = []
        for stage_dir in self.out.list("failures"):
            stage = stage_dir.rsplit("/", 1)[-1]
            records += [self.out.read_json(path) for path in self.out.list("failures", stage)]
        return sorted(records, key=lambda record: (record["stage"], record["video_id"]))

    def record_failure(
        self, stage: str, unit: str, error_type: str, message: str, source: str, detail: str = "",
        reason: str | None = None,
    ) -> None:  # fmt: skip
        """One failure as `failures/<stage>/<unit>.json`; `reason` is its code (by default its error type's)."""
        reason = reason or type_code(error_type)
        record = {"video_id": unit, "stage": stage, "error_type": error_type, "reason": reason,
                  "message": redact(message), "source": redact(source)}  # fmt: skip
        self.out.write_json(self.failure_path(stage, unit), {**record, "traceback": redact(detail)})

    # -- media --------------------------------------------------------------------------------------------------

    def duration(self, video_id: str) -> float:
        stamp = self.stamp(("probe", video_id)) if video_id and "probe" in self.dag else None
        return float(stamp.stats["values"].get("duration", 0.0)) if stamp else 0.0

    def _release_media(self, video_id: str) -> None:
        """Delete a downloaded video once every stage that reads it is current (`keep_media: false`)."""
        for stage in self.dag.stages:
            if stage.reads_media and self.current((stage.name, video_id)) is None:
                return
        record = self.table(("download", video_id)).to_pylist()[0]
        if record["downloaded"] and os.path.exists(record["path"]):
            os.remove(record["path"])
