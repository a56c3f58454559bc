"""Task policies through Prefect for real: a video goes through its per-video stages as one task run, without
waiting for the other videos; a transient failure (HTTP 429) is retried with the network kind's retries inside
that task, then recorded; a 404 is recorded at once; tasks carry their stages' tags and the configured tag limits
exist on the API; a rerun shows a video's finished stages as a Skipped task run, as the UI does."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from configs import parse_config
from flows.runners import task_options
from tests.conftest import PART2

pytestmark = pytest.mark.slow

FLOW_AND_API = """
import json, sys
import yaml
from prefect import get_client
from prefect.client.schemas.sorting import TaskRunSort
from configs import parse_config
from flows.process import process
from pipeline.engine.run_files import RunFiles
from pipeline.inputs import resolve_inputs

out, manifest, config_path = sys.argv[1:]
config = parse_config(yaml.safe_load(open(config_path)))
RunFiles.open(out).start(config, resolve_inputs(manifest, config.input))
summaries = [process(out, config, ["download", "probe"]) for _ in range(2)]
with get_client(sync_client=True) as client:
    runs = client.read_task_runs(limit=100, sort=TaskRunSort.ID_DESC)
    limits = client.read_concurrency_limits(limit=10, offset=0)
print(json.dumps({
    "summaries": summaries,
    "runs": [{"name": r.name, "state": r.state.name, "run_count": r.run_count, "tags": r.tags,
              "end": r.end_time.timestamp()} for r in runs],
    "limits": {limit.tag: limit.concurrency_limit for limit in limits},
}))
"""


def test_transient_failures_retry_and_reruns_show_skipped(tmp_path: Path, media_server):
    manifest = tmp_path / "urls.txt"
    manifest.write_text(f"{media_server.url}/busy.mp4\n{PART2}\n{media_server.url}/missing.mp4\n")
    config = {
        "run": {"progress": False, "concurrency_limits": {"network": 2},
                "tasks": {"network": {"retries": 1, "retry_delay_seconds": 8, "timeout_seconds": 120}}},
        "download": {"attempts": 1, "backoff_seconds": 0},
    }  # fmt: skip
    config_path = tmp_path / "config.yaml"
    config_path.write_text(yaml.safe_dump(config))
    env = {**os.environ, "PREFECT_HOME": str(tmp_path / "prefect"), "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    env.pop("PREFECT_API_URL", None)
    command = [sys.executable, "-c", FLOW_AND_API, str(tmp_path / "out"), str(manifest), str(config_path)]
    completed = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300, check=False)
    assert completed.returncode == 0, completed.stderr[-3000:]
    report = json.loads(completed.stdout.strip().splitlines()[-1])

    assert media_server.hits["/busy.mp4"] == 4, "a try and its one retry per run"
    assert media_server.hits["/missing.mp4"] == 2, "a 404 cannot pass: one try per run, no retry"
    first, second = report["summaries"]
    assert first["stages"]["download"]["failed"] == 2 and first["stages"]["download"]["done"] == 1
    assert first["failures"]["by_reason"] == {"download: HTTP 429 (rate limited) after 1 attempts": 1,
                                              "download: HTTP 404 (not found)": 1}  # fmt: skip
    assert second["stages"]["download"]["skipped"] == 1 and second["stages"]["probe"]["skipped"] == 1

    assert first["stages"]["probe"]["blocked"] == 2 and first["stages"]["probe"]["done"] == 1

    runs = report["runs"]  # newest first
    busy = [run for run in runs if run["name"] == "download..probe-busy"]
    assert len(busy) == 2 and all(run["state"] == "Failed" and run["run_count"] == 1 for run in busy)
    assert all(set(run["tags"]) == {"network", "stage:download", "compute", "stage:probe"} for run in busy)
    missing = [run for run in runs if run["name"] == "download..probe-missing"]
    assert len(missing) == 2 and all(run["state"] == "Failed" and run["run_count"] == 1 for run in missing)
    local = [run for run in runs if run["name"] == "download..probe-lecture_part2"]
    assert [run["state"] for run in local] == ["Skipped", "Completed"]
    # the wait outlasts the SQLite server's stalls: it refuses a concurrency lease now and then (HTTP 503, "database
    # is locked") and Prefect's client asks again 2 s later, then 4 s: with a 1.5 s wait, CI saw the local video end
    # 4.4 s after the busy one
    assert local[1]["end"] < busy[1]["end"], "the local video was probed while the busy one waited to retry"
    assert report["limits"] == {"network": 2}


def test_gpu_stages_are_tagged_by_where_their_model_runs():
    cpu = parse_config({})
    gpu = parse_config({"asr": {"device": "cuda"}, "llm": {"backend": "vllm"}})
    assert task_options("asr", "model", ("asr",), cpu)["tags"] == ["stage:asr", "model"]
    assert task_options("asr", "model", ("asr",), gpu)["tags"] == ["stage:asr", "model", "gpu"]
    assert "gpu" in task_options("refine", "model", ("refine", "llm"), gpu)["tags"]
    options = task_options("download", "network", ("download",), cpu)
    assert options["retries"] == 2 and options["retry_delay_seconds"] == [30.0, 60.0]
