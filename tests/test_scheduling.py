"""The engine's scheduler: a video goes through its per-video stages without waiting for the slowest video of a
stage, and a stage that reads the whole set waits for every earlier one."""

from __future__ import annotations

import logging
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pytest

from configs import load_config
from flows.process import logging_each_video
from pipeline.engine.engine import Engine
from pipeline.engine.local import run_stages, run_units
from pipeline.engine.plans import per_video
from pipeline.engine.stage import Dag, Stage, Unit, UnitWork
from pipeline.records import StageOutput, VideoInput
from storage.outdir import OutDir

SCHEMA = pa.schema([("unit", pa.string()), ("ended", pa.float64())])


def _stage(name: str, inputs: tuple[str, ...], slow: str | None = None) -> Stage:
    def run(work: UnitWork) -> StageOutput:
        if work.unit.unit_id == slow:
            time.sleep(1.0)
        return StageOutput(rows=[{"unit": work.unit.unit_id, "ended": time.time()}])

    return Stage(name, "video", "1", inputs, (), SCHEMA, run, per_video())


def _corpus(engine: Engine, stage: Stage):
    yield Unit("all", tuple(("second", video.video_id) for video in engine.videos))


def _collect(work: UnitWork) -> StageOutput:
    return StageOutput(rows=[{"unit": "all", "ended": time.time()}])


def test_a_fast_video_is_not_held_back_by_a_slow_one(tmp_path: Path):
    dag = Dag((_stage("first", (), slow="slow"), _stage("second", ("first",)),
               Stage("corpus", "corpus", "1", ("second",), (), SCHEMA, _collect, _corpus)))  # fmt: skip
    videos = [VideoInput(name, f"synthetic://{name}", "t", n) for n, name in enumerate(["slow", "fast", "third"])]
    engine = Engine(OutDir(tmp_path / "out"), load_config(None), dag, videos)
    reports = {report.stage: report for report in run_stages(engine, dag.names, workers=2)}
    assert all(report.counts["done"] == len(engine.units(name)) for name, report in reports.items())
    ended = {(stage, video.video_id): engine.table((stage, video.video_id))["ended"][0].as_py()
             for stage in ("first", "second") for video in videos}  # fmt: skip
    slow_first = ended[("first", "slow")]
    assert ended[("second", "fast")] < slow_first and ended[("second", "third")] < slow_first
    assert engine.table(("corpus", "all"))["ended"][0].as_py() > max(ended.values())


def test_a_batch_logs_each_video_when_it_ends_not_when_the_batch_does(tmp_path: Path, caplog):
    dag = Dag((_stage("first", (), slow="slow"), _stage("second", ("first",))))
    videos = [VideoInput(name, f"synthetic://{name}", "t", n) for n, name in enumerate(["slow", "fast"])]
    engine = Engine(OutDir(tmp_path / "out"), load_config(None), dag, videos)
    logger = logging.LoggerAdapter(logging.getLogger("batch-test"))
    run = logging_each_video(lambda stage, unit: engine.run_unit(stage, unit), engine, ["first", "second"],
                             ["slow", "fast"], logger)  # fmt: skip
    with caplog.at_level(logging.INFO, logger="batch-test"):
        run_units(engine, ["first", "second"], ["slow", "fast"], 2, run)
    lines = {record.getMessage().split(":")[0]: record for record in caplog.records}
    assert set(lines) == {"slow", "fast"}
    fast = lines["fast"].getMessage()
    assert fast.startswith("fast: first done ") and ", second done " in fast
    assert lines["fast"].created < engine.table(("first", "slow"))["ended"][0].as_py(), "logged before slow's end"


ARENAS_AFTER_THREADS = """
import ctypes, sys, tempfile, threading
from pipeline.engine.local import limit_malloc_arenas
libc = ctypes.CDLL("libc.so.6")
libc.fdopen.restype = ctypes.c_void_p
def arenas():
    with tempfile.TemporaryFile() as report:
        stream = ctypes.c_void_p(libc.fdopen(report.fileno(), b"w"))
        libc.malloc_info(0, stream)
        libc.fflush(stream)
        report.seek(0)
        return report.read().decode().count("<heap nr=")
before = arenas()
if sys.argv[1] != "none":
    assert limit_malloc_arenas(int(sys.argv[1]))
def allocate():
    kept = []
    for _ in range(20000):
        kept = kept[-100:] + [bytearray(2000)]  # malloc'd from the thread's arena, not Python's small-object pools
threads = [threading.Thread(target=allocate) for _ in range(8)]
for thread in threads:
    thread.start()
for thread in threads:
    thread.join()
print(before, arenas())
"""


def _arenas(cap: str) -> tuple[int, int]:
    """glibc's arena count before and after 8 threads allocate, with `cap` arenas (`none`: glibc's default)."""
    counted = subprocess.run([sys.executable, "-c", ARENAS_AFTER_THREADS, cap], capture_output=True, text=True,
                             check=True)  # fmt: skip
    before, after = map(int, counted.stdout.split())
    return before, after


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="malloc arenas are glibc's")
def test_threads_running_units_share_the_configured_malloc_arenas():
    cap = load_config(None).run.malloc_arenas
    assert cap == 2
    before, uncapped = _arenas("none")
    if uncapped <= before:
        pytest.skip(f"8 allocating threads made no arena of their own here ({before} before and after)")
    assert _arenas(str(cap))[1] <= max(cap, before), f"glibc's default went from {before} to {uncapped} arenas"
