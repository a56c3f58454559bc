"""The `textbook` flow (collect or read inputs, then process) and the deployments `textbook serve` registers.

The same flows run from the CLI, from a schedule, or from a trigger in the UI; a served deployment is also how
`textbook stage NAME --deployment` reruns one stage on a worker.
"""

from __future__ import annotations

from typing import Any

from prefect import flow, serve
from prefect.deployments import run_deployment

from configs import PipelineConfig, parse_config
from configs.eval import EvalConfig
from configs.instruct import InstructConfig
from configs.train import TrainJobConfig
from flows.collect import collect
from flows.process import process, process_flow
from pipeline.dag import PROCESS_STAGES
from pipeline.engine.run_files import RunFiles
from pipeline.inputs import InputError, ResolvedInputs, resolve_inputs

TEXTBOOK_DEPLOYMENT = "textbook/textbook"
PROCESS_DEPLOYMENT = "process/process"


def prepare_inputs(out: str, config: PipelineConfig, input_path: str | None, force: bool) -> ResolvedInputs:
    """The videos of a run: the given input, or what the collection front keeps from the config's subjects."""
    if input_path:
        return resolve_inputs(input_path, config.input)
    if config.taxonomy.subjects or config.taxonomy.file:
        return collect(out, config, force)
    raise InputError("give --input, or taxonomy.subjects (or taxonomy.file) in the config to collect videos")


@flow(name="textbook", log_prints=True)
def textbook_flow(out: str, config: dict[str, Any], input_path: str | None = None, force: bool = False) -> dict:
    """The whole data pipeline: collection (when no input is given) and processing, as subflows."""
    pipeline_config = parse_config(config)
    inputs = prepare_inputs(out, pipeline_config, input_path, force)
    if not inputs.videos:
        return {"samples": 0, "videos": {"in": 0, "failed": 0}}
    RunFiles.open(out).start(pipeline_config, inputs)
    return process(out, pipeline_config, list(PROCESS_STAGES), None, force)


def serve_deployments(
    out: str,
    config: PipelineConfig,
    input_path: str | None,
    eval_config: EvalConfig | None = None,
    eval_model: str | None = None,
    train_job: TrainJobConfig | None = None,
    instruct_config: InstructConfig | None = None,
) -> None:
    """Register the deployments with their schedules and run them from this process until stopped; with an eval
    config, the `eval` deployment too, writing under OUT/eval; with a training job, the `train` deployment, training
    on OUT/shards into OUT/train; with an instruct config, the `instruct` deployment, OUT/shards into OUT/instruct."""
    parameters = {"out": out, "config": config.model_dump(mode="json")}
    deployments = [
        textbook_flow.to_deployment(
            name="textbook",
            cron=config.schedules.textbook,
            parameters={**parameters, "input_path": input_path},
            description="collect (or read the input) and process into shards",
        ),
        process_flow.to_deployment(
            name="process",
            parameters={**parameters, "stages": list(PROCESS_STAGES)},
            description="process the videos already listed in OUT/inputs.parquet; pass `stages` to rerun some",
        ),
    ]
    if config.taxonomy.subjects or config.taxonomy.file:
        from flows.collect import collect_flow

        deployments.append(
            collect_flow.to_deployment(name="collect", cron=config.schedules.collect, parameters=parameters)
        )
    if eval_config is not None:
        from flows.eval import eval_deployment

        deployments.append(eval_deployment(f"{out.rstrip('/')}/eval", eval_config, eval_model))
    if train_job is not None:
        from flows.train import train_deployment

        deployments.append(train_deployment(f"{out.rstrip('/')}/train", f"{out.rstrip('/')}/shards", train_job))
    if instruct_config is not None:
        from flows.instruct import instruct_deployment

        root = out.rstrip("/")
        deployments.append(instruct_deployment(f"{root}/instruct", f"{root}/shards", instruct_config))
    serve(*deployments, print_starting_message=True)


def trigger(name: str, parameters: dict[str, Any] | None = None) -> str:
    """Start a run of a served deployment; returns the flow run id without waiting for it."""
    run = run_deployment(name=name, parameters=parameters or {}, timeout=0)
    return str(run.id)
