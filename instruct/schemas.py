"""Arrow schemas of the instruct branch's tables: the contract between its stages, in one place.

Every per-batch table keeps one row per item or candidate conversation with `keep` and a `reason` code, so a drop is
never silent; `conversations` are LLaVA turns (`from`: human | gpt).
"""

from __future__ import annotations

import pyarrow as pa

IMAGE = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
TURN = pa.struct([("from", pa.string()), ("value", pa.string())])
CONVERSATION = pa.list_(TURN)

# One row per item of one source part: what it holds (its images, the text it came with) and where it came from.
ITEMS = pa.schema(
    [
        ("item_id", pa.string()),
        ("source", pa.string()),
        ("images", pa.list_(IMAGE)),
        ("ocr", pa.string()),
        ("transcript", pa.string()),
        ("caption", pa.string()),
        ("conversations", CONVERSATION),  # the original question-answer turns; empty when it has none
        ("action", pa.string()),
        ("category", pa.string()),  # fixed by the source's config, else null
        ("metadata", pa.string()),
    ]
)

TRIAGE = pa.schema(
    [
        ("item_id", pa.string()),
        ("category", pa.string()),
        ("category_by", pa.string()),  # config | rule:<name> | llm | default
        ("action", pa.string()),
        ("keep", pa.bool_()),
        ("reason", pa.string()),
    ]
)

# Candidates: the rewritten conversation and the original one (when the item has one), each a row.
CANDIDATE_FIELDS = [
    ("item_id", pa.string()),
    ("origin", pa.string()),  # rewritten | original
    ("category", pa.string()),
    ("conversations", CONVERSATION),
    ("keep", pa.bool_()),
    ("reason", pa.string()),
    ("detail", pa.string()),
]
REWRITE = pa.schema([*CANDIDATE_FIELDS, ("model", pa.string())])
FILTER = pa.schema(
    [
        *CANDIDATE_FIELDS,
        ("copied_share", pa.float64()),  # share of answer word n-grams found in the item's source text
        ("shared_words", pa.int64()),  # content words the answers share with the source text
        ("judge_score", pa.int64()),
        ("judge_reason", pa.string()),
    ]
)
DECONTAMINATE = pa.schema(
    [*CANDIDATE_FIELDS, ("benchmark_item", pa.string()), ("similarity", pa.float64()), ("copied_share", pa.float64())]
)
DEDUP = pa.schema([*CANDIDATE_FIELDS, ("duplicate_of", pa.string()), ("copied_share", pa.float64())])
MIX = pa.schema([*CANDIDATE_FIELDS, ("copied_share", pa.float64())])
EXPORT = pa.schema(
    [("file", pa.string()), ("conversations", pa.int64()), ("images", pa.int64()), ("bytes", pa.int64())]
)
