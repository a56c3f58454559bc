"""The config-and-environment half of the bad-input matrix: unknown keys and wrong types are one-line errors naming the
key; a missing model is a recorded failure naming its path; an OUT on a full disk (a 160 KiB tmpfs mounted here) or a
read-only one stops the run at the failing write with one line naming the cause, leaves nothing half-written under
a final name, and the next run, with space, resumes."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from configs import ConfigError, load_config, parse_config
from pipeline.dag import DAG, PROCESS_STAGES
from pipeline.engine.engine import Engine
from pipeline.engine.local import run_stages
from pipeline.engine.run_files import RunFiles
from pipeline.inputs import resolve_inputs
from storage.lock import writer_lock
from storage.outdir import OutDir, OutputUnwritable
from tests.conftest import PART2, shard_files

CONFIG = parse_config({"filter_asr": {"llm_scoring": False}})


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("keyframes:\n  thresold: 1\n", "unknown config key 'keyframes.thresold'"),
        ("download:\n  attempts: four\n", "config key 'download.attempts': Input should be a valid integer"),
        ("probe: [1, 2]\n", "config key 'probe'"),
        (
            "download:\n  proxy: http://me:hunter2@proxy:3128\n",
            "config key 'download.proxy': Value error, download.proxy carries",
        ),
    ],
)
def test_a_bad_config_is_one_line_naming_the_key(tmp_path, text, message):
    path = tmp_path / "config.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as error:
        load_config(path)
    assert str(error.value).startswith(message) and "\n" not in str(error.value) and "hunter2" not in str(error.value)


def test_a_missing_model_is_a_recorded_failure_naming_it(tmp_path):
    config = parse_config({"asr": {"model": str(tmp_path / "no-such-model")}})
    engine = Engine(OutDir(tmp_path / "out"), config, DAG, resolve_inputs(PART2, config.input).videos)
    run_stages(engine, ["download", "probe", "asr"])
    (failure,) = engine.failures()
    assert failure["reason"] == "model_not_found" and str(tmp_path / "no-such-model") in failure["message"]


@pytest.fixture()
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 160 KiB tmpfs: room for the first stages' tables, not for the keyframes and shards."""
    folder = tmp_path / "disk"
    folder.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=160k", "tmpfs", str(folder)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({mounted.stderr.decode().strip()}): the full-disk test needs one")
    try:
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], check=True)


def _remount(folder: Path, options: str) -> None:
    subprocess.run(["mount", "-o", f"remount,{options}", str(folder)], check=True)


def _whole_files(out: Path) -> None:
    """Every file under a final name reads back whole; no `.partial` is left."""
    for path in out.rglob("*"):
        assert not path.name.endswith(".partial"), path
        if path.suffix == ".parquet":
            pq.read_table(path)
        elif path.suffix == ".json":
            json.loads(path.read_text())


def test_a_full_disk_stops_the_run_with_one_line_and_the_next_run_resumes(small_disk, tmp_path):
    out = small_disk / "out"
    inputs = resolve_inputs(PART2, CONFIG.input)
    files = RunFiles(OutDir(out))
    files.start(CONFIG, inputs)
    with pytest.raises(OutputUnwritable) as error:
        run_stages(Engine(files.out, CONFIG, DAG, inputs.videos), PROCESS_STAGES)
    message = str(error.value)
    assert "No space left on device" in message and str(out) in message and "\n" not in message
    _whole_files(out)
    done_before = {path.relative_to(out) for path in (out / "stages").rglob("*.parquet")}
    assert done_before  # the stages before the failing write kept their results

    _remount(small_disk, "size=64m")
    engine = Engine(files.out, CONFIG, DAG, inputs.videos)
    reports = {report.stage: report for report in run_stages(engine, PROCESS_STAGES)}
    assert reports["probe"].counts["skipped"] == 1 and all(r.counts["failed"] == 0 for r in reports.values())
    assert engine.up_to_date(PROCESS_STAGES) and shard_files(out)
    _whole_files(out)


def test_a_read_only_output_is_refused_at_the_first_write(small_disk):
    out = small_disk / "out"
    _remount(small_disk, "ro")
    with pytest.raises(OutputUnwritable, match="Read-only file system"), writer_lock(OutDir(out), "textbook run"):
        pass
    with pytest.raises(OutputUnwritable, match=f"cannot write {out}/config.yaml: Read-only file system"):
        RunFiles(OutDir(out)).start(CONFIG, resolve_inputs(PART2, CONFIG.input))
    _remount(small_disk, "rw")
    shutil.rmtree(out, ignore_errors=True)
