"""Shard write and read speed against plain pyarrow.parquet on the same table, in one run.

Why: the shards are the product and are written and read once per sample at corpus scale; the way they are
written (atomically: a `.partial` file, fsync, rename, fsync of the folder; zstd except the JPEG bytes; the
`datasets` features in the schema metadata) must cost little against what `pyarrow.parquet` does alone. The
table is shard-shaped: samples of 10 images of 40 KB (random bytes, which no codec can shrink, as JPEG) between
texts. Rounds alternate ours and plain, the median is reported, MB are the table's in-memory bytes.

    .venv/bin/python benchmarks/shards.py [--samples 500] [--rounds 5]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import tempfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from keyframes import timed

from storage.outdir import OutDir
from storage.schemas import SHARD
from storage.shards import ShardSet, write_shard

IMAGES_PER_SAMPLE = 10
IMAGE_BYTES = 40_000
TARGET = 0.9


def shard_table(samples: int) -> pa.Table:
    rng = random.Random(0)
    rows = []
    for n in range(samples):
        text = " ".join(rng.choice(["the", "slope", "loss", "model", "data", "line", "error"]) for _ in range(60))
        images = [
            {"bytes": os.urandom(IMAGE_BYTES), "path": f"v{n}@0.0_10.0#{i}.jpg"} for i in range(IMAGES_PER_SAMPLE)
        ]
        texts = [text if i % 2 else None for i in range(2 * IMAGES_PER_SAMPLE)]
        slots = [images[i // 2] if i % 2 == 0 else None for i in range(2 * IMAGES_PER_SAMPLE)]
        rows.append({"images": slots, "texts": texts, "text_ocr_list": ["OCR text"] * IMAGES_PER_SAMPLE,
                     "metadata": json.dumps({"video_ids": [f"v{n}"]}), "image_num": IMAGES_PER_SAMPLE,
                     "text_num": IMAGES_PER_SAMPLE, "token_num": 800})  # fmt: skip
    return pa.Table.from_pylist(rows, schema=SHARD)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    table = shard_table(args.samples)
    megabytes = table.nbytes / 1e6
    folder = Path(tempfile.mkdtemp(prefix="shards-bench-"))
    out = OutDir(folder / "out")
    ours_path, plain_path = out.path("shards", "shard-bench.parquet"), str(folder / "plain.parquet")
    shard_set = ShardSet(out, "bench", ({"file": "shard-bench.parquet"},))
    times: dict[str, list[float]] = {"ours write": [], "plain write": [], "ours read": [], "plain read": []}
    for _ in range(args.rounds):
        times["ours write"].append(timed(lambda: write_shard(out, ours_path, table))[0])
        times["plain write"].append(timed(lambda: pq.write_table(table, plain_path))[0])
        times["ours read"].append(timed(lambda: shard_set.read(shard_set.shards[0]))[0])
        times["plain read"].append(timed(lambda: pq.read_table(plain_path))[0])
    rates = {name: megabytes / statistics.median(values) for name, values in times.items()}
    sizes = os.path.getsize(ours_path) / 1e6, os.path.getsize(plain_path) / 1e6
    print(f"table: {args.samples} samples, {megabytes:.0f} MB in memory; files: ours {sizes[0]:.0f} MB (zstd, images "
          f"as they are), plain {sizes[1]:.0f} MB (pyarrow's default, snappy)")  # fmt: skip
    for name, rate in rates.items():
        print(f"{name}: {rate:.0f} MB/s (median of {args.rounds})")
    write, read = rates["ours write"] / rates["plain write"], rates["ours read"] / rates["plain read"]
    print(f"write: ours / plain {write:.2f}x; read: ours / plain {read:.2f}x (target >= {TARGET}x)")
    print(f"shards vs pyarrow.parquet: write {write:.2f}x, read {read:.2f}x")


if __name__ == "__main__":
    main()
