"""`textbook` through Prefect's ephemeral API: few runs, each with its own PREFECT_HOME."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from pipeline.dag import DAG
from storage.shards import read_index
from tests.conftest import DATA, shard_files

pytestmark = pytest.mark.slow


def textbook(*args: str, home: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PREFECT_HOME": str(home), "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    env.pop("PREFECT_API_URL", None)
    command = [sys.executable, "-m", "flows.cli", *args]
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=600, check=False)


def stage_rows(out: Path) -> dict[str, dict]:
    return json.loads((out / "summary.json").read_text())["stages"]


def shard_bytes(out: Path) -> list[bytes]:
    index = json.loads((out / "shards" / "index.json").read_text())
    return [(out / "shards" / entry["file"]).read_bytes() for entry in index["shards"]]


def test_run_skip_force_and_determinism(tmp_path: Path, processed):
    out, home = tmp_path / "out", tmp_path / "prefect"
    first = textbook("run", "--config", "configs/default.yaml", "--input", str(DATA), "--out", str(out), home=home)
    assert first.returncode == 0, first.stderr[-3000:]
    assert "shards:" in first.stdout and str(out) in first.stdout
    for name in ("summary.json", "failures.parquet", "config.yaml", "manifest.json", "inputs.parquet"):
        assert (out / name).is_file(), name
    assert not list(out.rglob("*.partial"))
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["packages"]["faster-whisper"] and any(
        f.endswith("model.bin") for f in manifest["models"]["asr"]["files"]
    )
    assert all(row["done"] >= 1 and row["failed"] == 0 for row in stage_rows(out).values())

    # Same input and config, computed twice (here through Prefect, in the fixture directly): same bytes.
    workspace, _ = processed
    direct = [
        workspace.out.read_bytes(workspace.out.path("shards", e["file"])) for e in read_index(workspace.out)["shards"]
    ]
    assert shard_bytes(out) == direct

    started = time.perf_counter()
    second = textbook("run", "--input", str(DATA), "--out", str(out), home=home)
    assert second.returncode == 0 and "nothing to run" in second.stdout
    assert time.perf_counter() - started < 15

    forced = textbook("stage", "keyframes", "--force", "--out", str(out), home=home)
    assert forced.returncode == 0, forced.stderr[-3000:]
    assert stage_rows(out) == {"keyframes": stage_rows(out)["keyframes"]}
    assert stage_rows(out)["keyframes"]["done"] == 2

    third = textbook("run", "--input", str(DATA), "--out", str(out), home=home)
    assert third.returncode == 0, third.stderr[-3000:]
    rows = stage_rows(out)
    # Every stage reading the forced keyframes reruns; their tables come out the same, so pack, named by interleave's
    # content, stays current; the shards copy the keyframes' bytes, so they are written again (the same bytes).
    per_video = set(DAG.downstream_of("keyframes")) - {"pack", "shards"}
    assert {name for name, row in rows.items() if row["done"]} == per_video | {"shards"}
    assert all(rows[name]["skipped"] == 2 for name in ("probe", "asr", "clips", "keyframes"))
    assert rows["pack"]["skipped"] == 1 and rows["shards"]["done"] == 1
    recomputed = pq.read_table(shard_files(out)[0]).to_pylist()
    assert recomputed == pq.read_table(shard_files(workspace.out)[0]).to_pylist()

    # A setting whose recompute fails everywhere: nothing is current under it, whatever the last run left.
    broken = tmp_path / "broken.yaml"
    broken.write_text(
        "clip_filter: {method: vlm}\nvlm: {openai: {base_url: 'http://127.0.0.1:9/v1'}}\n"
        "run: {tasks: {model: {retries: 0}}}\n"
    )
    failed = textbook("run", "--config", str(broken), "--input", str(DATA), "--out", str(out), home=home)
    assert failed.returncode == 1, failed.stdout[-3000:] + failed.stderr[-3000:]
    assert "shards: none produced" in failed.stdout and "failed x2: clip_filter" in failed.stdout
    assert not list((out / "shards").glob("*.parquet")) and list((out / "stale" / "shards").rglob("*.parquet"))


def test_bad_files_are_recorded_and_the_good_one_still_produces_shards(tmp_path: Path, mixed_folder: Path):
    out = tmp_path / "out"
    result = textbook("run", "--input", str(mixed_folder), "--out", str(out), home=tmp_path / "prefect")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "ignored (not a video)" in result.stdout and "notes.txt" in result.stdout
    failures = {row["video_id"]: row for row in pq.read_table(out / "failures.parquet").to_pylist()}
    assert set(failures) == {"corrupt", "empty", "noaudio"}
    assert failures["empty"]["message"] == "empty file (0 bytes)"
    assert failures["noaudio"]["message"] == "no audio stream"
    assert failures["corrupt"]["message"].startswith("unreadable media")
    assert all(row["stage"] == "probe" and row["error_type"] == "MediaError" for row in failures.values())
    summary = json.loads((out / "summary.json").read_text())
    assert summary["videos"] == {"in": 4, "failed": 3, "dropped": {}} and summary["samples"] >= 1
    assert summary["failures"]["by_reason"]["probe: no audio stream"] == 1
    assert pq.read_table(shard_files(out)[0]).num_rows >= 1


def test_nothing_produced_exits_non_zero(tmp_path: Path, bad_videos: dict[str, Path]):
    folder = tmp_path / "bad"
    folder.mkdir()
    for path in bad_videos.values():
        (folder / path.name).write_bytes(path.read_bytes())
    result = textbook("run", "--input", str(folder), "--out", str(tmp_path / "out"), home=tmp_path / "prefect")
    assert result.returncode == 1
    assert "shards: none produced" in result.stdout


def test_config_error_is_one_line(tmp_path: Path):
    config = tmp_path / "bad.yaml"
    config.write_text("keyframes:\n  thresold: 1\n")
    result = textbook(
        "run", "--config", str(config), "--input", str(DATA), "--out", str(tmp_path / "o"), home=tmp_path / "prefect"
    )
    assert result.returncode == 2
    assert result.stderr.strip() == "textbook: error: unknown config key 'keyframes.thresold'"
