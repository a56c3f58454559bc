"""triage: each item gets its source's action (keep, rewrite, discard) and one of MAmmoTH-VL's ten categories:
the source's fixed category, else rules over what the item holds, else the LLM (a structured answer from the ten),
else the configured default. Every item keeps how its category was decided (`category_by`)."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from pydantic import BaseModel, Field

from configs.instruct import CATEGORIES, Category, TriageConfig
from instruct.text import content_words, questions
from pipeline.models.llm import Llm
from pipeline.models.llm.structured import LlmOutputError, complete_json_batch

MATH = re.compile(r"[=+\-*/^√∑∫π≤≥]\s*[\w(]|\b(?:solve|equation|calculate|compute|derivative|integral|theorem|"
                  r"proof|formula|sum|product|gradient|slope)\b|\b(?:def|return|import|class|function|print)\b\s*\S",
                  re.IGNORECASE)  # fmt: skip
CHART = re.compile(r"\b(?:chart|graph|plot|axis|axes|bar|pie|histogram|table|row|column|curve|trend)s?\b", re.I)
READING = re.compile(r"\b(?:written|text|says?|read|title|word|label|sign|letters?|spell)\b", re.IGNORECASE)
BOX = re.compile(r"\[\s*-?\d*\.?\d+\s*(?:,\s*-?\d*\.?\d+\s*){3}\]")
VIDEO = re.compile(r"\.(?:mp4|mkv|webm|avi|mov)$", re.IGNORECASE)

Rule = Callable[[dict[str, Any]], bool]


def _text(item: dict[str, Any]) -> str:
    return " ".join([item["ocr"], item["transcript"], *questions(item["conversations"] or [])])


# In order: the first rule that holds names the category.
RULES: tuple[tuple[str, str, Rule], ...] = (
    ("Video", "video_file", lambda item: any(VIDEO.search(image["path"] or "") for image in item["images"])),
    ("Multi-Image", "several_images", lambda item: len(item["images"]) > 1),
    ("Language", "no_image", lambda item: not item["images"]),
    ("Detection", "box_coordinates", lambda item: any(BOX.search(t["value"]) for t in item["conversations"] or [])),
    ("Caption", "caption_only", lambda item: bool(item["caption"]) and not item["conversations"]),
    ("Chart", "chart_words", lambda item: bool(CHART.search(_text(item)))),
    ("Code & Math", "math_or_code", lambda item: bool(MATH.search(_text(item)))),
    ("OCR", "reading_question", lambda item: bool(READING.search(" ".join(questions(item["conversations"] or []))))),
    ("OCR", "text_heavy_image", lambda item: len(content_words(item["ocr"])) >= 12 and not item["transcript"]),
)


def rule_category(item: dict[str, Any]) -> tuple[str, str] | None:
    """(category, rule name) of the first rule that holds, else None."""
    for category, name, holds in RULES:
        if holds(item):
            return category, name
    return None


class CategoryAnswer(BaseModel):
    category: Category = Field(description="the task category")


def describe(item: dict[str, Any], limit: int = 400) -> str:
    parts = [f"{len(item['images'])} image(s)"]
    for name in ("ocr", "transcript", "caption"):
        if item[name]:
            parts.append(f"{name}: {item[name][:limit]}")
    parts += [f"question: {question[:limit]}" for question in questions(item["conversations"] or [])[:2]]
    return "; ".join(parts)


def categorise(items: list[dict[str, Any]], cfg: TriageConfig, llm: Llm | None) -> list[dict[str, Any]]:
    """One triage row per item, in order; the LLM is asked only about items no rule places."""
    rows = []
    for item in items:
        row = {"item_id": item["item_id"], "action": item["action"], "keep": item["action"] != "discard",
               "reason": "discarded_source" if item["action"] == "discard" else None}  # fmt: skip
        if item["category"]:
            row |= {"category": item["category"], "category_by": "config"}
        elif (found := rule_category(item)) is not None:
            row |= {"category": found[0], "category_by": f"rule:{found[1]}"}
        else:
            row |= {"category": cfg.default_category, "category_by": "default"}
        rows.append(row)
    undecided = [i for i, row in enumerate(rows) if row["category_by"] == "default" and row["keep"]]
    if undecided and cfg.llm_fallback and llm is not None:
        prompts = [cfg.prompt.format(item=describe(items[i]), categories=", ".join(CATEGORIES)) for i in undecided]
        for i, answer in zip(undecided, complete_json_batch(llm, prompts, CategoryAnswer), strict=True):
            if not isinstance(answer, LlmOutputError):
                rows[i] |= {"category": answer.category, "category_by": "llm"}
    return rows
