"""SIGKILL a run of three videos (two fetched from 127.0.0.1, one local) at seeded random moments and at injected kill
points (a stage table half written, a shard half written, a finished `.partial` not yet renamed, the shard index
swapped but its strays not yet removed, a download mid-file), resume, and check that the shards hold exactly the
samples of an uninterrupted run.

Each killed run is a child forked from this process, so the models are loaded once (in the uninterrupted run) and
shared: torch runs one thread here (an OpenMP pool does not survive a fork), and the child loads the ASR model
again (CTranslate2 keeps it on worker threads that a fork does not copy; tiny.en loads in under a second).
"""

from __future__ import annotations

import io
import itertools
import json
import os
import random
import shutil
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import torch
from fsspec.implementations.local import LocalFileSystem
from PIL import Image

import pipeline.asr
import storage.shards
from configs import parse_config
from pipeline.dag import DAG, PROCESS_STAGES
from pipeline.engine import engine as engine_module
from pipeline.engine.engine import Engine
from pipeline.engine.local import run_stages
from pipeline.inputs import resolve_inputs
from pipeline.models.loading import loaded_once
from pipeline.records import VideoInput
from storage.outdir import OutDir
from tests.conftest import LECTURE, ffmpeg, shard_files
from tests.demo_site import MediaServer

pytestmark = pytest.mark.slow

SEED = 18
RANDOM_TRIALS = 5  # the first killed three times at seeded moments before its resume, the others once
SPANS = {"intro": (0.0, 5.0), "question": (9.0, 13.5), "fit": (25.6, 30.0)}  # one slide of the lecture each
CONFIG = parse_config(
    {
        "asr": {"cpu_threads": 1},
        "download": {"attempts": 2, "backoff_seconds": 0.1},
        "filter_asr": {"min_words": 5, "min_speech_seconds": 2, "llm_scoring": False},  # short clips: quick trials
    }
)
CHILD_TIMEOUT = 120


@pytest.fixture(scope="module")
def one_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MediaServer]:
    folder = tmp_path_factory.mktemp("kill-clips")
    for name, (start, end) in SPANS.items():
        ffmpeg("-ss", str(start), "-to", str(end), "-i", str(LECTURE), "-vf", "scale=480:-2", "-c:v", "libx264",
               "-preset", "ultrafast", "-c:a", "aac", str(folder / f"{name}.mp4"))  # fmt: skip
    with MediaServer(folder) as server:
        yield server


@pytest.fixture(scope="module")
def videos(site: MediaServer, tmp_path_factory: pytest.TempPathFactory) -> list[VideoInput]:
    manifest = tmp_path_factory.mktemp("kill-manifest") / "lectures.csv"
    rows = [
        f"{site.url}/intro.mp4,regression",
        f"{site.url}/question.mp4,regression",
        f"{site.folder / 'fit.mp4'},fit",
    ]
    manifest.write_text("path,topic\n" + "\n".join(rows) + "\n")
    return resolve_inputs(manifest, CONFIG.input).videos


@pytest.fixture(scope="module")
def reference(one_thread, videos: list[VideoInput], tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, float]:
    """The uninterrupted run (it loads the models this process shares with its children), and how long it took."""
    out = tmp_path_factory.mktemp("kill-reference") / "out"
    started = time.perf_counter()
    run_stages(Engine(OutDir(out), CONFIG, DAG, videos), PROCESS_STAGES)
    seconds = time.perf_counter() - started
    warm = out.with_name("warm")  # a second run on the loaded models: what a killed child's run costs
    started = time.perf_counter()
    run_stages(Engine(OutDir(warm), CONFIG, DAG, videos), PROCESS_STAGES)
    assert _samples(warm) == _samples(out)
    assert seconds > 0
    return out, time.perf_counter() - started


def _die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def _killed_run(out: Path, videos: list[VideoInput], arm: Callable[[Path], None]) -> bool:
    """Run every stage in a forked child that `arm` set up to SIGKILL itself; True when it was killed."""
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        code = 1
        try:
            pipeline.asr.load_asr = loaded_once(pipeline.asr.load_asr.__wrapped__)
            arm(out)
            run_stages(Engine(OutDir(out), CONFIG, DAG, videos), PROCESS_STAGES)
            code = 0
        finally:
            os._exit(code)
    deadline = time.monotonic() + CHILD_TIMEOUT
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            assert not os.WIFEXITED(status) or os.WEXITSTATUS(status) == 0, "the child run raised"
            return os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
        time.sleep(0.02)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    raise AssertionError(f"the child run hung for {CHILD_TIMEOUT} s")


def at_moment(seconds: float) -> Callable[[Path], None]:
    def arm(out: Path) -> None:
        timer = threading.Timer(seconds, _die)
        timer.daemon = True
        timer.start()

    return arm


def half_written(module, nth: int) -> Callable[[Path], None]:
    """The `nth` table `module` writes gets half its Parquet bytes into its `.partial`, then the process dies."""

    def arm(out: Path) -> None:
        real, calls = module.write_table, itertools.count(1)

        def write_table(out_dir: OutDir, path: str, table, *args, **kwargs) -> None:
            if next(calls) == nth:
                buffer = io.BytesIO()
                pq.write_table(table, buffer)
                with out_dir.open_atomic(path) as handle:
                    handle.write(buffer.getvalue()[: buffer.tell() // 2])
                    handle.flush()
                    _die()
            real(out_dir, path, table, *args, **kwargs)

        module.write_table = write_table

    return arm


def before_rename(nth: int) -> Callable[[Path], None]:
    """Dies at the `nth` rename: a complete `.partial` (or a result being moved aside) never renamed."""

    def arm(out: Path) -> None:
        real, calls = LocalFileSystem.mv, itertools.count(1)

        def mv(self, *args, **kwargs):
            if next(calls) == nth:
                _die()
            return real(self, *args, **kwargs)

        LocalFileSystem.mv = mv

    return arm


def after_index_swap(out: Path) -> None:
    """Dies once the new shard index is in place, before the shards no set lists are removed."""
    storage.shards._remove_strays = lambda *args: _die()


def mid_download(site: MediaServer) -> Callable[[Path], None]:
    """Dies once a download has written part of its file (the server sends slowly meanwhile)."""

    def arm(out: Path) -> None:
        def watch() -> None:
            while True:
                if any(p.stat().st_size > 0 for p in (out / "media").glob("*.part")):
                    _die()
                time.sleep(0.01)

        threading.Thread(target=watch, daemon=True).start()

    return arm


def _samples(out: Path) -> list[dict]:
    """Every sample of the current set, each shard read back as Parquet and each image decoded."""
    rows = []
    for path in shard_files(out):
        assert pq.ParquetFile(path).metadata.num_rows >= 1
        for row in pq.read_table(path).to_pylist():
            for image in row["images"]:
                if image is not None:
                    Image.open(io.BytesIO(image["bytes"])).convert("RGB")
            rows.append(row)
    return rows


def _shard_bytes(out: Path) -> list[bytes]:
    return [Path(path).read_bytes() for path in shard_files(out)]


def _sample_keys(rows: list[dict]) -> Counter:
    return Counter(json.dumps(json.loads(row["metadata"]), sort_keys=True) for row in rows)


def test_killed_runs_resume_to_exactly_the_uninterrupted_samples(reference, videos, site: MediaServer, tmp_path):
    expected_out, warm_seconds = reference
    expected = _samples(expected_out)
    assert expected and max(_sample_keys(expected).values()) == 1
    rng = random.Random(SEED)
    written = [len(DAG.stages) * len(videos)]  # stage tables of a whole run, about: where a kill may land
    trials: list[tuple[str, list[Callable[[Path], None]]]] = [
        ("stage table half written", [half_written(engine_module, rng.randint(2, written[0] - 2))]),
        ("shard half written", [half_written(storage.shards, 1)]),
        ("finished .partial not renamed", [before_rename(rng.randint(2, written[0] - 2))]),
        ("index swapped, strays left", [after_index_swap]),
        ("download mid-file", [mid_download(site)]),
    ]
    trials += [
        (f"random moments {n}", [at_moment(rng.uniform(0.05, 0.9) * warm_seconds) for _ in range(3 if n == 0 else 1)])
        for n in range(RANDOM_TRIALS)
    ]
    killed = 0
    for name, kills in trials:
        started = time.perf_counter()
        out = tmp_path / name.replace(" ", "-")
        site.throttled = name.startswith("download")
        try:
            killed += sum(_killed_run(out, videos, arm) for arm in kills)
        finally:
            site.throttled = False
        resumed = Engine(OutDir(out), CONFIG, DAG, videos)
        reports = run_stages(resumed, PROCESS_STAGES)
        assert all(report.counts["failed"] == 0 for report in reports), name
        got = _samples(out)
        assert _sample_keys(got) == _sample_keys(expected), f"{name}: samples missing or repeated"
        assert got == expected, f"{name}: a sample differs from the uninterrupted run's"
        assert [Path(p).read_bytes() for p in shard_files(out)] == [
            Path(p).read_bytes() for p in shard_files(expected_out)
        ]
        assert not [p for p in out.rglob("*") if p.name.endswith((".partial", ".part"))], name
        assert resumed.up_to_date(PROCESS_STAGES), name
        shutil.rmtree(out)
        print(f"{name}: {time.perf_counter() - started:.1f} s")
    assert len(trials) >= 10 and killed >= len(trials)  # every trial was killed at least once before its resume
    print(f"kill-and-resume: {len(trials)} trials, {killed} kills, {len(expected)} samples each, none lost")
