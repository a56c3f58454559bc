"""The `eval` flow: each benchmark x shot count of the eval DAG a Prefect task (the same `unit_task` the data
pipeline's stages run as), then the paper's table and the accuracy plot as artifacts, and its deployment."""

from __future__ import annotations

from typing import Any

from prefect import flow
from prefect.artifacts import create_link_artifact, create_markdown_artifact
from prefect.deployments.runner import RunnerDeployment

from configs.eval import EvalConfig, parse_eval_config
from eval.dag import EVAL_STAGE, eval_dag, summarize
from eval.run import PLOT_FILE
from flows.process import run_stages, start_flow
from flows.runners import apply_concurrency_limits
from pipeline.engine.engine import Engine
from pipeline.metrics.report import report_url
from storage.outdir import OutDir

EVAL_DEPLOYMENT = "eval/eval"


def eval_engine(
    model: str, out: str, config: EvalConfig, benchmarks: list[str] | None, shots: list[int] | None
) -> Engine:
    return Engine(OutDir(out), config, eval_dag(config, model, benchmarks, shots))


@flow(name="eval", log_prints=True)
def eval_flow(
    model: str,
    out: str,
    config: dict[str, Any],
    benchmarks: list[str] | None = None,
    shots: list[int] | None = None,
    force: bool = False,
) -> dict[str, Any]:
    """Evaluate `model` on `benchmarks` x `shots` (defaults: the config's) into OUT; returns the summary."""
    eval_config = parse_eval_config(config)
    engine = eval_engine(model, out, eval_config, benchmarks, shots)
    apply_concurrency_limits(eval_config.run.concurrency_limits)
    summary = summarize(engine, model, run_stages(engine, [EVAL_STAGE], force))
    table = engine.out.read_bytes(summary["table"]).decode()
    missing = "".join(f"\n- not scored: {cell}" for cell in summary["missing"])
    create_markdown_artifact(key="eval-results", markdown=table + missing, description=f"evaluation of {model}")
    create_link_artifact(
        key="eval-accuracy-plot", link=report_url(engine.out, PLOT_FILE), link_text=PLOT_FILE, description=out
    )
    return summary


def run_eval(
    model: str,
    out: str,
    config: EvalConfig,
    benchmarks: list[str] | None = None,
    shots: list[int] | None = None,
    force: bool = False,
) -> dict[str, Any]:
    """Run `eval_flow` with the config's task runner. When every cell is current, Prefect is not started: the
    table is written again from the cells' results."""
    engine = eval_engine(model, out, config, benchmarks, shots)
    if not force and engine.up_to_date([EVAL_STAGE]):
        print("every cell is up to date: nothing to run")
        return summarize(engine, model, [])
    parameters = {"benchmarks": benchmarks, "shots": shots, "force": force}
    return start_flow(eval_flow, config.run, model=model, out=out, config=config.model_dump(mode="json"), **parameters)


def eval_deployment(out: str, config: EvalConfig, model: str | None) -> RunnerDeployment:
    """The `eval` deployment `textbook serve` registers: run when triggered (a retrained checkpoint), with the
    served config; a model not given here is asked for by the trigger."""
    parameters = {"out": out, "config": config.model_dump(mode="json")} | ({"model": model} if model else {})
    return eval_flow.to_deployment(
        name="eval", parameters=parameters, description="few-shot evaluation of a checkpoint; only changed cells rerun"
    )
