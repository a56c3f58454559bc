"""Evaluation as a stage of the engine and as the `eval` flow: a unit per benchmark x shot count, skipped when
current, rerun when the checkpoint's content or a setting it depends on changes; `textbook eval` through Prefect's
ephemeral API writes the table, the plot and the artifacts."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from safetensors.torch import load_file, save_file

from configs.eval import load_eval_config
from eval.dag import EVAL_STAGE, eval_dag, files_fingerprint, summarize
from flows.eval import eval_deployment
from pipeline.engine.engine import Engine
from pipeline.engine.local import run_stages
from storage import schemas
from storage.outdir import OutDir
from tests.test_eval_run import fixture_config

BENCHMARKS = ["okvqa", "scienceqa"]
SHOTS = [0, 2]
SCIENCEQA = ["scienceqa-0", "scienceqa-2"]
CELLS = {"okvqa-0", "okvqa-2", *SCIENCEQA}


def _engine(config, model: Path, out: Path) -> Engine:
    return Engine(OutDir(out), config, eval_dag(config, str(model), BENCHMARKS, SHOTS))


def _statuses(engine: Engine) -> dict[str, str]:
    return {result.unit: result.status for report in run_stages(engine, [EVAL_STAGE]) for result in report.results}


def _retrain(checkpoint: Path) -> None:
    """New weights under the same names and shapes, as a training run writing into the same folder leaves."""
    weights = checkpoint / "model.safetensors"
    tensors = load_file(weights)
    name = next(name for name in sorted(tensors) if tensors[name].is_floating_point())
    tensors[name] = tensors[name] + 0.5
    save_file(tensors, weights, metadata={"format": "pt"})


def test_the_eval_dag_plans_one_batch_unit_per_benchmark_and_shot_count(tiny_llava: Path, tmp_path: Path) -> None:
    config = fixture_config(tmp_path)
    engine = _engine(config, tiny_llava, tmp_path / "out")
    units = engine.units(EVAL_STAGE)
    assert set(units) == CELLS and engine.dag[EVAL_STAGE].unit_kind == "batch"
    assert units["okvqa-2"].payload == ("okvqa", 2)
    # the checkpoint and the benchmark files are known by their content, wherever they lie
    copy = shutil.copytree(tiny_llava, tmp_path / "copy")
    assert units["okvqa-0"].external["model"]["files"] == files_fingerprint(str(copy)) is not None
    assert set(units["okvqa-0"].external["data"]) == {"okvqa_val"}  # no support set at 0 shots
    assert set(units["okvqa-2"].external["data"]) == {"okvqa_val", "okvqa_train"}
    assert all(units["okvqa-2"].external["data"].values())
    with pytest.raises(ValueError, match="unknown benchmark"):
        eval_dag(config, str(tiny_llava), ["vqav2"], SHOTS)


def test_a_rerun_skips_every_cell_and_a_retrained_checkpoint_reruns_them(tiny_llava: Path, tmp_path: Path) -> None:
    config = fixture_config(tmp_path, limit=1)
    checkpoint, out = shutil.copytree(tiny_llava, tmp_path / "checkpoint"), tmp_path / "out"
    assert _statuses(_engine(config, checkpoint, out)) == dict.fromkeys(CELLS, "done")
    for cell in CELLS:
        table = pq.read_table(out / "stages" / "eval" / f"{cell}.parquet")
        assert table.schema.names == schemas.EVAL_CELL.names and table.num_rows == 1
    predictions = {p.name: p.read_text() for p in (out / "predictions").iterdir()}

    assert _statuses(_engine(config, checkpoint, out)) == dict.fromkeys(CELLS, "skipped")
    weights = checkpoint / "model.safetensors"
    os.utime(weights, ns=(weights.stat().st_atime_ns, weights.stat().st_mtime_ns + 10**9))
    assert _statuses(_engine(config, checkpoint, out)) == dict.fromkeys(CELLS, "skipped")  # same bytes
    assert {p.name: p.read_text() for p in (out / "predictions").iterdir()} == predictions

    _retrain(checkpoint)
    engine = _engine(config, checkpoint, out)
    assert _statuses(engine) == dict.fromkeys(CELLS, "done")
    assert all(engine.stamp((EVAL_STAGE, cell)).stats["counters"]["generated"] == 1 for cell in CELLS)

    changed = fixture_config(tmp_path, limit=1, benchmarks={"okvqa": {"query_template": "<image>\nQ: {question}"}})
    engine = _engine(changed, checkpoint, out)
    assert _statuses(engine) == {"okvqa-0": "done", "okvqa-2": "done"} | dict.fromkeys(SCIENCEQA, "skipped")
    summary = summarize(engine, str(checkpoint), [])
    assert summary["current"] and summary["missing"] == [] and set(summary["cells"]) == set(BENCHMARKS)
    assert "| Shots | OKVQA | ScienceQA-IMG | Avg. |" in (out / "results.md").read_text()


def _artifacts(home: Path) -> dict[str, str]:
    """The artifacts the run left in the ephemeral API's database, by key (a link is stored as markdown)."""
    with sqlite3.connect(home / "prefect.db") as db:
        return {key: json.loads(data) for key, data in db.execute("SELECT key, data FROM artifact")}


def test_textbook_eval_runs_the_cells_as_prefect_tasks_and_writes_the_table(tiny_llava: Path, tmp_path: Path) -> None:
    config = tmp_path / "eval.yaml"
    config.write_text(json.dumps(fixture_config(tmp_path, limit=1).model_dump(mode="json")))  # JSON is YAML
    out, home = tmp_path / "out", tmp_path / "prefect"
    env = {**os.environ, "PREFECT_HOME": str(home), "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    env.pop("PREFECT_API_URL", None)
    command = [sys.executable, "-m", "flows.cli", "eval", "--model", str(tiny_llava), "--benchmarks", "okvqa",
               "--shots", "0,2", "--out", str(out), "--config", str(config)]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    table = (out / "results.md").read_text()
    assert table in result.stdout and "\n| 0 | " in table and "\n| 2 | " in table
    assert (out / "accuracy_by_shots.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    summary = json.loads((out / "summary.json").read_text())
    assert summary["stages"][EVAL_STAGE]["done"] == 2 and summary["current"]
    assert {p.stem for p in (out / "stages" / "eval").iterdir()} == {"okvqa-0", "okvqa-2"}
    artifacts = _artifacts(home)
    assert set(artifacts) == {"eval-results", "eval-accuracy-plot"} and artifacts["eval-results"] == table
    assert (out / "accuracy_by_shots.png").resolve().as_uri() in artifacts["eval-accuracy-plot"]


def test_serve_registers_an_eval_deployment_with_the_eval_config(tmp_path: Path) -> None:
    config = load_eval_config(None)
    deployment = eval_deployment(str(tmp_path / "eval"), config, "checkpoints/final")
    assert (deployment.flow_name, deployment.name) == ("eval", "eval")
    assert deployment.parameters["config"] == config.model_dump(mode="json")
    assert deployment.parameters["model"] == "checkpoints/final"
