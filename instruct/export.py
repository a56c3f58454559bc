"""export: the mixed conversations as LLaVA-OneVision training data, in three forms that say the same thing.

- `instruct.json`: `[{"id", "image": str | [str], "conversations": [{"from": "human" | "gpt", "value"}]}]`, one
  `<image>` per image, all in the first human turn (a text-only item has no `image`);
- `images/`: each distinct image once, named by its digest and its original name;
- `instruct.parquet`: the same records with the image bytes inside (`images: list<struct<bytes, path>>`);
- `data.yaml`: the data list LLaVA-NeXT's training scripts read (`datasets: [{json_path, sampling_strategy}]`).
Every file is written atomically; the JSON is validated against the format before it is written.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
from pathlib import PurePosixPath
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import yaml

from configs.instruct import ExportConfig
from instruct.schemas import CONVERSATION, IMAGE
from storage.outdir import OutDir

JSON_FILE = "instruct.json"
PARQUET_FILE = "instruct.parquet"
DATA_LIST = "data.yaml"
RECORDS = pa.schema(
    [("id", pa.string()), ("images", pa.list_(IMAGE)), ("image", pa.list_(pa.string())),
     ("conversations", CONVERSATION), ("source", pa.string()), ("category", pa.string()), ("origin", pa.string())]
)  # fmt: skip


def image_name(image: dict[str, Any]) -> str:
    stem = re.sub(r"[^A-Za-z0-9._@#-]+", "_", PurePosixPath(image["path"] or "image.jpg").name).lstrip("._") or "img"
    return f"{hashlib.sha256(image['bytes']).hexdigest()[:16]}-{stem}"


def llava_problems(record: dict[str, Any]) -> list[str]:
    """What makes a record no LLaVA-OneVision record; empty when it is one."""
    problems = []
    if not isinstance(record.get("id"), str) or not record["id"]:
        problems.append("id: not a non-empty string")
    image = record.get("image")
    images = [] if image is None else [image] if isinstance(image, str) else image
    if not isinstance(images, list) or not all(isinstance(path, str) and path for path in images):
        problems.append("image: not a path or a list of paths")
        images = []
    turns = record.get("conversations")
    if not isinstance(turns, list) or not turns or len(turns) % 2:
        return [*problems, "conversations: not a list of human/gpt pairs"]
    for number, turn in enumerate(turns):
        if set(turn) != {"from", "value"} or not isinstance(turn["value"], str) or not turn["value"].strip():
            problems.append(f"conversations[{number}]: not a {{from, value}} turn with text")
        elif turn["from"] != ("human" if number % 2 == 0 else "gpt"):
            problems.append(f"conversations[{number}]: from {turn['from']!r} out of turn")
    placeholders = [turn.get("value", "").count("<image>") for turn in turns]
    if sum(placeholders) != len(images):
        problems.append(f"{sum(placeholders)} <image> placeholders for {len(images)} images")
    elif len(images) == 1 and placeholders[0] != 1:
        problems.append("a single image's <image> is not in the first human turn")
    return problems


def write_export(out: OutDir, records: list[dict[str, Any]], cfg: ExportConfig) -> dict[str, int]:
    """Write the export of `records` ({id, images: [{bytes, path}], conversations, source, category, origin})."""
    folder = cfg.image_folder
    written: set[str] = set()
    listed, rows, image_bytes = [], [], 0
    for record in records:
        paths = []
        for image in record["images"]:
            name = image_name(image)
            paths.append(f"{folder}/{name}")
            if name not in written:
                out.write_bytes(out.path(folder, name), image["bytes"])
                written.add(name)
                image_bytes += len(image["bytes"])
        entry: dict[str, Any] = {"id": record["id"]}
        if paths:
            entry["image"] = paths[0] if len(paths) == 1 else paths
        entry["conversations"] = record["conversations"]
        if problems := llava_problems(entry):
            raise ValueError(f"export {record['id']}: {'; '.join(problems)}")
        listed.append(entry)
        rows.append({**record, "image": paths})
    out.write_bytes(out.path(JSON_FILE), json.dumps(listed, ensure_ascii=False, indent=1).encode())
    buffer = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(rows, schema=RECORDS), buffer, compression="zstd")
    out.write_bytes(out.path(PARQUET_FILE), buffer.getvalue())
    data_list = {"datasets": [{"json_path": out.path(JSON_FILE), "sampling_strategy": cfg.sampling_strategy}]}
    out.write_bytes(out.path(DATA_LIST), yaml.safe_dump(data_list, sort_keys=False).encode())
    return {"conversations": len(listed), "images": len(written), "bytes": image_bytes}
