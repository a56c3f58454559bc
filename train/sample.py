"""A shard row as LLaVA trains on it: text with one `<image>` per kept image, token ids, labels and pixels.

The paper's rules: segments joined by one space, no space on either side of a placeholder, one space between two
placeholders, the tokenizer's EOS appended; at most `max_images` images, the first in document order, a dropped
image losing its placeholder while its neighbouring text stays. Labels are -100 on image embeddings and on every
token before the first image (BOS and leading text included); EOS and all text after the first image are trained.
"""

from __future__ import annotations

import io
from collections import Counter
from dataclasses import dataclass, field

import torch
from PIL import Image
from transformers import LlavaProcessor

IGNORE = -100  # the label cross-entropy skips


@dataclass(frozen=True)
class Document:
    text: str
    images: list[bytes]
    dropped: Counter[str] = field(default_factory=Counter)


@dataclass(frozen=True)
class Encoded:
    input_ids: torch.Tensor
    labels: torch.Tensor
    pixel_values: torch.Tensor
    dropped: Counter[str]


def render(images: list[dict | None], texts: list[str | None], placeholder: str, max_images: int) -> Document:
    """The interleaved text of one row (`images[i]` set where position i is an image, `texts[i]` where text)."""
    pieces: list[str | None] = []  # None marks an image
    kept: list[bytes] = []
    dropped: Counter[str] = Counter()
    for image, text in zip(images, texts, strict=True):
        if image is not None:
            if len(kept) < max_images:
                kept.append(image["bytes"])
                pieces.append(None)
            else:
                dropped["over_max_images"] += 1
        elif text is not None and text.strip():
            pieces.append(text.strip())
    out = []
    for i, piece in enumerate(pieces):
        if i and (pieces[i - 1] is None) == (piece is None):
            out.append(" ")
        out.append(placeholder if piece is None else piece)
    return Document("".join(out), kept, dropped)


def _decode(jpeg: bytes) -> Image.Image:
    return Image.open(io.BytesIO(jpeg)).convert("RGB")


def fit_whole_images(ids: list[int], image_token_id: int, image_len: int, max_length: int) -> tuple[list[int], int]:
    """The first `max_length` ids where an image's run of `image_len` embeddings is kept whole or dropped entirely
    (the text after a dropped image still fills the room left); returns the ids and how many images were dropped."""
    kept: list[int] = []
    dropped = 0
    i = 0
    while i < len(ids) and len(kept) < max_length:
        if ids[i] == image_token_id:
            if len(kept) + image_len <= max_length:
                kept.extend(ids[i : i + image_len])
            else:
                dropped += 1
            i += image_len
        else:
            kept.append(ids[i])
            i += 1
    dropped += ids[i:].count(image_token_id) // image_len
    return kept, dropped


def labels_for(ids: torch.Tensor, image_token_id: int) -> torch.Tensor:
    labels = ids.clone()
    is_image = ids == image_token_id
    labels[is_image] = IGNORE
    first = int(is_image.nonzero()[0, 0])
    labels[:first] = IGNORE
    return labels


def encode(document: Document, processor: LlavaProcessor, max_length: int) -> Encoded | str:
    """Token ids with every image expanded to its embeddings, truncated to `max_length` by whole images; or the
    reason the sample is skipped."""
    if not document.images:
        return "no_image"
    tokenizer = processor.tokenizer
    pictures = [_decode(jpeg) for jpeg in document.images]
    batch = processor(text=document.text, images=pictures, return_tensors="pt")
    image_token_id = processor.image_token_id
    ids = batch["input_ids"][0].tolist() + [tokenizer.eos_token_id]
    image_len = ids.count(image_token_id) // len(pictures)
    kept, truncated = fit_whole_images(ids, image_token_id, image_len, max_length)
    images_left = len(pictures) - truncated
    if images_left == 0:
        return "no_image_within_max_length"
    dropped = Counter(document.dropped)
    if truncated:
        dropped["truncation"] += truncated
    input_ids = torch.tensor(kept, dtype=torch.long)
    return Encoded(input_ids, labels_for(input_ids, image_token_id), batch["pixel_values"][:images_left], dropped)
