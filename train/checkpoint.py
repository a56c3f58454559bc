"""Checkpoints a run resumes from: model and optimizer (torch.distributed.checkpoint: each FSDP rank writes only its
own shards), the scheduler, every rank's RNG states, and
the run state (step, data positions, history).

A checkpoint is written under `step-N.partial/` and renamed to `step-N/` once every rank has written and synced its
files, with `state.json` last, then the folder holding it is fsynced: a killed save leaves only a `.partial` folder,
which is never read and is removed by the next save. An old checkpoint is renamed to `.partial` before it is deleted,
so a kill mid-delete leaves no half checkpoint under a complete name either.
"""

from __future__ import annotations

import json
import os
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

from storage.outdir import fsync_path
from train.distributed import Processes, barrier

CHECKPOINTS = "checkpoints"
STATE_FILE = "state.json"
PARTIAL = ".partial"


def checkpoint_dir(run: Path, step: int) -> Path:
    return run / CHECKPOINTS / f"step-{step:08d}"


def latest(run: Path) -> Path | None:
    folder = run / CHECKPOINTS
    if not folder.is_dir():
        return None
    complete = [
        p for p in folder.iterdir() if p.is_dir() and not p.name.endswith(PARTIAL) and (p / STATE_FILE).is_file()
    ]
    return max(complete, key=lambda p: p.name, default=None)


def _rng_state() -> dict[str, Any]:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


def _fsync_tree(folder: Path) -> None:
    for file in folder.rglob("*"):
        if file.is_file():
            with file.open("rb") as handle:
                os.fsync(handle.fileno())


def _write_state(folder: Path, state: dict[str, Any]) -> None:
    temporary = folder / f"{STATE_FILE}.tmp"
    with temporary.open("w") as handle:
        json.dump(state, handle)
        handle.flush()
        os.fsync(handle.fileno())
    temporary.rename(folder / STATE_FILE)


def save(
    run: Path,
    step: int,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    state: dict[str, Any],
    processes: Processes,
    keep: int,
) -> Path:
    final = checkpoint_dir(run, step)
    partial = final.with_name(final.name + PARTIAL)
    if processes.main:
        for stale in final.parent.glob(f"*{PARTIAL}"):
            shutil.rmtree(stale)
        partial.mkdir(parents=True)
    barrier(processes)
    model_state, optimizer_state = get_state_dict(model, optimizer)
    dcp.save(
        {"model": model_state, "optimizer": optimizer_state},
        checkpoint_id=str(partial),
        no_dist=not processes.distributed,
    )
    torch.save({"rng": _rng_state(), "scheduler": scheduler.state_dict()}, partial / f"rank-{processes.rank}.pt")
    _fsync_tree(partial)
    barrier(processes)
    if processes.main:
        _write_state(partial, state)
        fsync_path(partial)
        partial.rename(final)
        fsync_path(final.parent)
        older = sorted(p for p in final.parent.iterdir() if p.is_dir() and not p.name.endswith(PARTIAL))
        for old in older[:-keep]:  # renamed out of view first: a kill mid-delete leaves no half checkpoint behind
            doomed = old.rename(old.with_name(old.name + PARTIAL))
            shutil.rmtree(doomed)
    barrier(processes)
    return final


def load(
    folder: Path,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    processes: Processes,
) -> dict[str, Any]:
    """Restore everything saved in `folder` into the live objects; returns the run state."""
    model_state, optimizer_state = get_state_dict(model, optimizer)
    saved = {"model": model_state, "optimizer": optimizer_state}
    dcp.load(saved, checkpoint_id=str(folder), no_dist=not processes.distributed)
    set_state_dict(model, optimizer, model_state_dict=saved["model"], optim_state_dict=saved["optimizer"])
    local = torch.load(folder / f"rank-{processes.rank}.pt", weights_only=False)
    scheduler.load_state_dict(local["scheduler"])
    _set_rng_state(local["rng"])
    return json.loads((folder / STATE_FILE).read_text())
