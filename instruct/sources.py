"""Items from the two kinds of source: our shards (one per kept keyframe) and the image-text sets users bring.

A shard item is found through the per-image identity the shard's metadata carries (video, clip, keyframe, name,
position): its image is the keyframe's bytes, its OCR the OCR the clip's text position carries after the speech
(`text_ocr_list`), its transcript that speech with the speech of `neighbours` clips on either side (never across
the end-of-video marker). A user set is a Parquet/JSON/JSONL file, a folder of them or a `datasets` folder
(`save_to_disk`), in the LLaVA conversation format, as question/answer pairs, or as captions; its relative image
paths start from the file's folder. A row that cannot become an item (no image it can read, no text) is counted
with its reason, never dropped silently.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from configs.instruct import ShardSourceConfig, UserSourceConfig
from eval.sources import image_bytes, read_local_rows
from storage.shards import ShardSet

QUESTION_KEYS = ("question", "query", "prompt", "instruction")
ANSWER_KEYS = ("answer", "response", "output", "label")
CAPTION_KEYS = ("caption", "text", "description")
IMAGE_KEYS = ("image", "images", "image_path", "img")


def item(item_id: str, source: str, images: list[dict], **fields: Any) -> dict[str, Any]:
    defaults = {"ocr": "", "transcript": "", "caption": "", "conversations": [], "action": "rewrite",
                "category": None, "metadata": "{}"}  # fmt: skip
    return {"item_id": item_id, "source": source, "images": images, **defaults, **fields}


def _clip_of(image: dict[str, Any]) -> tuple[str, int]:
    return image["video_id"], image["clip_id"]


def _speech_positions(sample: dict[str, Any], marker: str) -> list[int]:
    return [i for i, text in enumerate(sample["texts"]) if text is not None and text.strip() and text != marker]


def sample_items(sample: dict[str, Any], shard: str, index: int, cfg: ShardSourceConfig) -> Iterator[dict[str, Any]]:
    """The items of one shard row: each image with the OCR and speech of its clip. A clip's images come before its
    text position, so an image's clip speaks at the first text position after it, unless an image of another clip
    comes first (a clip without speech)."""
    metadata = json.loads(sample["metadata"])
    by_position = {image["position"]: image for image in metadata["images"]}
    speech = _speech_positions(sample, cfg.end_of_video_marker)
    videos = _video_spans(sample, cfg.end_of_video_marker)
    for position, identity in sorted(by_position.items()):
        own = None
        for later in range(position + 1, len(sample["texts"])):
            if later in by_position and _clip_of(by_position[later]) != _clip_of(identity):
                break
            if later in speech:
                own = later
                break
        ocr, transcript = "", ""
        if own is not None:
            text, text_ocr = sample["texts"][own], sample["text_ocr_list"][own] or ""
            ocr = text_ocr[len(text) :].strip() if text_ocr.startswith(text) else ""
            span = [p for p in speech if videos[p] == videos[own]]
            at = span.index(own)
            transcript = " ".join(
                sample["texts"][p].strip() for p in span[max(0, at - cfg.neighbours) : at + cfg.neighbours + 1]
            )
        if len((ocr + " " + transcript).split()) < cfg.min_context_words:
            continue
        image = sample["images"][position]
        meta = {**identity, "shard": shard, "sample": index, "clip_text_position": own}
        yield item(f"{cfg.tag}/{identity['name']}", cfg.tag, [{"bytes": image["bytes"], "path": identity["name"]}],
                   ocr=ocr, transcript=transcript, action=cfg.action, metadata=json.dumps(meta))  # fmt: skip


def _video_spans(sample: dict[str, Any], marker: str) -> list[int]:
    """The video each position belongs to, counted by the end-of-video markers before it."""
    spans, video = [], 0
    for text in sample["texts"]:
        if text == marker:
            video += 1
        spans.append(video)
    return spans


def shard_items(shard_set: ShardSet, entry: dict[str, Any], cfg: ShardSourceConfig) -> Iterator[dict[str, Any]]:
    for index, sample in enumerate(shard_set.read(entry).to_pylist()):
        yield from sample_items(sample, entry["file"], index, cfg)


def _first(row: dict[str, Any], keys: tuple[str, ...]) -> Any:
    return next((row[key] for key in keys if row.get(key) not in (None, "", [])), None)


def row_format(row: dict[str, Any]) -> str:
    if "conversations" in row:
        return "llava"
    if _first(row, QUESTION_KEYS) is not None and _first(row, ANSWER_KEYS) is not None:
        return "qa"
    return "caption"


def _images(row: dict[str, Any], base: Path) -> tuple[list[dict], int]:
    """The row's images as {bytes, path}, and how many it names that cannot be read."""
    value = _first(row, IMAGE_KEYS)
    values = value if isinstance(value, list) else [] if value is None else [value]
    images, missing = [], 0
    for number, one in enumerate(values):
        data = image_bytes(one, base)
        if data is None:
            missing += 1
            continue
        name = one.get("path") if isinstance(one, dict) else one if isinstance(one, str) else None
        images.append({"bytes": data, "path": Path(name).name if name else f"image-{number}.jpg"})
    return images, missing


def _turns(conversations: list[dict[str, Any]]) -> list[dict[str, str]]:
    roles = {"human": "human", "user": "human", "gpt": "gpt", "assistant": "gpt"}
    return [{"from": roles.get(str(turn.get("from", turn.get("role"))), "human"),
             "value": str(turn.get("value", turn.get("content", "")))} for turn in conversations]  # fmt: skip


def row_item(row: dict[str, Any], base: Path, tag: str, number: int, cfg: UserSourceConfig) -> dict[str, Any] | str:
    """One item, or the reason the row is none."""
    images, missing = _images(row, base)
    if missing:
        return "unreadable_image"
    kind = row_format(row) if cfg.format == "auto" else cfg.format
    fields: dict[str, Any] = {"action": cfg.action, "category": cfg.category}
    if kind == "llava":
        fields["conversations"] = _turns(row.get("conversations") or [])
    elif kind == "qa":
        question, answer = _first(row, QUESTION_KEYS), _first(row, ANSWER_KEYS)
        if question is None or answer is None:
            return "no_question_or_answer"
        answer = answer[0] if isinstance(answer, list) else answer
        prefix = "<image>\n" * len(images)
        fields["conversations"] = [{"from": "human", "value": prefix + str(question)},
                                   {"from": "gpt", "value": str(answer)}]  # fmt: skip
    else:
        fields["caption"] = str(_first(row, CAPTION_KEYS) or "")
    if not fields.get("conversations") and not fields.get("caption"):
        return "no_text"
    own_id = row.get("id", row.get("question_id", number))
    meta = {"row": number, "id": str(own_id), "format": kind}
    return item(f"{tag}/{own_id}", tag, images, metadata=json.dumps(meta), **fields)


def _dataset_rows(folder: Path) -> Iterator[tuple[dict[str, Any], Path]]:
    import datasets

    dataset = datasets.load_from_disk(str(folder))
    if isinstance(dataset, datasets.DatasetDict):
        dataset = dataset[next(iter(dataset))]
    for name, feature in dataset.features.items():
        if isinstance(feature, datasets.Image):
            dataset = dataset.cast_column(name, datasets.Image(decode=False))
    for row in dataset:
        yield row, folder


def source_rows(path: Path) -> Iterator[tuple[dict[str, Any], Path]]:
    if (path / "dataset_info.json").is_file() or (path / "dataset_dict.json").is_file():
        return _dataset_rows(path)
    return read_local_rows(path, "")


def user_items(tag: str, cfg: UserSourceConfig) -> tuple[list[dict[str, Any]], Counter[str]]:
    """The items of a user set, and the rows that became none, by reason."""
    path = Path(cfg.path).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"source {tag}: {cfg.path}: no such file or folder")
    items, skipped = [], Counter()
    seen: set[str] = set()
    for number, (row, base) in enumerate(source_rows(path)):
        if cfg.max_items is not None and len(items) >= cfg.max_items:
            break
        made = row_item(row, base, tag, number, cfg)
        if isinstance(made, str):
            skipped[made] += 1
        elif made["item_id"] in seen:
            skipped["repeated_id"] += 1
        else:
            seen.add(made["item_id"])
            items.append(made)
    return items, skipped
