"""Readers over finished shards: the published JSON + image-folder layout, and a human summary of samples."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from storage.outdir import OutDir
from storage.shards import ShardSet


def iter_samples(out: OutDir) -> Iterator[dict[str, Any]]:
    """The samples of the current set, pinned when the export starts: a set published meanwhile does not mix in."""
    yield from ShardSet.open(out).samples()


def export_published(out: OutDir, target: str | Path) -> dict[str, int]:
    """Write `textbook.json` (a list of samples, images as relative paths) and `images/` as the published
    multimodal_textbook release lays them out, so the original LLaVA training scripts can read them. Every file is
    written atomically, `textbook.json` last: an export killed midway is never taken for a finished one."""
    folder = OutDir(target)
    samples, image_count = [], 0
    for sample in iter_samples(out):
        paths = []
        for image in sample["images"]:
            if image is None:
                paths.append(None)
                continue
            name = Path(image["path"]).name
            folder.write_bytes(folder.path("images", name), image["bytes"])
            paths.append(f"images/{name}")
            image_count += 1
        samples.append({**sample, "images": paths, "metadata": json.loads(sample["metadata"])})
    folder.write_bytes(folder.path("textbook.json"), json.dumps(samples, ensure_ascii=False, indent=1).encode())
    return {"samples": len(samples), "images": image_count}


def describe_shard(path: str, limit: int, width: int = 100) -> Iterator[str]:
    """Readable lines about the first `limit` samples of one shard."""
    table = pq.read_table(path)
    yield f"{path}: {table.num_rows} samples, {sum(table['image_num'].to_pylist())} images"
    for index, sample in enumerate(table.slice(0, limit).to_pylist()):
        metadata = json.loads(sample["metadata"])
        videos = ", ".join(video["video_id"] for video in metadata["videos"])
        yield (
            f"\n#{index} topic={metadata['topic']} videos=[{videos}] images={sample['image_num']} "
            f"texts={sample['text_num']} tokens={sample['token_num']}"
        )
        for image, text in zip(sample["images"], sample["texts"], strict=True):
            if image is not None:
                yield f"  [image {image['path']} {len(image['bytes']) // 1024} KiB]"
            else:
                yield "  " + (text if len(text) <= width else text[: width - 3] + "...")
