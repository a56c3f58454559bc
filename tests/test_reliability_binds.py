"""Every server the project starts listens on 127.0.0.1 unless the user asks otherwise, and then says so: the Prefect
server (`textbook server`), a local Dask cluster, the demo site; what each really listens on is read
from the operating system's socket table."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil

from configs import load_config
from configs.secrets import exposure_warning, is_loopback
from flows.runners import task_runner
from flows.server import healthy
from tests.demo_site import MediaServer


def _listening(process: psutil.Process) -> set[tuple[str, int]]:
    """(address, port) of every listening TCP socket of `process` and its children."""
    found = set()
    for member in [process, *process.children(recursive=True)]:
        with contextlib.suppress(psutil.Error):  # a child that just ended
            found |= {(c.laddr.ip, c.laddr.port) for c in member.net_connections("inet") if c.status == "LISTEN"}
    return found


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_textbook_server_listens_on_loopback_only(tmp_path: Path):
    port = _free_port()
    env = {**os.environ, "PREFECT_HOME": str(tmp_path)}
    env.pop("PREFECT_API_URL", None)
    command = [sys.executable, "-m", "flows.cli", "server", "--port", str(port)]
    server = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    try:
        deadline = time.monotonic() + 180
        while not healthy(f"http://127.0.0.1:{port}/api") and time.monotonic() < deadline:
            assert server.poll() is None, server.stderr.read().decode()[-2000:]
            time.sleep(0.5)
        listening = _listening(psutil.Process(server.pid))
        assert (("127.0.0.1", port)) in listening and all(is_loopback(address) for address, _ in listening)
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)
    assert b"warning" not in server.stderr.read()


def _first_warning(arguments: list[str], prefect_home: Path) -> str:
    """The first line a `textbook` command writes to stderr, the command killed once it has."""
    env = {**os.environ, "PREFECT_HOME": str(prefect_home)}
    command = [sys.executable, "-m", "flows.cli", *arguments]
    started = subprocess.Popen(command, env=env, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL,
                               start_new_session=True)  # fmt: skip
    try:
        return started.stderr.readline().decode()
    finally:
        os.killpg(started.pid, signal.SIGKILL)
        started.wait()


def test_asked_to_listen_on_every_interface_the_server_says_so(tmp_path: Path):
    line = _first_warning(["server", "--host", "0.0.0.0", "--port", str(_free_port())], tmp_path)
    assert line.startswith("warning: the Prefect server") and "0.0.0.0" in line and "other machines" in line


def test_a_local_dask_cluster_listens_on_loopback_only():
    from distributed import LocalCluster

    config = load_config(None).run.model_copy(update={"runner": "dask", "workers": 1})
    cluster = LocalCluster(**task_runner(config).cluster_kwargs)
    try:
        listening = _listening(psutil.Process())
        assert cluster.scheduler_address.startswith("tcp://127.0.0.1:")
        assert listening and all(is_loopback(address) for address, _ in listening)
    finally:
        cluster.close()


def test_the_demo_site_and_the_exposure_rule():
    with MediaServer(Path(__file__).parent / "data") as site:
        assert site.httpd.server_address[0] == "127.0.0.1"
    assert [exposure_warning("x", host) is None for host in ("127.0.0.1", "::1", "localhost", "127.0.0.2")] == [
        True
    ] * 4
    assert all(exposure_warning("x", host) for host in ("0.0.0.0", "::", "192.0.2.2", "gpu-node-1"))


def test_serving_deployments_without_allowed_roots_says_what_they_may_read(tmp_path: Path):
    line = _first_warning(["serve", "--out", str(tmp_path / "out")], tmp_path / "prefect")
    assert line.startswith("warning: input.allowed_roots is empty")
