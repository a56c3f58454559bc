"""The `train` flow: the training run of the current shard set a Prefect task (the same `unit_task` the data
pipeline's stages run as), its metrics and loss curve as artifacts, and its deployment.

One process trains here; several processes on one or more machines stay `torchrun --nproc-per-node N -m train`.
"""

from __future__ import annotations

from typing import Any

from prefect import flow
from prefect.artifacts import create_link_artifact, create_markdown_artifact
from prefect.deployments.runner import RunnerDeployment

from configs.train import TrainJobConfig, parse_train_job
from flows.process import run_stages, start_flow
from flows.runners import apply_concurrency_limits
from pipeline.engine.engine import Engine
from pipeline.metrics.report import report_url
from storage.outdir import OutDir
from train.report import LOSS_PLOT
from train.stage import RUNS_DIR, TRAIN_STAGE, summarize, train_dag

FIGURES = ("steps", "planned_steps", "first_loss", "final_loss", "tokens", "images", "tokens_per_s", "images_per_s",
           "mfu", "world_size", "device", "resumed_from", "model")  # fmt: skip


def train_engine(out: str, shards: str, job: TrainJobConfig, resume: bool) -> Engine:
    return Engine(OutDir(out), job, train_dag(shards, resume))


def metrics_markdown(run: dict[str, Any]) -> str:
    """One run's figures as a markdown table, for the Prefect UI."""
    row = run["row"]
    lines = [f"**training run {run['unit']}** on shard set {run['shard_set']}", "", "| figure | value |", "|---|---|"]
    for name in FIGURES:
        value = row[name]
        shown = "unmeasured (no GPU peak known)" if name == "mfu" and value is None else value
        lines.append(f"| {name} | {f'{shown:.4g}' if isinstance(shown, float) else shown} |")
    return "\n".join(lines)


@flow(name="train", log_prints=True)
def train_flow(out: str, shards: str, config: dict[str, Any], resume: bool = False) -> dict[str, Any]:
    """Train on the shard set current in `shards` (with `resume`: the set OUT's latest run of this config pinned)
    into OUT/runs/<run>/; returns the summary."""
    job = parse_train_job(config)
    engine = train_engine(out, shards, job, resume)
    apply_concurrency_limits(job.run.concurrency_limits)
    summary = summarize(engine, run_stages(engine, [TRAIN_STAGE], force=False))
    for run in summary["runs"]:
        if run["current"]:
            create_markdown_artifact(key="train-metrics", markdown=metrics_markdown(run), description=out)
            link = report_url(engine.out, f"{RUNS_DIR}/{run['unit']}/{LOSS_PLOT}")
            create_link_artifact(key="train-loss-curve", link=link, link_text=LOSS_PLOT, description=run["unit"])
    return summary


def run_train(out: str, shards: str, job: TrainJobConfig, resume: bool = False) -> dict[str, Any]:
    """Run `train_flow` with the job's task runner. When the run of the current set is finished, Prefect is not
    started: the summary is written again from its row."""
    engine = train_engine(out, shards, job, resume)
    if engine.up_to_date([TRAIN_STAGE]):
        print("the training run of this shard set and config is finished: nothing to run")
        return summarize(engine, [])
    return start_flow(train_flow, job.run, out=out, shards=shards, config=job.model_dump(mode="json"), resume=resume)


def train_deployment(out: str, shards: str, job: TrainJobConfig) -> RunnerDeployment:
    """The `train` deployment `textbook serve` registers: run when triggered (a newly published set trains anew, a
    finished run is skipped)."""
    return train_flow.to_deployment(
        name="train",
        parameters={"out": out, "shards": shards, "config": job.model_dump(mode="json")},
        description="train on the current shard set; a new set or config is a new run, a finished one is skipped",
    )
