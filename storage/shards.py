"""The product: self-contained Parquet shards of about `target_bytes`, readable by pyarrow and `datasets`."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import pyarrow as pa

from storage.outdir import OutDir
from storage.schemas import SHARD, SHARD_FEATURES
from storage.tables import content_digest, write_table

SHARD_DIR = "shards"
INDEX_FILE = "index.json"
HF_METADATA = {"huggingface": {"info": {"features": SHARD_FEATURES}}}


def shard_name(index: int) -> str:
    return f"shard-{index:05d}.parquet"


def resolve_images(
    samples: Iterable[dict[str, Any]], keyframe_bytes: Callable[[str, int], bytes]
) -> Iterator[dict[str, Any]]:
    """Pack rows with image references turned into shard rows with the JPEG bytes inside."""
    for sample in samples:
        images = [
            None
            if ref is None
            else {"bytes": keyframe_bytes(ref["video_id"], ref["keyframe_id"]), "path": ref["name"]}
            for ref in sample["images"]
        ]
        yield {**{key: sample[key] for key in SHARD.names if key != "images"}, "images": images}


def _row_bytes(row: dict[str, Any]) -> int:
    images = sum(len(image["bytes"]) for image in row["images"] if image is not None)
    return images + sum(len(text) for text in row["texts"] if text) + len(row["metadata"])


def write_shards(out: OutDir, rows: Iterable[dict[str, Any]], target_bytes: int) -> list[dict]:
    """Write rows into shards in order, starting a new shard past `target_bytes`; drop shards left from before.

    The index, written last, lists the shards with the digest of each one's content.
    """
    written: list[dict[str, Any]] = []
    batch: list[dict[str, Any]] = []
    batch_bytes = 0

    def flush() -> None:
        nonlocal batch, batch_bytes
        name = shard_name(len(written))
        table = pa.Table.from_pylist(batch, schema=SHARD)
        write_table(out, out.path(SHARD_DIR, name), table, extra=HF_METADATA)
        written.append({"file": name, "samples": len(batch), "bytes_estimate": batch_bytes,
                        "digest": content_digest(table)})  # fmt: skip
        batch, batch_bytes = [], 0

    for row in rows:
        batch.append(row)
        batch_bytes += _row_bytes(row)
        if batch_bytes >= target_bytes:
            flush()
    if batch:
        flush()
    keep = {entry["file"] for entry in written}
    for path in out.list(SHARD_DIR):
        name = path.rsplit("/", 1)[-1]
        if name.startswith("shard-") and name not in keep:
            out.remove(path)
    out.write_json(out.path(SHARD_DIR, INDEX_FILE), {"shards": written})
    return written


def retire_shards(out: OutDir, fingerprint: str) -> None:
    """Move the published shards and their index to `stale/shards/<fingerprint>/`: a set that is no longer
    current under the config leaves OUT/shards empty rather than serving an older config's samples."""
    for path in out.list(SHARD_DIR):
        name = path.rsplit("/", 1)[-1]
        out.write_bytes(out.path("stale", SHARD_DIR, fingerprint, name), out.read_bytes(path))
        out.remove(path)


def read_index(out: OutDir) -> dict[str, Any] | None:
    path = out.path(SHARD_DIR, INDEX_FILE)
    return json.loads(out.read_bytes(path)) if out.exists(path) else None
