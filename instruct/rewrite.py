"""rewrite: an item becomes a multi-turn conversation grounded in what it holds, a turn at a time.

Each turn is two structured calls through the LLM layer (batched over the batch's items, cached, validated, retried):
a question (`{"question": ...}`) from the category's prompt about the turn's own run of the item's sentences (so
turns ask about different things), then its answer (`{"answer": ...}`) over everything the item holds. A small model
keeps to a one-string object far better than to a list of turns, and the prefilled `{"answer": "` starts it inside
the string. Items with images go to the configured vision-language model with the images as content parts; with
none configured (the CPU default) the text LLM is told it cannot see the picture and given its text. A turn whose
question repeats an earlier one ends the conversation; an item with no valid turn is a candidate dropped with the
reason. An item's own conversation (kept, or the original of a rewritten one) is a candidate too, for the mix.
"""

from __future__ import annotations

import math
import re
from dataclasses import replace
from typing import Any

from pydantic import BaseModel, Field

from configs.instruct import RewriteConfig, RewritePrompt
from instruct.text import as_turns, content_words, questions, source_text
from pipeline.models.llm import Llm, Message, image_part, text_part
from pipeline.models.llm.structured import LlmOutputError, complete_json_batch

REWRITTEN = "rewritten"
ORIGINAL = "original"
NO_TURN = "rewrite_failed"
SENTENCE_END = re.compile(r"(?<=[.!?])\s+|\n+")


class Question(BaseModel):
    question: str = Field(min_length=8, description="one question a student would ask")


class Answer(BaseModel):
    answer: str = Field(min_length=1, description="the answer")


LABELS = {"ocr": "Text in the picture:", "transcript": "What the teacher says:",
          "caption": "Description of the picture:"}  # fmt: skip
ECHOED_LABEL = re.compile("^(?:" + "|".join(re.escape(label) for label in LABELS.values()) + r")\s*", re.IGNORECASE)


def context(item: dict[str, Any]) -> str:
    """What the item holds, in words."""
    lines = [f"{label} {item[name]}" for name, label in LABELS.items() if item[name]]
    for turn in item["conversations"] or []:
        role = "Question" if turn["from"] == "human" else "Answer"
        lines.append(f"{role}: {turn['value'].replace('<image>', '').strip()}")
    return "\n".join(lines)


def focus_parts(item: dict[str, Any], turns: int) -> list[str]:
    """The item's sentences in `turns` runs, one per turn, in order; a text of fewer sentences repeats its last."""
    sentences = [part.strip() for part in SENTENCE_END.split(source_text(item)) if len(part.split()) >= 3]
    sentences = sentences or [source_text(item)]
    size = math.ceil(len(sentences) / turns)
    runs = [" ".join(sentences[start : start + size]) for start in range(0, len(sentences), size)]
    return runs + [runs[-1]] * (turns - len(runs))


def prompt_for(cfg: RewriteConfig, category: str) -> RewritePrompt:
    return cfg.prompts.get(category, cfg.prompts["default"])


def _message(text: str, item: dict[str, Any], sees_images: bool) -> list[Message]:
    if not sees_images or not item["images"]:
        return [{"role": "user", "content": text}]
    parts = [image_part(image["bytes"]) for image in item["images"]]
    return [{"role": "user", "content": [*parts, text_part(text)]}]


def _repeats(question: str, asked: list[str]) -> bool:
    """Whether a question asks again what an earlier one asked: all of the earlier one's content words, or all of
    its own among the earlier one's (a small model echoes "A student already asked: ..." back)."""
    words = content_words(question)
    return any(content_words(earlier) <= words or words <= content_words(earlier) for earlier in asked)


def rewrite_items(
    items: list[dict[str, Any]], categories: list[str], cfg: RewriteConfig, llm: Llm, sees_images: bool
) -> list[dict[str, Any]]:
    """One rewritten candidate per item, in order (its turns, or why it has none)."""
    shown = [context(item) if sees_images else f"{cfg.text_only_note}\n{context(item)}" for item in items]
    pairs: list[list[tuple[str, str]]] = [[] for _ in items]
    failure = [""] * len(items)
    active = list(range(len(items)))
    question_params = replace(llm.params, max_new_tokens=cfg.question_max_new_tokens)
    answer_params = replace(llm.params, max_new_tokens=cfg.max_new_tokens)
    for _ in range(cfg.turns):
        if not active:
            break
        prompts = []
        for i in active:
            focus = focus_parts(items[i], cfg.turns)[len(pairs[i])]
            text = prompt_for(cfg, categories[i]).question.format(context=shown[i], focus=focus).strip()
            prompts.append(_message(text, items[i], sees_images))
        asked_now = {}
        for i, answer in zip(active, complete_json_batch(llm, prompts, Question, params=question_params), strict=True):
            if isinstance(answer, LlmOutputError):
                failure[i] = failure[i] or f"question: {answer.reason}"
                continue
            question = ECHOED_LABEL.sub("", answer.question.strip())
            if len(question.split()) >= 3 and not _repeats(question, [asked for asked, _ in pairs[i]]):
                asked_now[i] = question
        order = list(asked_now)
        prompts = [_message(prompt_for(cfg, categories[i]).answer.format(context=shown[i], question=asked_now[i]),
                            items[i], sees_images) for i in order]  # fmt: skip
        active = []
        for i, answer in zip(order, complete_json_batch(llm, prompts, Answer, params=answer_params), strict=True):
            if isinstance(answer, LlmOutputError):
                failure[i] = failure[i] or f"answer: {answer.reason}"
            else:
                pairs[i].append((asked_now[i], ECHOED_LABEL.sub("", answer.answer.strip())))
                active.append(i)
    rows = []
    for item, category, done, why in zip(items, categories, pairs, failure, strict=True):
        row = {"item_id": item["item_id"], "origin": REWRITTEN, "category": category, "model": llm.model_id}
        if done:
            rows.append(row | {"conversations": as_turns(done, len(item["images"])), "keep": True, "reason": None,
                               "detail": why or None})  # fmt: skip
        else:
            rows.append(row | {"conversations": [], "keep": False, "reason": NO_TURN, "detail": why or "no question"})
    return rows


def original_candidate(item: dict[str, Any], category: str) -> dict[str, Any] | None:
    """The item's own conversation as a candidate, when it has one with at least one answered question."""
    turns = item["conversations"] or []
    if not questions(turns) or not any(turn["from"] == "gpt" and turn["value"].strip() for turn in turns):
        return None
    return {"item_id": item["item_id"], "origin": ORIGINAL, "category": category, "conversations": turns,
            "keep": True, "reason": None, "detail": None, "model": None}  # fmt: skip
