"""One writer per output folder: a second `textbook run` refuses, naming the first; a stale lock is taken over."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from storage.lock import LOCK_FILE, OutputLocked, writer_lock
from storage.outdir import OutDir


def test_a_second_writer_refuses_naming_the_first(tmp_path: Path):
    out = tmp_path / "out"
    with writer_lock(OutDir(out), "textbook run"):
        holder = json.loads((out / LOCK_FILE).read_text())
        assert holder["pid"] == os.getpid() and holder["host"] == socket.gethostname()
        with pytest.raises(OutputLocked, match=f"pid {os.getpid()}"), writer_lock(OutDir(out), "textbook stage"):
            pass
        env = {**os.environ, "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
        second = subprocess.run([sys.executable, "-m", "flows.cli", "run", "--input", "tests/data", "--out", str(out)],
                                capture_output=True, text=True, env=env, timeout=120, check=False)  # fmt: skip
        assert second.returncode == 2, second.stderr[-2000:]
        assert f"pid {os.getpid()} on {socket.gethostname()}" in second.stderr
        assert not (out / "config.yaml").exists()  # it wrote nothing
    assert not (out / LOCK_FILE).exists()


def test_a_lock_left_by_a_dead_process_is_taken_over(tmp_path: Path):
    out = tmp_path / "out"
    out.mkdir()
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = {"pid": int(gone.stdout), "host": socket.gethostname(), "command": "textbook run", "since": 0}
    (out / LOCK_FILE).write_text(json.dumps(stale))
    with writer_lock(OutDir(out), "textbook run"):
        assert json.loads((out / LOCK_FILE).read_text())["pid"] == os.getpid()


def test_an_object_store_output_is_not_locked():
    with writer_lock(OutDir("memory://locked/out"), "textbook run"), writer_lock(OutDir("memory://locked/out"), "x"):
        pass
