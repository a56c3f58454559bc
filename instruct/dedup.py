"""dedup: near-duplicate conversations across the whole corpus, by the MiniLM embedding of their text. The first in
corpus order stays; a later one at or above the threshold to any kept one is dropped, naming the one it repeats.
Keyframes of one slide share their clip's text, so their rewrites come out alike."""

from __future__ import annotations

from typing import Any

import numpy as np

from configs.instruct import DedupConfig
from instruct.text import conversation_text
from pipeline.models.embed import TextEmbedder


def candidate_id(row: dict[str, Any]) -> str:
    return f"{row['item_id']}#{row['origin']}"


def near_duplicates(rows: list[dict[str, Any]], cfg: DedupConfig, embedder: TextEmbedder) -> list[dict[str, Any]]:
    out = [{**row, "duplicate_of": None} for row in rows]
    live = [i for i, row in enumerate(out) if row["keep"]]
    if not cfg.enabled or not live:
        return out
    vectors = embedder.embed([conversation_text(out[i]["conversations"]) for i in live])
    kept: list[int] = []
    for position, i in enumerate(live):
        if kept:
            scores = vectors[kept] @ vectors[position]
            best = int(np.argmax(scores))
            if scores[best] >= cfg.threshold:
                twin = out[live[kept[best]]]
                out[i] |= {"keep": False, "reason": "near_duplicate", "duplicate_of": candidate_id(twin),
                           "detail": f"cosine {float(scores[best]):.3f}"}  # fmt: skip
                continue
        kept.append(position)
    return out
