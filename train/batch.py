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
    positions: dict[int, int] = field(default_factory=dict)  # consumer -> position after its last sample here
    skipped: Counter[str] = field(default_factory=Counter)
    dropped_images: Counter[str] = field(default_factory=Counter)

    @property
    def images(self) -> int:
        return self.pixel_values.shape[0]

    @property
    def tokens(self) -> int:
        return sum(self.lengths)

    def model_inputs(self, device: torch.device, dtype: torch.dtype) -> dict[str, torch.Tensor]:
        return {
            "input_ids": self.input_ids.to(device),
            "attention_mask": self.attention_mask.to(device),
            "labels": self.labels.to(device),
            "pixel_values": self.pixel_values.to(device, dtype),
        }


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
