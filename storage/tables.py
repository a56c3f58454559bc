"""Parquet tables in OUT: atomic writes, and the stage fingerprint kept in each file's metadata."""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from storage.outdir import OutDir

STAMP_KEY = b"video2textbook"
logger = logging.getLogger(__name__)


def digest(value: Any) -> str:
    """A short, stable hash of any JSON-serialisable value."""
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()[:16]


def content_digest(table: pa.Table) -> str:
    """A short hash of a table's schema and rows (not its metadata): equal results get equal names."""
    sink = pa.BufferOutputStream()
    plain = table.replace_schema_metadata(None)
    with pa.ipc.new_stream(sink, plain.schema) as writer:
        writer.write_table(plain)
    return hashlib.sha256(sink.getvalue()).hexdigest()[:16]


@dataclass(frozen=True)
class Stamp:
    """Why a stage file is what it is: `input_key` says what it was computed from, `fingerprint` names the result.

    They differ only after a forced recompute, which gives the result a new name so everything downstream,
    having recorded the old one among its `inputs`, sees itself stale.
    """

    stage: str
    input_key: str
    fingerprint: str
    inputs: dict[str, str] = field(default_factory=dict)
    stats: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> bytes:
        return json.dumps(self.__dict__, sort_keys=True).encode()

    @classmethod
    def from_json(cls, raw: bytes) -> Stamp:
        return cls(**json.loads(raw))


def column_paths(schema: pa.Schema) -> list[str]:
    """The Parquet path of every leaf column (`images.list.element.bytes`), as per-column options name them."""

    def leaves(name: str, kind: pa.DataType) -> list[str]:
        if pa.types.is_list(kind) or pa.types.is_large_list(kind):
            return leaves(f"{name}.list.element", kind.value_type)
        if pa.types.is_struct(kind):
            return [path for child in kind for path in leaves(f"{name}.{child.name}", child.type)]
        return [name]

    return [path for field in schema for path in leaves(field.name, field.type)]


def write_table(
    out: OutDir,
    path: str,
    table: pa.Table,
    stamp: Stamp | None = None,
    extra: dict | None = None,
    uncompressed: tuple[str, ...] = (),
    durable: bool = True,
) -> None:
    """Write `table` to `path` atomically, with its stamp and any extra schema metadata; zstd, except the columns
    named in `uncompressed` (JPEG bytes, which no codec shrinks: trying costs a third of a shard's write time);
    `durable=False` leaves the fsyncs to `make_durable` (see `OutDir.open_atomic`)."""
    metadata = dict(table.schema.metadata or {})
    if stamp is not None:
        metadata[STAMP_KEY] = stamp.to_json()
    for key, value in (extra or {}).items():
        metadata[key.encode()] = value if isinstance(value, bytes) else json.dumps(value).encode()
    table = table.replace_schema_metadata(metadata)
    with out.open_atomic(path, durable) as handle:
        codecs = {column: "none" if column in uncompressed else "zstd" for column in column_paths(table.schema)}
        pq.write_table(table, handle, compression=codecs if uncompressed else "zstd")


def read_table(out: OutDir, path: str) -> pa.Table:
    with out.fs.open(path, "rb") as handle:
        return pq.read_table(handle)


def _stamp_in(metadata: dict[bytes, bytes] | None) -> Stamp | None:
    raw = (metadata or {}).get(STAMP_KEY)
    return Stamp.from_json(raw) if raw else None


def read_stamp(out: OutDir, path: str) -> Stamp | None:
    """The stamp of a finished file, read from its footer only; None when the file is absent or foreign."""
    if not out.exists(path):
        return None
    try:
        with out.fs.open(path, "rb") as handle:
            return _stamp_in(pq.read_schema(handle).metadata)
    except (pa.ArrowInvalid, OSError):  # cut short by a power cut before it was made durable: computed again
        logger.warning("%s is not a readable Parquet file: its unit runs again", path)
        return None


def table_stamp(table: pa.Table) -> Stamp | None:
    """The stamp a table read with `read_table` carries: a stage's verdicts on a video (its stats) beside its rows."""
    return _stamp_in(table.schema.metadata)


def rows_to_table(rows: list[dict[str, Any]], schema: pa.Schema) -> pa.Table:
    return pa.Table.from_pylist(rows, schema=schema)
