"""Training as a stage of the engine and as the `train` flow: one run per shard set and config, a finished run is
skipped, a killed one resumes from its checkpoint, a newly published set is a new run; `textbook train` through
Prefect's ephemeral API leaves the metrics, the loss curve and a model `from_pretrained` loads."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

from transformers import LlavaForConditionalGeneration

from configs import CONFIG_DIR
from configs.train import load_train_job, parse_train_job
from flows.train import train_deployment
from pipeline.engine.engine import Engine
from pipeline.engine.local import run_stages
from storage.outdir import OutDir
from storage.shards import Topic, publish_shards, read_index
from tests.test_train_run import keyframe_shards  # noqa: F401 (the fixture)
from tests.test_train_stream import numbered_rows
from train import checkpoint
from train.stage import RUNS_DIR, TRAIN_STAGE, train_dag

CONFIG = CONFIG_DIR / "train-tiny.yaml"
QUICK = {"run.max_steps": 2, "run.checkpoint_every": 1, "run.save_model": False, "data.num_workers": 0}


def _publish(data: Path, version: int) -> str:
    """Two topics of 4 numbered samples; `version` changes the second one, so each version is a new set."""
    rows = numbered_rows(8 + version)
    topics = [
        Topic("a", "a-1", lambda: iter(rows[:4]), lambda: 1),
        Topic("b", f"b-{version}", lambda: iter(rows[4:]), lambda: 1),
    ]
    publish_shards(OutDir(data), topics, target_bytes=1, keep_superseded_sets=2)
    return read_index(OutDir(data))["set"]


def _engine(run: Path, data: Path, resume: bool = False, **changes) -> Engine:
    job = load_train_job(CONFIG, {**QUICK, **changes})
    return Engine(OutDir(run), job, train_dag(str(data / "shards"), resume))


def _status(engine: Engine) -> list[str]:
    (report,) = run_stages(engine, [TRAIN_STAGE])
    return [result.status for result in report.results]


def test_one_run_per_shard_set_a_finished_run_is_skipped_and_a_new_set_is_a_new_run(tmp_path):
    data, run = tmp_path / "data", tmp_path / "run"
    first_set = _publish(data, 1)
    engine = _engine(run, data)
    (unit,) = engine.units(TRAIN_STAGE)
    assert unit.startswith(first_set) and _status(engine) == ["done"]
    row = engine.table((TRAIN_STAGE, unit)).to_pylist()[0]
    assert row["shard_set"] == first_set and row["steps"] == 2 and row["samples_in_shards"] == 9
    assert (run / RUNS_DIR / unit / "metrics.json").is_file() and (run / RUNS_DIR / unit / "loss.png").is_file()
    assert _status(_engine(run, data)) == ["skipped"]
    assert list(_engine(run, data, **{"optim.lr": 1e-3}).units(TRAIN_STAGE)) != [unit]  # a changed config: a new run

    second_set = _publish(data, 2)
    engine = _engine(run, data)
    (new_unit,) = engine.units(TRAIN_STAGE)
    assert new_unit.startswith(second_set) and new_unit != unit
    assert list(_engine(run, data, resume=True).units(TRAIN_STAGE)) == [unit]  # --resume: the run's pinned set
    assert _status(_engine(run, data, resume=True)) == ["skipped"]


def test_a_killed_run_resumes_from_its_latest_checkpoint(tmp_path):
    """A run folder with step 1's checkpoint and no row (the process died after it): the rerun trains step 2 only."""
    data = tmp_path / "data"
    _publish(data, 1)
    whole = _engine(tmp_path / "whole", data)
    (unit,) = whole.units(TRAIN_STAGE)
    _status(whole)
    killed = tmp_path / "killed"
    folder = checkpoint.checkpoint_dir(killed / RUNS_DIR / unit, 1)
    shutil.copytree(checkpoint.checkpoint_dir(tmp_path / "whole" / RUNS_DIR / unit, 1), folder)
    engine = _engine(killed, data)
    assert _status(engine) == ["done"]
    row = engine.table((TRAIN_STAGE, unit)).to_pylist()[0]
    assert row["resumed_from"] == str(folder) and row["steps"] == 2
    losses = [json.loads((base / RUNS_DIR / unit / "metrics.json").read_text())["history"][1]["loss"]
              for base in (tmp_path / "whole", killed)]  # fmt: skip
    assert abs(losses[0] - losses[1]) < 1e-5


def test_textbook_train_through_prefect_writes_metrics_loss_curve_and_model(keyframe_shards, tmp_path):  # noqa: F811
    env = {**os.environ, "PREFECT_HOME": str(tmp_path / "prefect"), "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    env.pop("PREFECT_API_URL", None)
    command = [sys.executable, "-m", "flows.cli", "train", "--config", str(CONFIG), "--shards", keyframe_shards,
               "--out", str(tmp_path / "run"), "--set", "run.max_steps=4"]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300, check=False)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    (run,) = summary["runs"]
    assert run["current"] and run["row"]["steps"] == 4 and summary["stages"][TRAIN_STAGE]["done"] == 1
    metrics = json.loads(Path(run["metrics"]).read_text())
    assert len(metrics["history"]) == 4 and Path(run["loss_curve"]).stat().st_size > 10_000
    model = LlavaForConditionalGeneration.from_pretrained(run["row"]["model"])
    assert model.config.image_token_id is not None
    assert "loss.png" in done.stdout
    with sqlite3.connect(tmp_path / "prefect" / "prefect.db") as db:  # what the ephemeral API kept (links as markdown)
        artifacts = {key: json.loads(data) for key, data in db.execute("SELECT key, data FROM artifact")}
    assert set(artifacts) == {"train-metrics", "train-loss-curve"}
    assert "| final_loss |" in artifacts["train-metrics"]
    assert Path(run["loss_curve"]).resolve().as_uri() in artifacts["train-loss-curve"]


def test_serve_registers_a_train_deployment_with_the_job(tmp_path):
    job = load_train_job(CONFIG, dict(QUICK))
    deployment = train_deployment(str(tmp_path / "train"), str(tmp_path / "shards"), job)
    assert (deployment.flow_name, deployment.name) == ("train", "train")
    assert parse_train_job(deployment.parameters["config"]) == job
    assert deployment.parameters["shards"] == str(tmp_path / "shards")
