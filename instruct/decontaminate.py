"""decontaminate: an item whose image or question is a near-duplicate of an eval benchmark's query is dropped, so
our own few-shot numbers stay honest. Images are compared by the image embedder RICES uses (its benchmark vectors
are RICES's on-disk cache, so a set is embedded once for both), questions by the MiniLM text embedder; the same
image bytes are a match whatever the embedder says. A set that cannot be read is recorded as not checked."""

from __future__ import annotations

import hashlib
import io
import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from configs.eval import load_eval_config
from configs.instruct import DecontaminateConfig
from configs.schema import EmbeddingsConfig
from eval.items import Example, load_examples
from eval.rices import cached_embeddings
from eval.sources import DatasetUnavailable
from instruct.text import questions
from pipeline.models.embed import ImageEmbedder, TextEmbedder, load_image_embedder, load_text_embedder
from storage.tables import digest

logger = logging.getLogger(__name__)
_lock = threading.Lock()
_indexes: dict[str, BenchmarkIndex] = {}


@dataclass(frozen=True)
class BenchmarkIndex:
    """The query sets' ids, image digests and vectors, and question vectors; `unchecked` says which sets were not
    read and why."""

    ids: list[str]
    digests: dict[str, str]
    image_vectors: np.ndarray
    question_vectors: np.ndarray
    unchecked: dict[str, str]


def image_embedder(cfg: EmbeddingsConfig) -> ImageEmbedder:
    return load_image_embedder(cfg.image_backend, cfg.image_model, cfg.image_pretrained, cfg.device,
                               cfg.image_batch_size)  # fmt: skip


def benchmark_examples(cfg: DecontaminateConfig) -> tuple[dict[str, list[Example]], dict[str, str], Path]:
    """The configured query sets by name, the ones that could not be read (reason), and RICES's cache folder."""
    eval_config = load_eval_config(cfg.eval_config)
    sets, unchecked = {}, {}
    for name in cfg.sets:
        if name not in eval_config.datasets:
            raise ValueError(f"decontaminate.sets: {name!r} is no datasets entry of the eval config")
        dataset = eval_config.datasets[name]
        try:
            if dataset.path is None and not cfg.use_hub:
                raise DatasetUnavailable(f"no local path: set datasets.{name}.path in the eval config (or use_hub)")
            sets[name] = load_examples(name, dataset, eval_config.mathverse_versions)
        except DatasetUnavailable as error:
            if cfg.missing == "fail":
                raise
            unchecked[name] = str(error)
            logger.warning("decontaminate: %s not checked: %s", name, error)
    return sets, unchecked, Path(eval_config.rices.cache_dir).expanduser()


def benchmark_index(cfg: DecontaminateConfig, embeddings: EmbeddingsConfig) -> BenchmarkIndex:
    """Built once per process and settings, for every batch."""
    key = digest([cfg.model_dump(mode="json"), embeddings.model_dump(mode="json")])
    with _lock:
        if key not in _indexes:
            sets, unchecked, cache_dir = benchmark_examples(cfg)
            examples = [example for name in sets for example in sets[name]]
            embedder = image_embedder(embeddings)
            vectors = [cached_embeddings(sets[name], embedder, cache_dir, name) for name in sets]
            texts = load_text_embedder(embeddings.text_model, embeddings.device)
            _indexes[key] = BenchmarkIndex(
                ids=[example.id for example in examples],
                digests={example.image_digest: example.id for example in examples},
                image_vectors=np.concatenate(vectors) if vectors else np.zeros((0, 1)),
                question_vectors=texts.embed([example.question for example in examples]),
                unchecked=unchecked,
            )
        return _indexes[key]


def _best(vectors: np.ndarray, index: np.ndarray) -> tuple[int, float]:
    if not len(vectors) or not len(index):
        return -1, 0.0
    scores = vectors @ index.T
    row, column = np.unravel_index(int(np.argmax(scores)), scores.shape)
    return int(column), float(scores[row, column])


def contamination(
    candidates: list[dict[str, Any]],
    items: dict[str, dict[str, Any]],
    index: BenchmarkIndex,
    cfg: DecontaminateConfig,
    images: ImageEmbedder,
    texts: TextEmbedder,
) -> list[dict[str, Any]]:
    """Each candidate with keep/reason, the benchmark item it matches and the similarity."""
    image_scores: dict[str, tuple[str | None, float]] = {}
    for item_id in dict.fromkeys(c["item_id"] for c in candidates if c["keep"]):
        item = items[item_id]
        exact = [index.digests.get(hashlib.sha256(image["bytes"]).hexdigest()) for image in item["images"]]
        if any(exact):
            image_scores[item_id] = (next(e for e in exact if e), 1.0)
            continue
        pictures = [Image.open(io.BytesIO(image["bytes"])).convert("RGB") for image in item["images"]]
        column, score = _best(images.embed(pictures) if pictures else np.zeros((0, 1)), index.image_vectors)
        image_scores[item_id] = (index.ids[column] if column >= 0 else None, score)
    rows = []
    for candidate in candidates:
        row = {**candidate, "benchmark_item": None, "similarity": None}
        if candidate["keep"]:
            match, score = image_scores[candidate["item_id"]]
            asked = questions(candidate["conversations"])
            column, text_score = _best(texts.embed(asked), index.question_vectors)
            if score >= cfg.image_threshold:
                row |= {"keep": False, "reason": "benchmark_image", "benchmark_item": match, "similarity": score}
            elif text_score >= cfg.question_threshold:
                row |= {"keep": False, "reason": "benchmark_question", "benchmark_item": index.ids[column],
                        "similarity": text_score}  # fmt: skip
            else:
                row["similarity"] = round(max(score, text_score), 4)
        rows.append(row)
    return rows
