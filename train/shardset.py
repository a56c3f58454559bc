"""The shard set a run reads, local or fsspec: the files `index.json` lists, in its order, cut into Parquet row
groups (the smallest piece a reader can fetch alone).

A run pins the set it started on (its file names go into every checkpoint), so a collection publishing a newer set
meanwhile changes nothing it sees: a shard the newer set dropped is read from where the publisher keeps superseded
sets (`shards-superseded/<set>/` beside `shards/`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import fsspec
import pyarrow.parquet as pq

from storage.shards import INDEX_FILE

SUPERSEDED_DIR = "shards-superseded"


@dataclass(frozen=True)
class ShardList:
    root: str  # the shards folder, as a URL or path
    set_id: str | None
    files: tuple[str, ...]

    @classmethod
    def open(cls, shards: str) -> ShardList:
        fs, root = fsspec.core.url_to_fs(shards)
        index = f"{root.rstrip('/')}/{INDEX_FILE}"
        if fs.exists(index):
            with fs.open(index) as handle:
                content = json.load(handle)
            return cls(shards.rstrip("/"), content.get("set"), tuple(entry["file"] for entry in content["shards"]))
        names = sorted(path.rsplit("/", 1)[-1] for path in fs.glob(f"{root.rstrip('/')}/shard-*.parquet"))
        if not names:
            raise FileNotFoundError(f"no shards in {shards}")
        return cls(shards.rstrip("/"), None, tuple(names))

    def candidates(self, name: str) -> list[str]:
        paths = [f"{self.root}/{name}"]
        if self.set_id is not None:
            parent = self.root.rsplit("/", 1)[0]
            paths.append(f"{parent}/{SUPERSEDED_DIR}/{self.set_id}/{name}")
        return paths

    def to_json(self) -> dict:
        return {"root": self.root, "set": self.set_id, "files": list(self.files)}

    @classmethod
    def from_json(cls, data: dict) -> ShardList:
        return cls(data["root"], data["set"], tuple(data["files"]))


@dataclass(frozen=True)
class Unit:
    """One row group of one shard; its rows are the samples `first_id` .. `first_id + rows - 1`."""

    paths: tuple[str, ...]  # where the shard is while its set is current, then where it is once superseded
    row_group: int
    rows: int
    first_id: int


def _open(paths: tuple[str, ...] | list[str]):
    for path in paths[:-1]:
        fs, local = fsspec.core.url_to_fs(path)
        if fs.exists(local):
            return fsspec.open(path, "rb")
    return fsspec.open(paths[-1], "rb")


def list_units(shard_list: ShardList) -> list[Unit]:
    units: list[Unit] = []
    next_id = 0
    for name in shard_list.files:
        paths = tuple(shard_list.candidates(name))
        with _open(paths) as handle:
            metadata = pq.ParquetFile(handle).metadata
        for group in range(metadata.num_row_groups):
            rows = metadata.row_group(group).num_rows
            units.append(Unit(paths, group, rows, next_id))
            next_id += rows
    return units


def read_unit(unit: Unit, columns: list[str]) -> list[dict]:
    with _open(unit.paths) as handle:
        return pq.ParquetFile(handle).read_row_group(unit.row_group, columns=columns).to_pylist()
