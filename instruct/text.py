"""Word-level helpers the rules, the report and the tests share: content words, copied n-grams, turn texts."""

from __future__ import annotations

from typing import Any

from pipeline.asr import words_of

# Function words carry no content: two texts sharing only these share nothing.
_FUNCTION_WORDS = """
the a an and or but if then of to in on at by for with from as is are was were be been being it its this that
these those there here what which who whom whose when where why how not no yes do does did can could will would
should may might must shall has have had i you he she we they them their our your my me us his her so than too very
just also about into over under up down out more most some any each all both such only own same other one two let
lets like get gets got make makes use used using
"""
STOP_WORDS = frozenset(_FUNCTION_WORDS.split())


def content_words(text: str) -> set[str]:
    """The words of three letters or more that are not function words."""
    return {word for word in words_of(text) if len(word) >= 3 and word not in STOP_WORDS}


def copied_share(answer: str, source: str, n: int) -> float:
    """The share of the answer's word n-grams that appear in the source (0 for an answer shorter than n words)."""
    words = words_of(answer)
    grams = [tuple(words[i : i + n]) for i in range(len(words) - n + 1)]
    if not grams:
        return 0.0
    source_words = words_of(source)
    known = {tuple(source_words[i : i + n]) for i in range(len(source_words) - n + 1)}
    return sum(gram in known for gram in grams) / len(grams)


def questions(conversation: list[dict[str, str]]) -> list[str]:
    return [turn["value"].replace("<image>", "").strip() for turn in conversation if turn["from"] == "human"]


def answers(conversation: list[dict[str, str]]) -> list[str]:
    return [turn["value"].strip() for turn in conversation if turn["from"] == "gpt"]


def source_text(item: dict[str, Any]) -> str:
    """What an item holds in words: its OCR, its speech, its caption, its original turns."""
    turns = " ".join(turn["value"] for turn in item["conversations"] or [])
    return " ".join(part for part in (item["ocr"], item["transcript"], item["caption"], turns) if part)


def conversation_text(conversation: list[dict[str, str]]) -> str:
    return "\n".join(
        f"{'Question' if turn['from'] == 'human' else 'Answer'}: {turn['value']}" for turn in conversation
    )


def as_turns(pairs: list[tuple[str, str]], images: int) -> list[dict[str, str]]:
    """LLaVA turns from (question, answer) pairs: one `<image>` per image, all in the first human turn."""
    placeholder = "<image>\n" * images
    turns = []
    for index, (question, answer) in enumerate(pairs):
        turns.append(
            {"from": "human", "value": (placeholder if index == 0 else "") + question.replace("<image>", "").strip()}
        )
        turns.append({"from": "gpt", "value": answer})
    return turns
