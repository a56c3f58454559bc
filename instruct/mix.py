"""mix: the rewritten conversations with a seeded draw of the original ones, so originals make up
`original_share` of the mix where there are enough of them (MAmmoTH-VL found a mix better than either alone).
An original left out is a drop with its reason, like any other."""

from __future__ import annotations

import math
import random
from typing import Any

from configs.instruct import MixConfig
from instruct.rewrite import ORIGINAL


def originals_wanted(rewritten: int, available: int, share: float) -> int:
    if share >= 1 or rewritten == 0:
        return available if share > 0 else 0
    return min(available, math.floor(rewritten * share / (1 - share) + 1e-9))


def mix(rows: list[dict[str, Any]], cfg: MixConfig) -> list[dict[str, Any]]:
    live = [row for row in rows if row["keep"]]
    originals = sorted(row["item_id"] for row in live if row["origin"] == ORIGINAL)
    wanted = originals_wanted(len(live) - len(originals), len(originals), cfg.original_share)
    chosen = set(random.Random(cfg.seed).sample(originals, wanted))
    out = []
    for row in live:
        if row["origin"] == ORIGINAL and row["item_id"] not in chosen:
            row = {**row, "keep": False, "reason": "mixed_out", "detail": f"{wanted} of {len(originals)} originals"}
        out.append(row)
    return out
