"""What orchestration costs per video-stage: synthetic videos through per-video stages that each burn a fixed 20 ms
of CPU per video, through Prefect, in one run.

Why: at the paper's 75K videos, a Prefect task run per stage per video is about a million task runs, each costing
more than many stages' work. Three ways are timed side by side, each on a fresh output folder: the former task
shape (a Prefect task run per (stage, video), a barrier after every stage), the flows' batched shape (videos in
batches through their per-video stages, `flows.process.run_stages`), and the engine alone without Prefect
(`pipeline.engine.local.run_stages`). Orchestration is the wall time minus the CPU the stages burned, over the
units: Prefect's API calls, the engine's planning, fingerprints and atomic Parquet writes. Units run one at a time
(one worker), so the wall time cannot hide the burn.

    .venv/bin/python benchmarks/orchestration.py [--videos 1000] [--baseline-videos 200] [--stages 5]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import pyarrow as pa
from keyframes import timed
from prefect import flow
from prefect.task_runners import ThreadPoolTaskRunner

from configs import PipelineConfig, load_config
from flows.process import Submitted, gather, run_stages, unit_task
from flows.runners import task_options
from pipeline.engine import local
from pipeline.engine.engine import Engine
from pipeline.engine.plans import per_video
from pipeline.engine.stage import Dag, Stage, UnitWork
from pipeline.records import StageOutput, VideoInput
from storage.outdir import OutDir

BURN_SECONDS = 0.020
# One worker: the burn holds the GIL, and beside it another thread's every return from I/O (an fsync, a write)
# waits for Python's switch interval (5 ms), which would count as orchestration; real stages release the GIL.
WORKERS = 1
TARGET_MS = 2.0
SCHEMA = pa.schema([("video_id", pa.string()), ("stage", pa.string())])
burned: list[float] = []  # CPU seconds each unit burned (list.append is atomic under the GIL)


def burn(work: UnitWork) -> StageOutput:
    """20 ms of this thread's CPU in pure Python: the GIL is held throughout, so units cannot overlap."""
    started = time.thread_time()
    while time.thread_time() - started < BURN_SECONDS:
        pass
    burned.append(time.thread_time() - started)
    return StageOutput(rows=[{"video_id": work.unit.unit_id, "stage": work.stage}])


def bench_dag(stages: int) -> Dag:
    names = [f"stage{n}" for n in range(stages)]
    return Dag(
        tuple(
            Stage(name, "video", "1", tuple(names[:n][-1:]), (), SCHEMA, burn, per_video())
            for n, name in enumerate(names)
        )
    )


def videos(count: int) -> list[VideoInput]:
    return [VideoInput(f"video{n:05d}", f"synthetic://{n}", "synthetic", n) for n in range(count)]


def one_task_per_unit(engine: Engine, names: list[str]) -> None:
    """The former shape: every (stage, video) its own Prefect task run, every stage waiting for the last."""
    for name in names:
        options = task_options(name, "compute", (), engine.config)
        stage_task = unit_task.with_options(**options)
        units = list(engine.units(name).values())
        submitted = [Submitted(stage_task.submit(name, u.unit_id, engine, False), name, u.unit_id, "") for u in units]
        gather(name, submitted, engine, progress=False)


@flow(name="orchestration-benchmark", task_runner=ThreadPoolTaskRunner(max_workers=WORKERS))
def timed_flow(shape: str, out: str, count: int, stages: int) -> float:
    config = bench_config()
    engine = Engine(OutDir(out), config, bench_dag(stages), videos(count))
    names = list(engine.dag.names)
    runs: dict[str, Callable[[], object]] = {
        "one task per (stage, video)": lambda: one_task_per_unit(engine, names),
        "batched videos (flows.process)": lambda: run_stages(engine, names, force=False),
    }
    return timed(runs[shape])[0]


def bench_config() -> PipelineConfig:
    config = load_config(None)
    return config.model_copy(update={"run": config.run.model_copy(update={"progress": False, "workers": WORKERS})})


def measure(run: Callable[[], float], units: int) -> tuple[float, float]:
    """(wall seconds, orchestration ms per unit) of one run, from the CPU its units burned."""
    burned.clear()
    wall = run()
    assert len(burned) == units, f"{len(burned)} of {units} units burned: a unit did not run"
    return wall, (wall - sum(burned)) / units * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--videos", type=int, default=1000)
    parser.add_argument("--baseline-videos", type=int, default=200, help="the former shape is slow: fewer videos")
    parser.add_argument("--stages", type=int, default=5)
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="orchestration-"))
    config = bench_config()
    shapes = {
        "one task per (stage, video)": args.baseline_videos,
        "batched videos (flows.process)": args.videos,
    }
    figures = {}
    for shape, count in shapes.items():
        run = partial(timed_flow, shape, str(folder / shape.split()[0]), count, args.stages)
        figures[shape] = (count, *measure(run, count * args.stages))
    engine = Engine(OutDir(folder / "local"), config, bench_dag(args.stages), videos(args.videos))
    alone = measure(lambda: timed(lambda: local.run_stages(engine, engine.dag.names))[0], args.videos * args.stages)
    figures["engine alone (local.run_stages)"] = (args.videos, *alone)
    print(f"{args.stages} per-video stages burning {BURN_SECONDS * 1000:.0f} ms of CPU per video, {WORKERS} worker")
    for shape, (count, wall, per_unit) in figures.items():
        print(f"{shape}: {count} videos, {wall:.1f} s wall, {per_unit:.2f} ms orchestration per video-stage")
    former, ours = figures["one task per (stage, video)"][2], figures["batched videos (flows.process)"][2]
    alone = figures["engine alone (local.run_stages)"][2]
    print(f"Prefect's share, batched: {ours - alone:.2f} ms per video-stage over the engine's own {alone:.2f} ms")
    print(f"former shape / batched: {former / ours:.1f}x (target <= {TARGET_MS:.0f} ms per video-stage)")
    print(f"orchestration: {ours:.2f} ms per video-stage")


if __name__ == "__main__":
    main()
