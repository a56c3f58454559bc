"""The DAG without an executor, in this process: each unit of a per-video stage runs as soon as the units it reads
are finished, on a few threads, so one video's OCR runs while another's (or its own) refinement does, and no video
waits for the slowest of a stage. A stage whose unit is not a video (a topic, the corpus) reads the whole set: it
starts when every earlier stage is finished. Tests, benchmarks and the check of a finished run use `run_stages`;
the Prefect flows run batches of videos through `run_units` inside their tasks."""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import heapq
import sys
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor

from pipeline.engine.engine import Engine, UnitResult
from pipeline.engine.run_files import StageReport
from pipeline.engine.stage import ResultRef

RunUnit = Callable[[str, str], UnitResult]
M_ARENA_MAX = -8  # glibc's mallopt parameter


@functools.cache  # once per process and value: every batch task's run_units asks
def limit_malloc_arenas(arenas: int | None) -> bool:
    """Cap this process's glibc malloc arenas (threads created after share them); whether glibc took it. Elsewhere
    (macOS, musl) there is nothing to cap."""
    if arenas is None or not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return bool(libc.mallopt(M_ARENA_MAX, arenas))
    except (OSError, AttributeError):
        return False


def default_workers(engine: Engine) -> int:
    run = getattr(engine.config, "run", None)
    return max(1, getattr(run, "workers", 1))


def run_units(
    engine: Engine, stage_names: Iterable[str], unit_ids: Iterable[str] | None, workers: int, run_unit: RunUnit
) -> dict[ResultRef, tuple[UnitResult, float, float]]:
    """Run the units of these per-video stages (only `unit_ids` when given), each once every unit it reads among
    them is finished, on `workers` threads; by (stage, unit): the result and when it started and ended."""
    names = list(stage_names)
    chosen = None if unit_ids is None else set(unit_ids)
    todo = [(name, unit) for name in names for unit in engine.units(name).values()
            if chosen is None or unit.unit_id in chosen]  # fmt: skip
    refs = {(name, unit.unit_id) for name, unit in todo}
    waits_on = {(name, unit.unit_id): {ref for ref in unit.reads if ref in refs} for name, unit in todo}
    readers: dict[ResultRef, list[ResultRef]] = {ref: [] for ref in refs}
    for ref, needs in waits_on.items():
        for need in needs:
            readers[need].append(ref)
    position = {unit.unit_id: n for n, (_, unit) in reversed(list(enumerate(todo)))}
    # Among ready units, the earliest stage's first: a write makes the engine plan the stages after it again, so
    # going down one video's stages while the others wait costs a plan of every video per unit.
    order = {ref: (names.index(ref[0]), position[ref[1]]) for ref in refs}
    done: dict[ResultRef, tuple[UnitResult, float, float]] = {}
    ready = [(order[ref], ref) for ref, needs in waits_on.items() if not needs]
    heapq.heapify(ready)
    changed = threading.Condition()
    running, errors = 0, []

    def work() -> None:
        """Each thread takes the next ready unit itself and makes its readers ready: no dispatcher between units."""
        nonlocal running
        while True:
            with changed:
                while not ready and running and not errors:
                    changed.wait()
                if not ready or errors:  # everything ran, or a unit raised (a full disk): the run stops
                    return
                ref = heapq.heappop(ready)[1]
                running += 1
            started = time.time()  # wall clock: units of one stage may run in several processes (Ray, Dask)
            try:
                result = run_unit(*ref)
            except BaseException as error:
                with changed:
                    running -= 1
                    errors.append(error)
                    changed.notify_all()
                raise
            with changed:
                running -= 1
                done[ref] = (result, started, time.time())
                for reader in readers[ref]:
                    waits_on[reader].discard(ref)
                    if not waits_on[reader]:
                        heapq.heappush(ready, (order[reader], reader))
                changed.notify_all()

    limit_malloc_arenas(getattr(getattr(engine.config, "run", None), "malloc_arenas", None))
    with ThreadPoolExecutor(max(1, workers)) as pool:
        for future in [pool.submit(work) for _ in range(max(1, workers))]:
            future.result()
    engine.make_durable()
    return done


def stage_groups(engine: Engine, stage_names: Iterable[str]) -> list[list[str]]:
    """The named stages in DAG order, split into runs of consecutive per-video stages and single other stages."""
    wanted, groups = set(stage_names), []
    for stage in engine.dag.stages:
        if stage.name not in wanted:
            continue
        if stage.unit_kind == "video" and groups and engine.dag[groups[-1][0]].unit_kind == "video":
            groups[-1].append(stage.name)
        else:
            groups.append([stage.name])
    return groups


def reports_of(names: list[str], done: dict[ResultRef, tuple[UnitResult, float, float]]) -> list[StageReport]:
    """One report per stage; its wall time runs from its first unit's start to its last unit's end."""
    reports = []
    for name in names:
        timings = [timing for ref, timing in done.items() if ref[0] == name]
        wall = max((end for _, _, end in timings), default=0.0) - min((start for _, start, _ in timings), default=0.0)
        reports.append(StageReport.from_results(name, [result for result, _, _ in timings], wall))
    return reports


def run_stages(
    engine: Engine, stage_names: Iterable[str], force: bool = False, workers: int | None = None
) -> list[StageReport]:
    """Every planned unit of the named stages, on `workers` threads (the config's `run.workers` by default)."""
    threads = workers or default_workers(engine)
    reports = []
    for group in stage_groups(engine, stage_names):
        done = run_units(engine, group, None, threads, lambda stage, unit: engine.run_unit(stage, unit, force))
        reports += reports_of(group, done)
    return reports
