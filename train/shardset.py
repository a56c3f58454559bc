"""The shard set a run reads, local or fsspec: the files `index.json` lists, in its order, cut into Parquet row
groups (the smallest piece a reader can fetch alone).

A run pins the set it started on (its id and files go into every checkpoint), so a collection publishing a newer
set meanwhile changes nothing it sees. Where a pinned shard is now is the publisher's to say (`storage.shards`):
in the shards folder while current, else under whichever superseded set had it last.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pyarrow.parquet as pq

from storage.outdir import OutDir
from storage.shards import ShardSet


def pinned(shard_set: ShardSet) -> dict[str, Any]:
    """What a checkpoint keeps of the set its run reads."""
    return {"url": shard_set.url, "set": shard_set.set_id, "files": [entry["file"] for entry in shard_set.shards]}


def from_pinned(data: dict[str, Any]) -> ShardSet:
    """The set a checkpoint pinned, readable whatever set is current now."""
    parent, _, folder = data["url"].rpartition("/")
    return ShardSet(OutDir(parent or "."), data["set"], tuple({"file": name} for name in data["files"]), folder)


@dataclass(frozen=True)
class Unit:
    """One row group of one shard; its rows are the samples `first_id` .. `first_id + rows - 1`."""

    shard_set: ShardSet
    entry: dict[str, Any]
    row_group: int
    rows: int
    first_id: int


def list_units(shard_set: ShardSet) -> list[Unit]:
    units: list[Unit] = []
    next_id = 0
    for entry in shard_set.shards:
        with shard_set.open_shard(entry) as handle:
            metadata = pq.ParquetFile(handle).metadata
        for group in range(metadata.num_row_groups):
            rows = metadata.row_group(group).num_rows
            units.append(Unit(shard_set, entry, group, rows, next_id))
            next_id += rows
    return units


def read_unit(unit: Unit, columns: list[str]) -> list[dict]:
    with unit.shard_set.open_shard(unit.entry) as handle:
        return pq.ParquetFile(handle).read_row_group(unit.row_group, columns=columns).to_pylist()
