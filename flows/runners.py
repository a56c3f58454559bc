"""Executors, kept apart from the flows: task runners (local threads, a Ray cluster through prefect-ray, a Dask
cluster through prefect-dask) and the policies a stage's tasks run under (retries, timeouts, tags, GPUs).
Stages run unchanged on any runner; model back-ends load once per worker process, because each back-end is
cached per process, not per video."""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from typing import Any

from prefect.task_runners import TaskRunner, ThreadPoolTaskRunner

from configs import PipelineConfig
from configs.schema import LlmConfig, RunConfig
from pipeline.engine.stage import StageKind

LOOPBACK = "127.0.0.1"  # a local Dask cluster listens here only, its dashboard off
logger = logging.getLogger(__name__)


def this_process_threads() -> dict[str, str]:
    """The BLAS thread counts of this process, for the workers of a local cluster: Ray and Dask set them to 1, and
    how a product is split over threads changes its last bits, which beam search turned into other words (a video
    heard "the loss after" here and "the last half to" on a worker), so a local cluster computes as this process
    does."""
    omp = os.environ.get("OMP_NUM_THREADS", str(os.cpu_count() or 1))  # what OpenBLAS and MKL fall back on
    return {
        "OMP_NUM_THREADS": omp,
        "OPENBLAS_NUM_THREADS": os.environ.get("OPENBLAS_NUM_THREADS", omp),
        "MKL_NUM_THREADS": os.environ.get("MKL_NUM_THREADS", omp),
    }


def task_runner(cfg: RunConfig) -> TaskRunner:
    if cfg.runner == "ray":
        from prefect_ray import RayTaskRunner

        if cfg.address is None:
            logger.warning("a local Ray cluster's services listen on every interface whatever its node address "
                           "(measured with Ray 2.60); Ray's token authentication guards them")  # fmt: skip
        init = {}
        if cfg.address is None:
            init = {
                "num_cpus": cfg.workers,
                "include_dashboard": False,
                "runtime_env": {"env_vars": this_process_threads()},
            }
        return RayTaskRunner(address=cfg.address, init_kwargs=init)
    if cfg.runner == "dask":
        from prefect_dask import DaskTaskRunner

        if cfg.address:
            return DaskTaskRunner(address=cfg.address)
        import dask

        # set before the workers start: a worker's `env` is applied once its BLAS has read the counts
        dask.config.set({f"distributed.nanny.pre-spawn-environ.{name}": count
                         for name, count in this_process_threads().items()})  # fmt: skip
        return DaskTaskRunner(cluster_kwargs={"n_workers": cfg.workers, "threads_per_worker": 1, "processes": True,
                                              "host": LOOPBACK, "dashboard_address": None})  # fmt: skip
    return ThreadPoolTaskRunner(max_workers=cfg.workers)


def _section_on_gpu(name: str, config: PipelineConfig) -> bool:
    section = getattr(config, name, None)
    if isinstance(section, LlmConfig):  # llm, and clip_filter's vlm
        return section.backend == "vllm" or (
            section.backend == "transformers" and section.transformers.device.startswith("cuda")
        )
    device = getattr(section, "device", None)
    return isinstance(device, str) and device.startswith("cuda")


def uses_gpu(sections: tuple[str, ...], config: PipelineConfig) -> bool:
    """A stage needs a GPU when a model of a config section it reads is set to run on one."""
    return any(_section_on_gpu(name, config) for name in sections)


def task_options(stage: str, kind: StageKind, sections: tuple[str, ...], config: PipelineConfig) -> dict[str, Any]:
    """Prefect task options of one stage: retries with doubling delays and a timeout by stage kind, and tags for
    the server's concurrency limits (`stage:<name>`, the kind, `gpu`)."""
    policy = getattr(config.run.tasks, kind)
    tags = [f"stage:{stage}", kind] + (["gpu"] if uses_gpu(sections, config) else [])
    return {
        "retries": policy.retries,
        "retry_delay_seconds": [policy.retry_delay_seconds * 2**n for n in range(policy.retries)] or 0,
        "timeout_seconds": policy.timeout_seconds,
        "tags": tags,
    }


@contextlib.contextmanager
def stage_resources(gpu: bool, cfg: RunConfig) -> Iterator[None]:
    """On Ray, a GPU stage's tasks reserve GPUs, so the cluster places them on GPU workers one per device."""
    if cfg.runner != "ray" or not gpu:
        yield
        return
    from prefect_ray.context import remote_options

    with remote_options(num_gpus=cfg.gpus_per_model_task):
        yield


def apply_concurrency_limits(limits: dict[str, int]) -> None:
    """Create or update the tag limits on the Prefect API the flow runs against (server or ephemeral)."""
    if not limits:
        return
    from prefect import get_client

    with get_client(sync_client=True) as client:
        for tag, limit in limits.items():
            client.create_concurrency_limit(tag=tag, concurrency_limit=limit)
