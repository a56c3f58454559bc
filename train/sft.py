"""Supervised fine-tuning on an instruct export (`textbook instruct --out DIR`): its conversations in the llava_v1
template, the loss on the answers only.

    <system> USER: <image>\\n<question 1> ASSISTANT: <answer 1><eos>USER: <question 2> ASSISTANT: <answer 2><eos>

The template is the one evaluation prompts with (`configs/eval.yaml`, `prompt`), so a fine-tuned model is asked
as it was taught. Rounds are tokenized one piece at a time, as LLaVA's `preprocess_v1` does: the system and every
question (with the image placeholders, expanded to their embeddings by the processor) are labelled -100; each
answer and its EOS are the targets. A record with no image, or whose images or first answer do not fit in
`model_max_length`, is skipped with its reason. The export's `instruct.parquet` (image bytes inside) is read.

`SftTrainer` is the pretraining `Trainer` with this data in place of a shard set; checkpoints pin the export by the
digest of its parquet file, so a resumed run refuses an export that changed under it.
"""

from __future__ import annotations

import io
import random
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import torch
from PIL import Image
from torch.utils.data import IterableDataset, get_worker_info
from transformers import LlavaProcessor

from configs.eval import PromptConfig, load_eval_config
from configs.schema import ConfigError
from configs.train import DataConfig
from pipeline.models.assets import file_digests
from storage.shards import ShardSet
from train.run import Trainer
from train.sample import IGNORE, Encoded
from train.stream import Item

EXPORT_FILE = "instruct.parquet"


def is_sft_export(path: str | Path) -> bool:
    return (Path(path) / EXPORT_FILE).is_file()


@dataclass(frozen=True)
class SftSet:
    """An instruct export seen as a training set: its records, and the identity a checkpoint pins (`url`, `set_id`,
    `shards`, as a shard set has)."""

    folder: Path
    records: tuple[dict[str, Any], ...]
    set_id: str

    @classmethod
    def at(cls, folder: str | Path) -> SftSet:
        folder = Path(folder)
        path = folder / EXPORT_FILE
        if not path.is_file():
            raise FileNotFoundError(f"no {EXPORT_FILE} in {folder}: run `textbook instruct --out {folder}` first")
        records = pq.read_table(path, columns=["id", "images", "conversations"]).to_pylist()
        return cls(folder, tuple(records), file_digests(path)[str(path)][:16])

    @property
    def url(self) -> str:
        return str(self.folder)

    @property
    def shards(self) -> tuple[dict[str, Any], ...]:
        return ({"file": EXPORT_FILE},)


def _pieces(conversation: list[dict[str, str]], prompt: PromptConfig, eos: str) -> list[tuple[str, bool]]:
    """(text, trained) pieces of the llava_v1 rendering."""
    pieces: list[tuple[str, bool]] = []
    opening = prompt.system + " "
    for index in range(0, len(conversation) - 1, 2):
        question, answer = conversation[index]["value"], conversation[index + 1]["value"]
        pieces.append((f"{opening}{prompt.user_role}: {question} {prompt.assistant_role}:", False))
        pieces.append((f" {answer}{eos}", True))
        opening = ""
    return pieces


def encode_conversation(
    record: dict[str, Any], processor: LlavaProcessor, prompt: PromptConfig, max_length: int
) -> Encoded | str:
    """Token ids, labels on the answers only, and pixels; or the reason the record is skipped."""
    if not record["images"]:
        return "no_image"
    pictures = [Image.open(io.BytesIO(image["bytes"])).convert("RGB") for image in record["images"]]
    tokenizer = processor.tokenizer
    ids: list[int] = []
    labels: list[int] = []
    pixel_values = None
    for number, (text, trained) in enumerate(_pieces(record["conversations"], prompt, tokenizer.eos_token)):
        if number == 0:
            batch = processor(text=text, images=pictures, return_tensors="pt")
            piece, pixel_values = batch["input_ids"][0].tolist(), batch["pixel_values"]
        else:
            piece = tokenizer(text, add_special_tokens=False)["input_ids"]
        ids += piece
        labels += piece if trained else [IGNORE] * len(piece)
    image_positions = [i for i, token in enumerate(ids) if token == processor.image_token_id]
    if image_positions and image_positions[-1] >= max_length:
        return "no_image_within_max_length"
    ids, labels = ids[:max_length], labels[:max_length]
    if all(label == IGNORE for label in labels):
        return "no_answer_within_max_length"
    return Encoded(torch.tensor(ids), torch.tensor(labels), pixel_values, Counter())


class SftStream(IterableDataset):
    """The export's records in a seeded order per epoch, every n-th to each (rank, worker) consumer; `start` skips
    what a consumer already trained on, so a resumed run continues where it stopped."""

    def __init__(self, data: SftSet, cfg: DataConfig, processor: LlavaProcessor, prompt: PromptConfig,
                 max_length: int, *, rank: int, world_size: int, epochs: int, seed: int,
                 start: dict[int, int] | None = None) -> None:  # fmt: skip
        self.data, self.cfg, self.processor, self.prompt, self.max_length = data, cfg, processor, prompt, max_length
        self.rank, self.world_size, self.workers = rank, world_size, max(1, cfg.num_workers)
        self.epochs, self.seed, self.start = epochs, seed, start or {}

    @property
    def consumers(self) -> int:
        return self.world_size * self.workers

    def order(self, consumer: int) -> list[int]:
        ids: list[int] = []
        for epoch in range(self.epochs):
            epoch_ids = list(range(len(self.data.records)))
            if self.cfg.shuffle:
                random.Random(f"{self.seed}-sft-{epoch}").shuffle(epoch_ids)
            ids += epoch_ids[consumer :: self.consumers]
        return ids

    def __iter__(self) -> Iterator[Item]:
        worker = get_worker_info()
        consumer = self.rank * self.workers + (worker.id if worker is not None else 0)
        start = self.start.get(consumer, 0)
        skipped: Counter[str] = Counter()
        for position, sample_id in enumerate(self.order(consumer)[start:], start=start + 1):
            encoded = encode_conversation(self.data.records[sample_id], self.processor, self.prompt, self.max_length)
            if isinstance(encoded, str):
                skipped[encoded] += 1
                continue
            yield Item(encoded, sample_id, consumer, position, skipped)
            skipped = Counter()


class SftTrainer(Trainer):
    """The pretraining loop, optimizer, checkpoints and exports, over an instruct export."""

    def use_shards(self, shards: Any) -> None:
        if not isinstance(shards, SftSet):
            raise ConfigError("this run's checkpoint pinned another instruct export: train into a new folder")
        self.shards = shards
        self.samples = len(shards.records)
        per_step = self.cfg.run.batch_size * self.cfg.run.grad_accum * self.processes.world_size
        self.total_steps = self.cfg.run.max_steps or max(1, self.samples * self.cfg.run.epochs // per_step)

    def stream(self) -> SftStream:
        stream = SftStream(
            self.shards, self.cfg.data, self.processor, load_eval_config(None).prompt,
            self.cfg.model.model_max_length, rank=self.processes.rank, world_size=self.processes.world_size,
            epochs=self.cfg.run.epochs, seed=self.cfg.run.seed,
            start={int(k): v for k, v in self.state["positions"].items()},
        )  # fmt: skip
        if self.state.get("consumers", stream.consumers) != stream.consumers:
            raise ConfigError("resume with the same number of processes and data.num_workers as the checkpoint")
        self.state["consumers"] = stream.consumers
        return stream


def open_training_data(spec: ShardSet | SftSet | str | Path) -> ShardSet | SftSet:
    """What a run trains on: an instruct export (a folder holding instruct.parquet) for SFT, else a shard set."""
    if isinstance(spec, ShardSet | SftSet):
        return spec
    return SftSet.at(spec) if is_sft_export(spec) else ShardSet.at(str(spec))


def trainer_class(data: ShardSet | SftSet) -> type[Trainer]:
    return SftTrainer if isinstance(data, SftSet) else Trainer
