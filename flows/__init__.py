"""Prefect flows, tasks and the `textbook` CLI: wiring only, the stage logic lives in `pipeline`."""
