"""The shard set a run reads, local or fsspec: files in the order `index.json` lists (a published set never changes
under a reader), each cut into its Parquet row groups, the smallest piece a reader can fetch alone."""

from __future__ import annotations

import json
from dataclasses import dataclass

import fsspec
import pyarrow.parquet as pq

from storage.shards import INDEX_FILE


@dataclass(frozen=True)
class Unit:
    """One row group of one shard; its rows are the samples `first_id` .. `first_id + rows - 1`."""

    path: str
    row_group: int
    rows: int
    first_id: int


def shard_files(shards: str) -> list[str]:
    fs, root = fsspec.core.url_to_fs(shards)
    root = root.rstrip("/")
    index = f"{root}/{INDEX_FILE}"
    if fs.exists(index):
        with fs.open(index) as handle:
            names = [entry["file"] for entry in json.load(handle)["shards"]]
        files = [f"{root}/{name}" for name in names]
    else:
        files = sorted(fs.glob(f"{root}/shard-*.parquet"))
    if not files:
        raise FileNotFoundError(f"no shards in {shards}")
    protocol = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
    return files if protocol == "file" else [f"{protocol}://{path}" for path in files]


def list_units(shards: str) -> list[Unit]:
    units: list[Unit] = []
    next_id = 0
    for path in shard_files(shards):
        with fsspec.open(path, "rb") as handle:
            metadata = pq.ParquetFile(handle).metadata
        for group in range(metadata.num_row_groups):
            rows = metadata.row_group(group).num_rows
            units.append(Unit(path, group, rows, next_id))
            next_id += rows
    return units


def read_unit(unit: Unit, columns: list[str]) -> list[dict]:
    with fsspec.open(unit.path, "rb") as handle:
        return pq.ParquetFile(handle).read_row_group(unit.row_group, columns=columns).to_pylist()
