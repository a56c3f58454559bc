"""Training throughput: one optimizer step over a padded micro-batch of B samples against the naive loop that runs
the same B samples one at a time with gradient accumulation (same loss, same update).

Both run in this process, on the same model and samples, alternating, so the ratio holds on a noisy shared machine.
Tokens count every position a sample holds (text and image embeddings, not padding). MFU (model FLOPs as the
training issue defines them, over the GPU's dense bf16 peak) is printed on a GPU; on CPU it is unmeasured.

    .venv/bin/python -m benchmarks.train [--size tiny|real] [--batch 4] [--repeat 3]

(as a module: run as a file, this script's name would shadow the `train` package)

`--size real` is a 0.5B Llama-shaped language model (Qwen2-0.5B's dimensions) under a CLIP ViT-L/14-336 tower,
randomly initialised, on samples of 12 images (6,912 image positions) and about 1,200 text tokens: a GPU run.
"""

from __future__ import annotations

import argparse
import io
import json
import random
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from PIL import Image

from configs import CONFIG_DIR
from configs.train import load_train_config
from storage.schemas import SHARD
from train.distributed import start, stop
from train.run import Trainer
from train.stream import batches

TINY = CONFIG_DIR / "train-tiny.yaml"
REAL_SIZE = {
    "model.language_model.config": {
        "model_type": "llama", "hidden_size": 896, "intermediate_size": 4864, "num_hidden_layers": 24,
        "num_attention_heads": 14, "num_key_value_heads": 2, "max_position_embeddings": 8192,
        "tie_word_embeddings": True,
    },
    "model.vision_tower.config": {
        "model_type": "clip_vision_model", "hidden_size": 1024, "intermediate_size": 4096, "num_hidden_layers": 24,
        "num_attention_heads": 16, "image_size": 336, "patch_size": 14,
    },
    "model.model_max_length": 8192,
    "optim.lr": 2.0e-5,
}  # fmt: skip
SHAPES = {"tiny": (3, 40, 56), "real": (12, 900, 336)}  # images a sample, words per sample, picture side
WORDS = (
    "the", "model", "predicts", "a", "number", "from", "input", "features", "and", "fits", "a", "line", "through",
    "the", "data", "points",
)  # fmt: skip


def synthetic_rows(count: int, images: int, words: int, side: int, seed: int = 0) -> list[dict]:
    """Samples of noise pictures, each followed by an equal share of the words."""
    rng = np.random.default_rng(seed)
    pick = random.Random(seed)
    rows = []
    for n in range(count):
        row_images, texts = [], []
        for _ in range(images):
            buffer = io.BytesIO()
            Image.fromarray(rng.integers(0, 255, (side, side, 3), dtype=np.uint8)).save(buffer, format="JPEG")
            row_images += [{"bytes": buffer.getvalue(), "path": "noise.jpg"}, None]
            texts += [None, " ".join(pick.choice(WORDS) for _ in range(words // images))]
        rows.append({"images": row_images, "texts": texts, "text_ocr_list": texts, "metadata": json.dumps({"n": n}),
                     "image_num": images, "text_num": images, "token_num": 0})  # fmt: skip
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=sorted(SHAPES), default="tiny")
    parser.add_argument("--batch", type=int, default=4, help="samples per step")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    images, words, side = SHAPES[args.size]
    overrides = {"data.num_workers": 0, "data.shuffle": False}
    if args.size == "real":
        overrides.update(REAL_SIZE)
    cfg = load_train_config(TINY, overrides)
    processes = start()
    try:
        with tempfile.TemporaryDirectory() as folder:
            rows = synthetic_rows(args.batch * (args.repeat + 1), images, words, side)
            shards = Path(folder) / "shards"
            shards.mkdir()
            pq.write_table(pa.Table.from_pylist(rows, schema=SHARD), shards / "shard-00000.parquet")
            trainer = Trainer(cfg, str(shards), Path(folder) / "run", processes)
            items = list(trainer.stream())[: len(rows)]
        pad = trainer.processor.tokenizer.pad_token_id
        groups = [items[i : i + args.batch] for i in range(0, len(items), args.batch)]
        seconds: dict[str, list[float]] = {"batched": [], "per-sample": []}
        tokens = flops = 0.0
        for index, group in enumerate(groups):
            plans = {"batched": [batches(group, pad)], "per-sample": [batches([item], pad) for item in group]}
            for name, micro in plans.items():
                if processes.device.type == "cuda":
                    torch.cuda.synchronize()
                started = time.perf_counter()
                result = trainer.step(micro)
                if processes.device.type == "cuda":
                    torch.cuda.synchronize()
                if index:  # the first group warms up both
                    seconds[name].append(time.perf_counter() - started)
            tokens, flops = result.tokens, result.flops
    finally:
        stop(processes)
    best = {name: min(values) for name, values in seconds.items()}
    print(f"size {args.size}: {args.batch} samples a step, {tokens} positions ({images} images a sample), "
          f"device {processes.device}, {trainer.dtype or torch.float32}")  # fmt: skip
    for name, value in best.items():
        print(f"{name}: {value:.3f} s a step, {tokens / value:,.0f} tokens/s")
    print(f"speed-up of the padded micro-batch: {best['per-sample'] / best['batched']:.2f}x (best of {args.repeat})")
    if trainer.peak is None:
        print("MFU: unmeasured (no GPU, or no known peak for this one)")
    else:
        name = torch.cuda.get_device_name(processes.device)
        print(f"MFU on {name}: {flops / best['batched'] / trainer.peak:.1%} (batched)")


if __name__ == "__main__":
    main()
