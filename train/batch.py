"""Encoded samples padded into one micro-batch. Padding is masked by the attention mask, never by pad id: SmolLM2's
pad token is its EOS, and masking by id would also drop the EOS labels."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import torch

from train.sample import IGNORE, Encoded


@dataclass
class Batch:
    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    labels: torch.Tensor
    pixel_values: torch.Tensor
    lengths: list[int]
    sample_ids: list[int] = field(default_factory=list)
    positions: dict[int, int] = field(default_factory=dict)  # consumer -> position after its last sample here
    skipped: Counter[str] = field(default_factory=Counter)
    dropped_images: Counter[str] = field(default_factory=Counter)

    @property
    def images(self) -> int:
        return self.pixel_values.shape[0]

    @property
    def tokens(self) -> int:
        return sum(self.lengths)

    @property
    def targets(self) -> int:
        """Label positions the shifted loss counts (a sequence's first token is never a target)."""
        return int((self.labels[:, 1:] != IGNORE).sum())

    def model_inputs(self, device: torch.device) -> dict[str, torch.Tensor]:
        names = ("input_ids", "attention_mask", "labels", "pixel_values")
        return {name: getattr(self, name).to(device, non_blocking=True) for name in names}


def collate(samples: list[Encoded], pad_token_id: int) -> Batch:
    width = max(len(sample.input_ids) for sample in samples)
    input_ids = torch.full((len(samples), width), pad_token_id, dtype=torch.long)
    labels = torch.full((len(samples), width), IGNORE, dtype=torch.long)
    attention_mask = torch.zeros((len(samples), width), dtype=torch.long)
    dropped: Counter[str] = Counter()
    for row, sample in enumerate(samples):
        length = len(sample.input_ids)
        input_ids[row, :length] = sample.input_ids
        labels[row, :length] = sample.labels
        attention_mask[row, :length] = 1
        dropped.update(sample.dropped)
    return Batch(
        input_ids=input_ids,
        attention_mask=attention_mask,
        labels=labels,
        pixel_values=torch.cat([sample.pixel_values for sample in samples]),
        lengths=[len(sample.input_ids) for sample in samples],
        dropped_images=dropped,
    )
