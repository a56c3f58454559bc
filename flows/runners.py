"""Task runners, kept apart from the flows: local threads, a Ray cluster (prefect-ray) or a Dask cluster
(prefect-dask). Stages run unchanged on any of them; model back-ends load once per worker process, because
each back-end is cached per process, not per video."""

from __future__ import annotations

from prefect.task_runners import TaskRunner, ThreadPoolTaskRunner

from configs.schema import RunConfig


def task_runner(cfg: RunConfig) -> TaskRunner:
    if cfg.runner == "ray":
        from prefect_ray import RayTaskRunner

        init = {"num_cpus": cfg.workers, "include_dashboard": False} if cfg.address is None else {}
        return RayTaskRunner(address=cfg.address, init_kwargs=init)
    if cfg.runner == "dask":
        from prefect_dask import DaskTaskRunner

        if cfg.address:
            return DaskTaskRunner(address=cfg.address)
        return DaskTaskRunner(cluster_kwargs={"n_workers": cfg.workers, "threads_per_worker": 1, "processes": True})
    return ThreadPoolTaskRunner(max_workers=cfg.workers)
