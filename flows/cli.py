"""The `textbook` command: run the DAG, rerun one stage, inspect and export shards, check the machine."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
# Prefect's ephemeral API gives up after 20 s; a loaded laptop (models loading beside it) can need more.
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")

from configs import ConfigError, PipelineConfig, load_config  # noqa: E402
from pipeline.dag import DAG, PROCESS_STAGES  # noqa: E402
from pipeline.inputs import InputError  # noqa: E402
from storage.lock import OutputLocked, writer_lock  # noqa: E402
from storage.outdir import OutDir, OutputUnwritable  # noqa: E402

WRITING_COMMANDS = {"run", "stage"}  # they write OUT: one at a time per folder (storage/lock.py)
EXIT_NOTHING_PRODUCED = 1
EXIT_USAGE = 2


def _fail(message: str, code: int = EXIT_USAGE) -> int:
    print(f"textbook: error: {message}", file=sys.stderr)
    return code


def print_summary(summary: dict[str, Any]) -> None:
    videos = summary["videos"]
    print(f"\nvideos: {videos['in']} in, {videos['failed']} failed, {sum(videos['dropped'].values())} dropped")
    for reason, count in summary["failures"]["by_reason"].items():
        print(f"  failed x{count}: {reason}")
    for reason, count in videos["dropped"].items():
        print(f"  dropped x{count}: {reason}")
    columns = f"{'done':>6}{'skipped':>9}{'dropped':>9}{'failed':>8}{'blocked':>9}"
    print(f"\n{'stage':<13}{columns}{'wall s':>9}{'video s/s':>11}")
    for stage, row in summary["stages"].items():
        rate = f"{row['media_seconds_per_second']:.1f}" if row["media_seconds_per_second"] else "-"
        print(
            f"{stage:<13}{row['done']:>6}{row['skipped']:>9}{row['dropped']:>9}{row['failed']:>8}{row['blocked']:>9}"
            f"{row['wall_seconds']:>9.1f}{rate:>11}"
        )
    totals = summary["totals"]
    print(
        f"\nclips: {totals.get('clips.clips', 0)}, keyframes: {totals.get('keyframes.keyframes', 0)}, "
        f"samples: {summary['samples']}, in {summary['seconds']:.1f} s"
    )
    if summary["shards"]:
        print(f"shards: {summary['out']}/shards/ ({', '.join(summary['shards'])})")
    else:
        print("shards: none produced")
    metrics = summary.get("metrics") or {}
    if "error" in metrics:
        print(f"metrics: not written ({metrics['error']})")
    elif metrics:
        print(
            f"InSI-SIM {metrics['insi_sim']} ({metrics['image_embedder']}), per sample {metrics['images_per_sample']} "
            f"images and {metrics['tokens_per_sample']} tokens: {summary['out']}/{metrics['file']}"
        )
        if metrics["report"]:
            print(f"report: {summary['out']}/{metrics['report']}")


def _process(out: str, config: PipelineConfig, stages: list[str], video_ids: list[str] | None, force: bool) -> int:
    from flows.process import process

    summary = process(out, config, stages, video_ids, force)
    print_summary(summary)
    if stages != list(PROCESS_STAGES):  # `textbook stage`: did the stage's units run; the next `run` does the rest
        return EXIT_NOTHING_PRODUCED if any(summary["stages"].get(name, {}).get("failed") for name in stages) else 0
    return 0 if summary["current"] and summary["samples"] else EXIT_NOTHING_PRODUCED


def cmd_run(args: argparse.Namespace) -> int:
    from flows.deploy import prepare_inputs
    from pipeline.engine.run_files import RunFiles

    config = load_config(args.config)
    if args.runner:
        config = config.model_copy(update={"run": config.run.model_copy(update={"runner": args.runner})})
    inputs = prepare_inputs(args.out, config, args.input, args.force)
    if not inputs.videos:
        print("collection kept no video: nothing to process")
        return EXIT_NOTHING_PRODUCED
    for path in inputs.ignored:
        print(f"ignored (not a video): {path}")
    for repeat in inputs.duplicates:
        print(f"skipped ({repeat['reason']} of {repeat['duplicate_of']}): {repeat['source']}")
    files = RunFiles.open(args.out)
    files.start(config, inputs)
    return _process(args.out, config, list(PROCESS_STAGES), None, args.force)


def cmd_stage(args: argparse.Namespace) -> int:
    out = OutDir(args.out)
    config = load_config(args.config or out.path("config.yaml"))
    if args.force:
        print(
            f"recomputing {args.name}; stale until the next run: {', '.join(DAG.downstream_of(args.name)) or 'none'}"
        )
    if args.deployment:
        from flows.deploy import PROCESS_DEPLOYMENT, trigger

        parameters = {"out": args.out, "config": config.model_dump(mode="json"), "stages": [args.name],
                      "video_ids": args.video or None, "force": args.force}  # fmt: skip
        print(f"started flow run {trigger(PROCESS_DEPLOYMENT, parameters)} on the served '{PROCESS_DEPLOYMENT}'")
        return 0
    return _process(args.out, config, [args.name], args.video or None, args.force)


def cmd_serve(args: argparse.Namespace) -> int:
    from configs.eval import load_eval_config
    from configs.train import load_train_job
    from flows.deploy import serve_deployments

    eval_config = load_eval_config(args.eval_config) if args.eval_config else None
    train_job = load_train_job(args.train_config) if args.train_config else None
    instruct_config = None
    if args.instruct_config:
        from configs.instruct import load_instruct_config

        instruct_config = load_instruct_config(args.instruct_config)
    config = load_config(args.config)
    if not config.input.allowed_roots:  # a flow run's parameters may name any path the worker can read
        print("warning: input.allowed_roots is empty: the deployments read any input path a flow run names",
              file=sys.stderr)  # fmt: skip
    serve_deployments(args.out, config, args.input, eval_config, args.eval_model, train_job,
                      instruct_config)  # fmt: skip
    return 0


def _comma_list(text: str) -> list[str]:
    return [item.strip() for item in text.split(",") if item.strip()]


def _shot_counts(text: str) -> list[int]:
    return [int(item) for item in _comma_list(text)]


def cmd_eval(args: argparse.Namespace) -> int:
    from configs.eval import load_eval_config
    from flows.eval import run_eval
    from pipeline.models.assets import ModelNotFound

    try:
        config = load_eval_config(args.config)
        summary = run_eval(args.model, args.out, config, args.benchmarks, args.shots, args.force)
    except (ValueError, ModelNotFound) as error:
        return _fail(str(error))
    print(OutDir(args.out).read_bytes(summary["table"]).decode())
    for failure in summary["failures"]:
        print(f"failed: {failure}")
    print(f"table: {summary['table']}\nplot: {summary['plot']}\nsummary: {OutDir(args.out).path('summary.json')}")
    return 0 if summary["current"] else EXIT_NOTHING_PRODUCED


def cmd_train(args: argparse.Namespace) -> int:
    from configs.train import load_train_job, parse_overrides
    from flows.train import run_train

    job = load_train_job(args.config, parse_overrides(args.set))
    summary = run_train(args.out, args.shards or args.sft, job, args.resume)
    for run in summary["runs"]:
        if run["current"]:
            row = run["row"]
            print(f"run {run['unit']}: {row['steps']} steps, loss {row['first_loss']:.3f} -> {row['final_loss']:.3f}, "
                  f"{row['tokens_per_s']:.0f} tokens/s\nmetrics: {run['metrics']}\nloss curve: {run['loss_curve']}"
                  f"\nmodel: {row['model'] or 'not saved (run.save_model: false)'}")  # fmt: skip
        else:
            print(f"run {run['unit']}: not finished")
    for failure in summary["failures"]:
        print(f"failed: {failure}")
    return 0 if summary["current"] else EXIT_NOTHING_PRODUCED


def cmd_instruct(args: argparse.Namespace) -> int:
    from configs.instruct import load_instruct_config
    from flows.instruct import run_instruct

    config = load_instruct_config(args.config)
    added = {}
    for given in args.source:
        tag, _, path = given.partition("=") if "=" in given else (Path(given).stem, "", given)
        added[tag] = config.source_defaults.model_copy(update={"path": path})
    config = config.model_copy(update={"sources": {**config.sources, **added}})
    report = run_instruct(args.out, args.shards, config, args.force)
    out = OutDir(args.out)
    print(out.read_bytes(out.path("report.md")).decode())
    print(f"conversations: {out.path('instruct.json')}\nparquet: {out.path('instruct.parquet')}\n"
          f"data list: {out.path('data.yaml')}\nreport: {out.path('report.json')}")  # fmt: skip
    return 0 if report["current"] and sum(report["exported"].values()) else EXIT_NOTHING_PRODUCED


def cmd_trigger(args: argparse.Namespace) -> int:
    from flows.deploy import trigger

    name = args.name if "/" in args.name else f"{args.name}/{args.name}"
    print(f"started flow run {trigger(name)} of {name}")
    return 0


def cmd_inspect(args: argparse.Namespace) -> int:
    from storage.export import describe_shard

    for line in describe_shard(args.shard, args.samples):
        print(line)
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from storage.export import export_published

    counts = export_published(OutDir(args.out), args.to)
    print(f"exported {counts['samples']} samples and {counts['images']} images to {args.to}/textbook.json")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    import time

    from pipeline.metrics.report import report_run

    out = OutDir(args.out)
    config_path = args.config or (out.path("config.yaml") if out.exists(out.path("config.yaml")) else None)
    started = time.perf_counter()
    path, metrics = report_run(out, load_config(config_path))
    insi = metrics["insi_sim"]
    print(f"wrote {path} in {time.perf_counter() - started:.1f} s (InSI-SIM {insi['value']} over {insi['samples']} "
          f"samples, {insi['embedder']['backend']}); metrics in {out.path('metrics.json')}")  # fmt: skip
    return 0


def cmd_doctor(args: argparse.Namespace) -> int:
    from flows.doctor import run_checks

    failed = 0
    for name, ok, detail in run_checks(load_config(args.config), Path(args.out)):
        failed += not ok
        print(f"[{'ok' if ok else 'FAIL'}] {name}: {detail}")
    return 1 if failed else 0


def cmd_server(args: argparse.Namespace) -> int:
    from flows.server import run_server

    return run_server(args.host, args.port)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="textbook", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser("run", help="run the whole DAG from videos to shards")
    run.add_argument("--config", default=None, help="YAML merged over configs/default.yaml")
    run.add_argument(
        "--input",
        help="a video, a folder, or a .txt/.csv/.parquet manifest of paths and URLs; "
        "without it, videos are collected from the config's subjects",
    )
    run.add_argument("--out", required=True, help="output folder or fsspec URL")
    run.add_argument("--force", action="store_true", help="recompute every stage")
    run.add_argument("--runner", choices=["local", "ray", "dask"], help="overrides run.runner of the config")
    run.set_defaults(handler=cmd_run)

    stage = commands.add_parser("stage", help="rerun one stage over the videos of an earlier run")
    stage.add_argument("name", choices=PROCESS_STAGES)
    stage.add_argument("--out", required=True)
    stage.add_argument("--config", default=None, help="default: OUT/config.yaml")
    stage.add_argument("--video", action="append", help="only this video id (repeatable)")
    stage.add_argument("--force", action="store_true", help="recompute even if done; what depends on it goes stale")
    stage.add_argument("--deployment", action="store_true", help="run it on the served 'process' deployment")
    stage.set_defaults(handler=cmd_stage)

    inspect = commands.add_parser("inspect", help="print a readable summary of a shard's samples")
    inspect.add_argument("shard")
    inspect.add_argument("--samples", type=int, default=3)
    inspect.set_defaults(handler=cmd_inspect)

    export = commands.add_parser("export", help="write the published JSON + images layout from the shards")
    export.add_argument("out")
    export.add_argument("--to", required=True)
    export.set_defaults(handler=cmd_export)

    report = commands.add_parser("report", help="write OUT/metrics.json and OUT/report.html (one self-contained page)")
    report.add_argument("out")
    report.add_argument("--config", default=None, help="default: OUT/config.yaml")
    report.set_defaults(handler=cmd_report)

    doctor = commands.add_parser("doctor", help="check ffmpeg, models and disk space")
    doctor.add_argument("--config", default=None)
    doctor.add_argument("--out", default=".", help="where output will go, for the disk-space check")
    doctor.set_defaults(handler=cmd_doctor)
    served = commands.add_parser("serve", help="register the deployments with their schedules and serve them")
    served.add_argument("--config", default=None)
    served.add_argument("--out", required=True)
    served.add_argument("--input", default=None, help="what the textbook deployment processes (default: collect)")
    served.add_argument("--eval-config", default=None, help="also serve the 'eval' deployment, with this eval config")
    served.add_argument("--eval-model", default=None, help="the checkpoint the eval deployment evaluates by default")
    served.add_argument("--train-config", default=None, help="also serve 'train': OUT/shards into OUT/train")
    served.add_argument("--instruct-config", default=None, help="also serve 'instruct': OUT/shards into OUT/instruct")
    served.set_defaults(handler=cmd_serve)

    evaluation = commands.add_parser("eval", help="few-shot evaluation of a checkpoint (benchmarks x shots)")
    evaluation.add_argument("--model", required=True, help="a local HF-format LLaVA folder, or a hub id (vllm)")
    evaluation.add_argument("--benchmarks", type=_comma_list, default=None, help="comma-separated; default: all")
    evaluation.add_argument("--shots", type=_shot_counts, default=None, help="comma-separated, e.g. 0,1,2,4,8")
    evaluation.add_argument("--out", required=True, help="output folder or fsspec URL (not a data run's OUT)")
    evaluation.add_argument("--config", default=None, help="YAML merged over configs/eval.yaml")
    evaluation.add_argument("--force", action="store_true", help="recompute every cell (predictions are kept)")
    evaluation.set_defaults(handler=cmd_eval)

    training = commands.add_parser("train", help="train on the current shard set (a LLaVA, configs/train-*.yaml)")
    training.add_argument("--config", required=True, help="a training config, e.g. configs/train-tiny.yaml")
    data = training.add_mutually_exclusive_group(required=True)
    data.add_argument("--shards", help="the shards folder or fsspec URL (OUT/shards): pretraining")
    data.add_argument("--sft", metavar="DIR", help="an instruct export (textbook instruct --out DIR): fine-tuning")
    training.add_argument("--out", required=True, help="a local folder; each run goes to OUT/runs/<set>-<config>/")
    training.add_argument(
        "--resume", action="store_true", help="continue this config's latest run on its pinned set, not a newer one"
    )
    training.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                          help="override a training config key, e.g. run.max_steps=10 (read as YAML)")  # fmt: skip
    training.set_defaults(handler=cmd_train)

    instruct = commands.add_parser("instruct", help="instruction conversations from the shards and image-text sets")
    instruct.add_argument("--config", default=None, help="YAML merged over configs/instruct.yaml")
    instruct.add_argument("--shards", default=None, help="the shards folder or fsspec URL (OUT/shards)")
    instruct.add_argument("--source", action="append", default=[], metavar="[TAG=]PATH",
                          help="an image-text set (Parquet/JSON/JSONL, datasets folder), repeatable")  # fmt: skip
    instruct.add_argument("--out", required=True, help="DIR: instruct.json, images/, instruct.parquet, data.yaml")
    instruct.add_argument("--force", action="store_true", help="recompute every unit (LLM answers stay cached)")
    instruct.set_defaults(handler=cmd_instruct)

    trigger = commands.add_parser("trigger", help="start a run of a served deployment (textbook, process, collect)")
    trigger.add_argument("name", help="a deployment, e.g. textbook or process/process")
    trigger.set_defaults(handler=cmd_trigger)

    server = commands.add_parser("server", help="start the Prefect server and UI (loopback by default)")
    server.add_argument("--host", default="127.0.0.1")
    server.add_argument("--port", type=int, default=4200)
    server.set_defaults(handler=cmd_server)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from flows.server import connect_if_running

    connect_if_running()
    try:
        if args.command in WRITING_COMMANDS and not getattr(args, "deployment", False):
            with writer_lock(OutDir(args.out), f"textbook {args.command}"):
                return args.handler(args)
        return args.handler(args)
    except (ConfigError, InputError, FileNotFoundError, OutputLocked, OutputUnwritable) as error:
        return _fail(str(error))


if __name__ == "__main__":
    sys.exit(main())
