"""Rows of a benchmark set as published: local Parquet, JSON or JSONL files, or the hub through `datasets`.

Images come back as encoded bytes whatever the source: a Parquet image struct ({bytes, path}), a `datasets` Image
column read undecoded, or a path in a JSON row resolved against the file's folder. `datasets` is imported only
when a set has no local path, and nothing can be fetched on a machine without the network: such a set fails with
its name and what to configure instead.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from configs.eval import DatasetConfig

EXTENSIONS = (".parquet", ".json", ".jsonl")


class DatasetUnavailable(RuntimeError):
    """A configured set that is neither on disk nor reachable on the hub."""


def _files(path: Path, split: str) -> list[Path]:
    if path.is_file():
        return [path]
    found = sorted(p for p in path.rglob(f"{split}*") if p.suffix in EXTENSIONS)
    if not found:
        raise DatasetUnavailable(f"{path}: no {split}* file ({', '.join(EXTENSIONS)})")
    return found


def _json_rows(path: Path) -> list[dict[str, Any]]:
    if path.suffix == ".jsonl":
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    data = json.loads(path.read_text())
    return list(data.values()) if isinstance(data, dict) else data  # MathVista's testmini.json is keyed by pid


def read_local_rows(path: Path, split: str) -> Iterator[tuple[dict[str, Any], Path]]:
    """Each row with the folder its relative image paths start from."""
    for file in _files(path, split):
        rows = pq.read_table(file).to_pylist() if file.suffix == ".parquet" else _json_rows(file)
        for row in rows:
            yield row, file.parent


def read_hub_rows(cfg: DatasetConfig) -> Iterator[tuple[dict[str, Any], Path]]:
    try:
        import datasets
    except ImportError as error:
        raise DatasetUnavailable(f"{cfg.hub}: the datasets package is not installed") from error
    try:
        dataset = datasets.load_dataset(cfg.hub, cfg.hub_config, split=cfg.split)
    except Exception as error:  # no network, an unknown name, a gated set: all say the same to the user
        raise DatasetUnavailable(
            f"{cfg.hub} ({cfg.hub_config or 'default'}, {cfg.split}) cannot be loaded from the hub: {error}; "
            "download it and set its `path` in the eval config"
        ) from error
    for name, feature in dataset.features.items():
        if isinstance(feature, datasets.Image):
            dataset = dataset.cast_column(name, datasets.Image(decode=False))
    for row in dataset:
        yield row, Path(".")


def read_rows(cfg: DatasetConfig) -> Iterator[tuple[dict[str, Any], Path]]:
    if cfg.path is not None:
        path = Path(cfg.path).expanduser()
        if not path.exists():
            raise DatasetUnavailable(f"{cfg.path}: no such file or folder")
        return read_local_rows(path, cfg.split)
    if cfg.hub is None:
        raise DatasetUnavailable("a dataset entry needs a path or a hub id")
    return read_hub_rows(cfg)


def image_bytes(value: Any, base: Path) -> bytes | None:
    """The encoded image a cell holds: a {bytes, path} struct, raw bytes, or a path relative to `base`."""
    if value is None:
        return None
    if isinstance(value, dict):
        if value.get("bytes"):
            return value["bytes"]
        value = value.get("path")
        if not value:
            return None
    if isinstance(value, bytes):
        return value
    file = Path(value) if Path(value).is_absolute() else base / value
    return file.read_bytes() if file.is_file() else None
