"""In-context examples: RICES (retrieval by image similarity), a seeded random baseline, or none (0-shot).

RICES embeds support and query images with the configured image embedder (unit vectors; dot product = cosine),
keeps one `.npy` per set and embedder on disk so a rerun embeds nothing, and takes the top k by dot product,
ordered so the most similar example comes last, right before the query. The query never serves as its own
example: a support item with the query's id or the query's image bytes is never chosen (there is no
"including self" mode).
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import random
from pathlib import Path

import numpy as np
from PIL import Image

from configs.eval import RicesConfig
from eval.items import Example
from pipeline.models.embed import ImageEmbedder, load_image_embedder

logger = logging.getLogger(__name__)


def load_embedder(cfg: RicesConfig) -> ImageEmbedder:
    return load_image_embedder(cfg.image_backend, cfg.image_model, cfg.image_pretrained, cfg.device, cfg.batch_size)


def cached_embeddings(examples: list[Example], embedder: ImageEmbedder, cache_dir: Path, set_name: str) -> np.ndarray:
    """One unit row per example, read from `cache_dir` when this set was embedded by this embedder before."""
    key = hashlib.sha256(embedder.name.encode())
    for example in examples:
        key.update(example.id.encode() + bytes.fromhex(example.image_digest))
    path = cache_dir / f"{set_name}-{key.hexdigest()[:16]}.npy"
    if path.is_file():
        return np.load(path)
    logger.info("embedding %d images of %s with %s", len(examples), set_name, embedder.name)
    vectors = embedder.embed([Image.open(io.BytesIO(example.image)).convert("RGB") for example in examples])
    cache_dir.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f"{path.stem}.partial-{os.getpid()}.npy")
    np.save(partial, vectors)
    partial.replace(path)
    return vectors


def excluded_shots(query: Example, support: list[Example]) -> set[int]:
    """Support positions that are the query itself: its id, or its very image."""
    digest = query.image_digest
    return {i for i, example in enumerate(support) if example.id == query.id or example.image_digest == digest}


def most_similar(query_vector: np.ndarray, support_vectors: np.ndarray, k: int, excluded: set[int]) -> list[int]:
    """The k most similar support positions by dot product, least similar first (ties: the earlier item closer)."""
    if k == 0:
        return []
    scores = support_vectors @ query_vector
    ranked = [int(i) for i in np.argsort(-scores, kind="stable") if int(i) not in excluded]
    return ranked[:k][::-1]


def random_shots(seed: int, benchmark: str, query: Example, size: int, k: int, excluded: set[int]) -> list[int]:
    """k support positions drawn from (seed, benchmark, query id): the same shots whatever order queries run in."""
    allowed = [i for i in range(size) if i not in excluded]
    return random.Random(f"{seed}:{benchmark}:{query.id}").sample(allowed, min(k, len(allowed)))
