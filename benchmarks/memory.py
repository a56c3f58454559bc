"""Peak memory of the whole data DAG on a 10- and a 60-minute lecture: it must stay under 3 GiB and not grow with
the video's length.

Why: audio is decoded in 10-minute windows, frames one at a time, and a stage holds one video's tables, so the
peak should be the models plus one window, whatever the length. Each lecture (`benchmarks/lecture.py`) runs in a
child process of its own, with the default config (refinement off, as shipped) and an empty LLM cache; its peak
resident set is the kernel's account of that child (`wait4`).

    .venv/bin/python benchmarks/memory.py [--minutes 10 60]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from lecture import fresh_lecture

from configs import load_config
from pipeline.dag import DAG, PROCESS_STAGES
from pipeline.engine.engine import Engine
from pipeline.engine.local import run_stages
from pipeline.inputs import resolve_inputs
from storage.outdir import OutDir

LIMIT_GIB = 3.0


def child(video: Path, folder: Path) -> None:
    """The DAG on one lecture in this process; prints how long it took."""
    config = load_config(None)
    config = config.model_copy(
        update={"llm": config.llm.model_copy(update={"cache_path": str(folder / "llm_calls.sqlite")})}
    )
    inputs = resolve_inputs(video, config.input)
    engine = Engine(OutDir(folder / "out"), config, DAG, inputs.videos)
    started = time.perf_counter()
    reports = run_stages(engine, PROCESS_STAGES)
    failed = sum(report.counts["failed"] for report in reports)
    print(f"{time.perf_counter() - started:.0f} s, {failed} failed units", flush=True)


def peak_gib(minutes: float) -> tuple[float, float, str]:
    """(peak RSS in GiB, wall seconds, the child's report) of the DAG on a fresh lecture of `minutes`."""
    video = fresh_lecture(minutes)
    folder = Path(tempfile.mkdtemp(prefix=f"memory-{minutes:g}min-"))
    started = time.perf_counter()
    command = [sys.executable, __file__, "--child", str(video), str(folder)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    report = process.stdout.read().strip() if process.stdout else ""
    _, status, usage = os.wait4(process.pid, 0)
    if status != 0:
        raise RuntimeError(f"the {minutes:g}-minute run ended with status {status}")
    return usage.ru_maxrss / 2**20, time.perf_counter() - started, report  # ru_maxrss is in KiB on Linux


def main() -> None:
    if sys.argv[1:2] == ["--child"]:
        child(Path(sys.argv[2]), Path(sys.argv[3]))
        return
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, nargs="+", default=[10, 60])
    args = parser.parse_args()
    peaks = {}
    for minutes in args.minutes:
        peak, wall, report = peak_gib(minutes)
        peaks[minutes] = peak
        print(
            f"{minutes:g}-minute lecture: peak RSS {peak:.2f} GiB (limit {LIMIT_GIB:.0f}); DAG {report}; {wall:.0f} s"
        )
    shortest, longest = min(peaks), max(peaks)
    growth = peaks[longest] / peaks[shortest]
    print(f"peak RSS {longest:g} min / {shortest:g} min: {growth:.2f}x (flat means about 1.0x)")


if __name__ == "__main__":
    main()
