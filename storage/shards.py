"""The product: self-contained Parquet shards, published as immutable sets that readers never see half-made.

A shard holds whole topics and is named by the digest of its content, so a file under a given name never changes.
Publishing a set writes only the shards whose topics changed, then swaps `shards/index.json` atomically (the moment
the new set becomes the current one), then moves the shards only the old set had to `shards-superseded/<set>/`,
where a reader that opened the old index still finds them until `keep_superseded_sets` newer sets exist. So
`OUT/shards/*.parquet` is the current set, and a reader that goes through the index (`ShardSet.open`) sees one whole
set, old or new, whatever a collection running beside it publishes.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import IO, Any

import pyarrow as pa
import pyarrow.parquet as pq

from storage.outdir import OutDir
from storage.schemas import SHARD, SHARD_FEATURES
from storage.tables import content_digest, digest, write_table

SHARD_DIR = "shards"
SUPERSEDED_DIR = "shards-superseded"
INDEX_FILE = "index.json"
HF_METADATA = {"huggingface": {"info": {"features": SHARD_FEATURES}}}
JPEG_COLUMNS = ("images.list.element.bytes",)  # stored as they are: JPEG does not compress


def shard_name(content: str) -> str:
    return f"shard-{content}.parquet"


def resolve_images(
    samples: Iterable[dict[str, Any]], keyframe_bytes: Callable[[str, int], bytes]
) -> Iterator[dict[str, Any]]:
    """Pack rows with image references turned into shard rows with the JPEG bytes inside."""
    for sample in samples:
        images = [
            None
            if ref is None
            else {"bytes": keyframe_bytes(ref["video_id"], ref["keyframe_id"]), "path": ref["name"]}
            for ref in sample["image_refs"]
        ]
        copied = {key: sample[key] for key in SHARD.names if key not in ("images", "texts")}
        yield {**copied, "images": images, "texts": sample["segments"]}


def row_bytes(row: dict[str, Any]) -> int:
    images = sum(len(image["bytes"]) for image in row["images"] if image is not None)
    return images + sum(len(text) for text in row["texts"] if text) + len(row["metadata"])


@dataclass(frozen=True)
class Topic:
    """One topic as the shards see it: `key` names everything its samples are made of (its pack result and the
    keyframes its images come from), so an unchanged key means unchanged shard bytes."""

    topic_id: str
    key: str
    rows: Callable[[], Iterator[dict[str, Any]]]
    estimated_bytes: Callable[[], int]


def group_topics(topics: list[Topic], previous: list[dict[str, Any]], target_bytes: int) -> list[list[Topic]]:
    """Topics into shards: a shard of the previous set whose topics are all still here with the same keys is kept
    as it is; the other topics, in their order, fill new shards up to `target_bytes` (a topic is never split, so a
    topic larger than that is a shard of its own)."""
    by_key = {(topic.topic_id, topic.key): topic for topic in topics}
    kept: list[list[Topic]] = []
    claimed: set[str] = set()
    for entry in previous:
        members = [by_key.get((topic_id, key)) for topic_id, key in entry["topics"]]
        if members and all(members) and not claimed.intersection(t.topic_id for t in members):
            kept.append(members)
            claimed.update(t.topic_id for t in members)
    fresh: list[list[Topic]] = []
    size = 0
    for topic in topics:
        if topic.topic_id in claimed:
            continue
        topic_bytes = topic.estimated_bytes()
        if not fresh or (fresh[-1] and size + topic_bytes > target_bytes):
            fresh.append([])
            size = 0
        fresh[-1].append(topic)
        size += topic_bytes
    order = {topic.topic_id: position for position, topic in enumerate(topics)}
    return sorted(kept + fresh, key=lambda group: order[group[0].topic_id])


def write_shard(out: OutDir, path: str, table: pa.Table) -> None:
    """One shard file, atomically, with the `datasets` features in its schema metadata."""
    write_table(out, path, table, extra=HF_METADATA, uncompressed=JPEG_COLUMNS)


def read_index(out: OutDir, folder: str = SHARD_DIR) -> dict[str, Any] | None:
    path = out.path(folder, INDEX_FILE)
    return json.loads(out.read_bytes(path)) if out.exists(path) else None


def publish_shards(out: OutDir, topics: list[Topic], target_bytes: int, keep_superseded_sets: int) -> list[dict]:
    """Write the shards of `topics` as the current set; returns its index entries."""
    previous = read_index(out) or {"set": None, "shards": []}
    reused = {entry["file"]: entry for entry in previous["shards"]}
    entries = []
    for group in group_topics(topics, previous["shards"], target_bytes):
        topic_keys = [[topic.topic_id, topic.key] for topic in group]
        old = next((entry for entry in previous["shards"] if entry["topics"] == topic_keys), None)
        if old is not None and out.exists(out.path(SHARD_DIR, old["file"])):
            entries.append(reused[old["file"]])
            continue
        rows = [row for topic in group for row in topic.rows()]
        table = pa.Table.from_pylist(rows, schema=SHARD)
        content = content_digest(table)
        name = shard_name(content)
        write_shard(out, out.path(SHARD_DIR, name), table)
        entries.append({"file": name, "samples": len(rows), "bytes_estimate": sum(map(row_bytes, rows)),
                        "digest": content, "topics": topic_keys})  # fmt: skip
    set_id = digest([[entry["digest"], entry["topics"]] for entry in entries])
    if set_id != previous["set"]:
        out.write_json(out.path(SHARD_DIR, INDEX_FILE), {"set": set_id, "shards": entries})
        if previous["set"] is not None:
            _supersede(out, previous, {entry["file"] for entry in entries})
        _prune_superseded(out, keep_superseded_sets)
    _remove_strays(out, {entry["file"] for entry in entries})
    return entries


def _supersede(out: OutDir, previous: dict[str, Any], current: set[str]) -> None:
    """Keep the previous set readable under `shards-superseded/<set>/`: its shards that the new set dropped move
    there (a rename), with a copy of its index naming them."""
    folder = (SUPERSEDED_DIR, previous["set"])
    out.write_json(out.path(*folder, INDEX_FILE), previous)
    for entry in previous["shards"]:
        source = out.path(SHARD_DIR, entry["file"])
        if entry["file"] not in current and out.exists(source):
            out.fs.makedirs(out.path(*folder), exist_ok=True)
            out.fs.mv(source, out.path(*folder, entry["file"]))


def _prune_superseded(out: OutDir, keep: int) -> None:
    """Remove superseded sets beyond the newest `keep` (by when they were superseded)."""
    sets = sorted(out.list(SUPERSEDED_DIR), key=lambda folder: out.fs.modified(f"{folder}/{INDEX_FILE}"))
    for folder in sets[: max(0, len(sets) - keep)]:
        out.fs.rm(folder, recursive=True)


def _remove_strays(out: OutDir, current: set[str]) -> None:
    """Shards a killed publish wrote but never listed: never part of any set."""
    for path in out.list(SHARD_DIR):
        name = path.rsplit("/", 1)[-1]
        if name.endswith(".parquet") and name not in current:
            out.remove(path)


def retire_shards(out: OutDir) -> None:
    """Take the current set out of view (moved under `shards-superseded/`): a set that is no longer current under
    the config leaves OUT/shards empty rather than serving an older config's samples."""
    previous = read_index(out)
    if previous is None:
        return
    _supersede(out, previous, set())
    out.remove(out.path(SHARD_DIR, INDEX_FILE))


@dataclass(frozen=True)
class ShardSet:
    """One published set, pinned when opened: its shards stay readable while newer sets are published.

    `folder` is the shards folder inside `out` (`shards` as the pipeline publishes; a copy may be named otherwise);
    superseded sets are always under `out/shards-superseded/`, where the publisher keeps them."""

    out: OutDir
    set_id: str
    shards: tuple[dict[str, Any], ...]
    folder: str = SHARD_DIR

    @classmethod
    def open(cls, out: OutDir, folder: str = SHARD_DIR) -> ShardSet:
        index = read_index(out, folder)
        if index is None:
            raise FileNotFoundError(f"no published shards (no {INDEX_FILE}) in {out.url}/{folder}")
        return cls(out, index["set"], tuple(index["shards"]), folder)

    @classmethod
    def at(cls, url: str) -> ShardSet:
        """The set current in a shards folder named by its own path or URL (`OUT/shards`, `s3://bucket/OUT/shards`),
        as a reader outside the pipeline (training) is given it."""
        parent, _, folder = url.rstrip("/").rpartition("/")
        return cls.open(OutDir(parent or "."), folder)

    @property
    def url(self) -> str:
        return f"{self.out.url.rstrip('/')}/{self.folder}"

    def path(self, entry: dict[str, Any]) -> str:
        """Where a shard of this set is now: in its folder while current, else under the superseded set that had it
        last (a shard is named by its content, so every copy of a name is the same file)."""
        current = self.out.path(self.folder, entry["file"])
        if self.out.exists(current):
            return current
        for folder in self.out.list(SUPERSEDED_DIR):
            if self.out.exists(f"{folder}/{entry['file']}"):
                return f"{folder}/{entry['file']}"
        raise FileNotFoundError(f"shard {entry['file']} of set {self.set_id} was pruned (shards.keep_superseded_sets)")

    def open_shard(self, entry: dict[str, Any]) -> IO[bytes]:
        """A shard opened wherever it is now; one that a publish moved between the look and the open is looked for
        again."""
        try:
            return self.out.fs.open(self.path(entry), "rb")
        except FileNotFoundError:
            return self.out.fs.open(self.path(entry), "rb")

    def read(self, entry: dict[str, Any], columns: list[str] | None = None) -> pa.Table:
        with self.open_shard(entry) as handle:
            return pq.read_table(handle, columns=columns)

    def samples(self) -> Iterator[dict[str, Any]]:
        for entry in self.shards:
            yield from self.read(entry).to_pylist()
