"""A training run SIGKILLed while it saves a checkpoint (model half written, state not yet written, complete but not
yet renamed, renamed but an old one half deleted) resumes from the last complete checkpoint, never a half-written
one, and its losses after that step are the uninterrupted run's. Each killed run is a forked child of this process
(torch on one thread: an OpenMP pool does not survive a fork)."""

from __future__ import annotations

import itertools
import json
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from configs import CONFIG_DIR
from configs.train import load_train_config
from tests.test_train_stream import numbered_rows, write_shard_set
from train import checkpoint
from train.run import SAMPLES_LOG, train

CONFIG = load_train_config(CONFIG_DIR / "train-tiny.yaml", {
    "run.max_steps": 4, "run.checkpoint_every": 1, "run.keep_checkpoints": 2, "run.save_model": False,
    "run.threads": 1, "data.num_workers": 0,
})  # fmt: skip
KILLED_AT = 3  # the save of step 3 is the one killed


def _die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def model_half_written() -> None:
    """The rank file (scheduler, RNG) gets half its bytes, then the process dies."""
    real = checkpoint.torch.save

    def save(obj, path, *args, **kwargs) -> None:
        if f"step-{KILLED_AT:08d}" in str(path):
            real(obj, path, *args, **kwargs)
            Path(path).write_bytes(Path(path).read_bytes()[: Path(path).stat().st_size // 2])
            _die()
        real(obj, path, *args, **kwargs)

    checkpoint.torch.save = save


def state_not_written() -> None:
    real = checkpoint._write_state

    def write(folder: Path, state: dict) -> None:
        if state["step"] == KILLED_AT:
            (folder / f"{checkpoint.STATE_FILE}.tmp").write_text(json.dumps(state)[:20])
            _die()
        real(folder, state)

    checkpoint._write_state = write


def syncs_then_dies(nth: int) -> Callable[[], None]:
    """Dies at the `nth` folder fsync of step KILLED_AT's save (a save syncs its folder, renames it, then syncs the
    checkpoints folder): 1 = complete but not renamed, 2 = renamed but older ones not pruned."""

    def arm() -> None:
        real, calls = checkpoint.fsync_path, itertools.count(1)

        def sync(folder: Path) -> None:
            real(folder)
            if next(calls) == 2 * (KILLED_AT - 1) + nth:
                _die()

        checkpoint.fsync_path = sync

    return arm


def old_one_half_deleted() -> None:
    """Dies after deleting one file of the checkpoint that step KILLED_AT's save prunes (step 1, keeping 2)."""
    real = checkpoint.shutil.rmtree

    def rmtree(folder, *args, **kwargs) -> None:
        if Path(folder).name == checkpoint.checkpoint_dir(Path(), 1).name + checkpoint.PARTIAL:
            next(p for p in sorted(Path(folder).rglob("*")) if p.is_file()).unlink()
            _die()
        real(folder, *args, **kwargs)

    checkpoint.shutil.rmtree = rmtree


def _killed_train(shards: str, run: Path, arm: Callable[[], None]) -> None:
    pid = os.fork()
    if pid == 0:
        try:
            arm()
            train(CONFIG, shards, run)
        finally:
            os._exit(0)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL, "the save was not killed"
            return
        time.sleep(0.02)
    os.kill(pid, signal.SIGKILL)
    raise AssertionError("the killed training run hung")


@pytest.fixture(scope="module")
def shards(tmp_path_factory: pytest.TempPathFactory) -> str:
    return write_shard_set(tmp_path_factory.mktemp("kill-train") / "shards", numbered_rows(8), 4, 4)


@pytest.fixture(scope="module")
def whole(shards: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The uninterrupted run."""
    torch.set_num_threads(1)
    run = tmp_path_factory.mktemp("whole") / "run"
    train(CONFIG, shards, run)
    return run


@pytest.mark.parametrize(
    ("arm", "resumes_at"),
    [
        (model_half_written, KILLED_AT - 1),
        (state_not_written, KILLED_AT - 1),
        (syncs_then_dies(1), KILLED_AT - 1),
        (syncs_then_dies(2), KILLED_AT),
        (old_one_half_deleted, KILLED_AT),
    ],
    ids=["model-half-written", "state-not-written", "complete-not-renamed", "renamed-not-pruned", "old-half-deleted"],
)
def test_a_run_killed_while_saving_resumes_from_the_last_complete_checkpoint(shards, whole, tmp_path, arm, resumes_at):
    reference = json.loads((whole / "metrics.json").read_text())["history"]
    run = tmp_path / "killed"
    _killed_train(shards, run, arm)
    with (run / SAMPLES_LOG).open("a") as log:  # the kill also cut the sample log's last line short
        log.write('{"step": 9, "sample')
    metrics = train(CONFIG, shards, run, resume=True)
    assert metrics["resumed_from"] == str(checkpoint.checkpoint_dir(run, resumes_at))
    again = metrics["history"]
    assert [entry["step"] for entry in again] == [entry["step"] for entry in reference]
    assert (
        max(abs(a["loss"] - b["loss"]) for a, b in zip(again[resumes_at:], reference[resumes_at:], strict=True)) < 1e-5
    )
    assert (run / SAMPLES_LOG).read_text() == (whole / SAMPLES_LOG).read_text()
    assert not list((run / checkpoint.CHECKPOINTS).glob(f"*{checkpoint.PARTIAL}"))
