"""The samples of a shard set, split across ranks and dataloader workers, in a seeded order that resumes exactly.

Each (rank, worker) pair is one consumer. Consumers take whole row groups in turn when there are at least as many
row groups as consumers (each reads only its own), otherwise every n-th sample. Within a consumer the order is a
shuffle buffer driven by a seeded RNG over sample ids only, so the whole order is known without reading a byte:
resuming at position p replays the ids, keeps the unread ones, and fetches only the row groups still needed.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial

import torch
from torch.utils.data import IterableDataset, get_worker_info
from transformers import LlavaProcessor

from configs.train import DataConfig
from train.batch import Batch, collate
from train.sample import Encoded, encode, render
from train.shardset import Unit, read_unit


@dataclass(frozen=True)
class Item:
    sample: Encoded
    sample_id: int  # the row's place in the shard set (shards in index order, then rows)
    consumer: int
    position: int  # this consumer's position after the sample (samples skipped on the way included)
    skipped: Counter[str]


def consumer_ids(units: list[Unit], consumer: int, consumers: int) -> list[int]:
    """The sample ids one consumer reads in an epoch, in reading order."""
    if len(units) >= consumers:
        mine = units[consumer::consumers]
        return [unit.first_id + row for unit in mine for row in range(unit.rows)]
    return [i for unit in units for i in range(unit.first_id, unit.first_id + unit.rows) if i % consumers == consumer]


def buffered_order(ids: list[int], buffer: int, rng: random.Random) -> list[int]:
    """The order a shuffle buffer of `buffer` samples emits `ids` in: fill, then emit a random one per read."""
    held: list[int] = []
    order: list[int] = []
    for sample_id in ids:
        held.append(sample_id)
        if len(held) >= buffer:
            pick = rng.randrange(len(held))
            held[pick], held[-1] = held[-1], held[pick]
            order.append(held.pop())
    rng.shuffle(held)
    return order + held


class ShardStream(IterableDataset):
    def __init__(
        self,
        units: list[Unit],
        cfg: DataConfig,
        processor: LlavaProcessor,
        max_length: int,
        *,
        rank: int,
        world_size: int,
        epochs: int,
        seed: int,
        start: dict[int, int] | None = None,
        rotation: int = 0,
    ) -> None:
        self.units = units
        self.cfg = cfg
        self.processor = processor
        self.max_length = max_length
        self.rank = rank
        self.world_size = world_size
        self.epochs = epochs
        self.seed = seed
        self.start = start or {}
        self.rotation = rotation

    @property
    def workers(self) -> int:
        return max(1, self.cfg.num_workers)

    @property
    def consumers(self) -> int:
        return self.world_size * self.workers

    def epoch_units(self, epoch: int) -> list[Unit]:
        """The row groups in this epoch's reading order: the same on every consumer, so they split them exactly."""
        units = list(self.units)
        if self.cfg.shuffle:
            random.Random(f"{self.seed}-units-{epoch}").shuffle(units)
        return units

    def epoch_order(self, consumer: int, epoch: int) -> list[int]:
        ids = consumer_ids(self.epoch_units(epoch), consumer, self.consumers)
        if not self.cfg.shuffle:
            return ids
        return buffered_order(ids, self.cfg.shuffle_buffer, random.Random(f"{self.seed}-{consumer}-{epoch}"))

    def __iter__(self) -> Iterator[Item]:
        worker = get_worker_info()
        # The dataloader takes batches from its workers in turn, starting at worker 0; a resumed run rotates which
        # consumer each worker serves so the turn continues where the interrupted run was. (Once a worker runs dry
        # the turn skips it, so a resume in an epoch's last, uneven batches may order them differently.)
        worker_id = worker.id if worker is not None else 0
        consumer = self.rank * self.workers + (worker_id + self.rotation) % self.workers
        skipped: Counter[str] = Counter()
        start = self.start.get(consumer, 0)
        for position, (sample_id, row) in enumerate(self._rows(consumer, start), start=start + 1):
            document = render(row["images"], row[self.cfg.text_column], self.processor.image_token,
                              self.cfg.max_images_per_sample)  # fmt: skip
            encoded = encode(document, self.processor, self.max_length)
            if isinstance(encoded, str):
                skipped[encoded] += 1
                continue
            yield Item(encoded, sample_id, consumer, position, skipped)
            skipped = Counter()

    def _rows(self, consumer: int, start: int) -> Iterator[tuple[int, dict]]:
        """The rows of this consumer's order from `start` on; each epoch reads its row groups once, in order."""
        columns = ["images", self.cfg.text_column]
        base = 0
        for epoch in range(self.epochs):
            order = self.epoch_order(consumer, epoch)
            if start >= base + len(order):
                base += len(order)
                continue
            wanted = order[max(0, start - base) :]
            base += len(order)
            needed = set(wanted)
            pending = iter([unit for unit in self.epoch_units(epoch) if _holds(unit, needed)])
            held: dict[int, dict] = {}
            for sample_id in wanted:
                while sample_id not in held:
                    unit = next(pending)
                    rows = read_unit(unit, columns)
                    held.update({unit.first_id + i: row for i, row in enumerate(rows) if unit.first_id + i in needed})
                yield sample_id, held.pop(sample_id)


def _holds(unit: Unit, ids: set[int]) -> bool:
    return any(unit.first_id + row in ids for row in range(unit.rows))


def batches(items: list[Item], pad_token_id: int) -> Batch:
    """The dataloader's collate: one micro-batch, with where its consumer got to and what it skipped."""
    batch = collate([item.sample for item in items], pad_token_id)
    batch.sample_ids = [item.sample_id for item in items]
    for item in items:
        batch.positions[item.consumer] = max(batch.positions.get(item.consumer, 0), item.position)
        batch.skipped.update(item.skipped)
    return batch


def loader(stream: ShardStream, batch_size: int, pad_token_id: int) -> torch.utils.data.DataLoader:
    workers = stream.cfg.num_workers
    return torch.utils.data.DataLoader(
        stream,
        batch_size=batch_size,
        collate_fn=partial(batches, pad_token_id=pad_token_id),
        num_workers=workers,
        prefetch_factor=stream.cfg.prefetch_factor if workers else None,
        persistent_workers=False,
    )
