"""A real Prefect server on 127.0.0.1, a served deployment with a schedule, and a triggered run on the sample."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import yaml

from tests.conftest import PART2, shard_files
from tests.test_report import browse

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(1)
    raise AssertionError(f"timed out waiting for {what}")


def _post(api: str, path: str, body: dict | None = None) -> list[dict]:
    response = httpx.post(f"{api}{path}", json=body or {}, timeout=10)
    response.raise_for_status()
    return response.json()


def test_served_deployment_is_scheduled_and_a_triggered_run_completes(tmp_path: Path):
    port = _free_port()
    api = f"http://127.0.0.1:{port}/api"
    env = {**os.environ, "PREFECT_HOME": str(tmp_path / "home"), "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
           "PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS": "2"}  # fmt: skip
    env.pop("PREFECT_API_URL", None)
    config = tmp_path / "served.yaml"
    config.write_text(yaml.safe_dump({"schedules": {"textbook": "0 3 * * *"}, "run": {"progress": False}}))
    textbook = [sys.executable, "-m", "flows.cli"]
    server = subprocess.Popen([*textbook, "server", "--port", str(port)], env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, start_new_session=True)  # fmt: skip
    served = None
    try:
        _wait(lambda: _healthy(api), 120, "the Prefect server")
        out = tmp_path / "out"
        served = subprocess.Popen([*textbook, "serve", "--config", str(config), "--out", str(out), "--input",
                                   str(PART2)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                  start_new_session=True)  # fmt: skip
        deployments = _wait(lambda: len(found := _post(api, "/deployments/filter")) >= 2 and found,
                            120, "the deployments")  # fmt: skip
        by_name = {d["name"]: d for d in deployments}
        assert {"textbook", "process"} <= set(by_name)
        assert by_name["textbook"]["schedules"][0]["schedule"]["cron"] == "0 3 * * *"
        scheduled = _wait(
            lambda: _post(api, "/flow_runs/filter", {"flow_runs": {"state": {"type": {"any_": ["SCHEDULED"]}}}}),
            120,
            "scheduled runs",
        )
        assert all(run["deployment_id"] == by_name["textbook"]["id"] for run in scheduled)

        trigger = subprocess.run([*textbook, "trigger", "textbook"], env=env, capture_output=True, text=True,
                                 timeout=120, check=True)  # fmt: skip
        run_id = trigger.stdout.split("started flow run ")[1].split()[0]
        state = _wait(lambda: _final_state(api, run_id), 400, "the triggered run")
        assert state == "COMPLETED"
        task_names = {task["name"] for task in _post(api, "/task_runs/filter")}
        assert {"download..interleave-lecture_part2", "pack-lecture_part2", "shards-all"} <= task_names, task_names
        artifacts = _post(api, "/artifacts/filter", {"artifacts": {"key": {"any_": ["run-summary"]}}})
        assert artifacts and "| asr |" in artifacts[0]["data"]
        assert shard_files(out)

        # The UI, served on this non-default port, talks to its own API and lists the run.
        name = httpx.get(f"{api}/flow_runs/{run_id}", timeout=10).json()["name"]
        page = f"http://127.0.0.1:{port}/runs/flow-run/{run_id}"
        dom = browse(page, tmp_path / "profile", "--virtual-time-budget=30000", "--dump-dom").stdout
        assert "Can't connect to Server API" not in dom and name in dom, dom[-2000:]

        rerun = subprocess.run([*textbook, "stage", "asr", "--out", str(out), "--deployment"], env=env,
                               capture_output=True, text=True, timeout=120, check=True)  # fmt: skip
        rerun_id = rerun.stdout.split("started flow run ")[1].split()[0]
        assert _wait(lambda: _final_state(api, rerun_id), 300, "the stage rerun") == "COMPLETED"
        rerun_tasks = _post(api, "/task_runs/filter", {"flow_runs": {"id": {"any_": [rerun_id]}}})
        assert [(task["name"], task["state"]["name"]) for task in rerun_tasks] == [("asr-lecture_part2", "Skipped")]
    finally:
        for process in (served, server):
            if process is not None:
                os.killpg(process.pid, signal.SIGTERM)
                process.wait(timeout=60)


def _healthy(api: str) -> bool:
    try:
        return httpx.get(f"{api}/health", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def _final_state(api: str, run_id: str) -> str | None:
    state = httpx.get(f"{api}/flow_runs/{run_id}", timeout=10).json()["state"]["type"]
    return state if state in {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"} else None
