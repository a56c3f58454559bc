"""filter: rules first, then a judge. The rules hold whatever the judge says, since a small model is no reliable
judge: an empty or too short answer, another language, a loop, an answer that only restates its question, one
about something else than the item's text (no content word shared) and one that pastes the source back (too many of
its word n-grams copied) are dropped before the judge is asked. The judge then scores each remaining rewritten
conversation from 1 to 5 for being answerable from the image and its text, correct and not trivial, and a score
below the threshold drops it with the judge's reason. Every drop has a reason code."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from configs.instruct import FilterConfig, JudgeConfig, RulesConfig
from instruct.rewrite import REWRITTEN
from instruct.text import answers, content_words, conversation_text, copied_share, questions
from pipeline.asr import looped_words, words_of
from pipeline.language import detect_language
from pipeline.models.llm import Llm
from pipeline.models.llm.structured import LlmOutputError, complete_json_batch
from pipeline.verdicts import KEEP, Reasons, Verdict

REASONS = Reasons("instruct.filter", "empty_answer", "too_short", "too_long", "wrong_language", "repetitive",
                  "restates_question", "meta_answer", "off_topic", "copied_source", "judge_rejected",
                  "judge_invalid")  # fmt: skip


class Judgement(BaseModel):
    score: int = Field(ge=1, le=5, description="5 = correct, grounded and not trivial; 1 = wrong or unrelated")
    reason: str = Field(default="", description="why, in a few words")


def _restates(question: str, answer: str, cfg: RulesConfig) -> bool:
    said = content_words(answer)
    if not said:
        return False
    return len(said & content_words(question)) / len(said) >= cfg.max_question_overlap


def grounding(conversation: list[dict[str, str]], source: str, n: int) -> tuple[int, float]:
    """(content words the answers share with the source, the largest share of an answer's n-grams copied from it)."""
    replies = answers(conversation)
    shared = len(content_words(" ".join(replies)) & content_words(source))
    return shared, max((copied_share(reply, source, n) for reply in replies), default=0.0)


def rules_verdict(conversation: list[dict[str, str]], source: str, grounded: bool, cfg: RulesConfig) -> Verdict:
    """The rules' verdict on one conversation; `grounded` also checks it against the item's source text."""
    replies = answers(conversation)
    if not replies or any(not words_of(reply) for reply in replies):
        return REASONS.drop("empty_answer")
    counts = [len(words_of(reply)) for reply in replies]
    if min(counts) < cfg.min_answer_words:
        return REASONS.drop("too_short", f"{min(counts)} words")
    if sum(counts) > cfg.max_answer_words:
        return REASONS.drop("too_long", f"{sum(counts)} words")
    language, confidence = detect_language(" ".join(replies))
    if language not in cfg.languages and confidence >= cfg.min_language_confidence:
        return REASONS.drop("wrong_language", f"{language} ({confidence:.2f})")
    words = [word for reply in replies for word in words_of(reply)]
    looped = looped_words(words, cfg.repetition_max_ngram, cfg.repetition_min_repeats)
    if sum(looped) / len(words) > cfg.max_repeated_share:
        return REASONS.drop("repetitive", f"{sum(looped) / len(words):.2f} of the words in loops")
    for question, reply in zip(questions(conversation), replies, strict=False):
        if _restates(question, reply, cfg):
            return REASONS.drop("restates_question", reply[:80])
    said = " ".join(words_of(" ".join(replies)))
    heard = " ".join(words_of(source))
    leaked = [
        phrase for phrase in cfg.meta_phrases if f" {phrase} " in f" {said} " and f" {phrase} " not in f" {heard} "
    ]
    if leaked:
        return REASONS.drop("meta_answer", f"says {leaked[0]!r}")
    if grounded and source:
        shared, copied = grounding(conversation, source, cfg.copy_ngram)
        if shared < cfg.min_shared_content_words:
            return REASONS.drop("off_topic", f"{shared} content words shared with the source")
        if copied > cfg.max_copied_ngram_share:
            return REASONS.drop("copied_source", f"{copied:.2f} of the {cfg.copy_ngram}-grams copied")
    return KEEP


def judge_prompts(candidates: list[dict[str, Any]], sources: list[str], cfg: JudgeConfig) -> list[str]:
    return [cfg.prompt.format(context=source[:1500], conversation=conversation_text(candidate["conversations"]))
            for candidate, source in zip(candidates, sources, strict=True)]  # fmt: skip


def filter_candidates(
    candidates: list[dict[str, Any]], sources: list[str], cfg: FilterConfig, llm: Llm | None
) -> list[dict[str, Any]]:
    """One row per candidate, in order, with the rules' and the judge's verdicts and the grounding figures."""
    rows = []
    for candidate, source in zip(candidates, sources, strict=True):
        row = {**candidate, "copied_share": None, "shared_words": None, "judge_score": None, "judge_reason": None}
        row.pop("model", None)
        if candidate["keep"]:
            grounded = candidate["origin"] == REWRITTEN
            if grounded and source:
                shared, copied = grounding(candidate["conversations"], source, cfg.rules.copy_ngram)
                row |= {"shared_words": shared, "copied_share": round(copied, 4)}
            verdict = rules_verdict(candidate["conversations"], source, grounded, cfg.rules)
            row |= {"keep": verdict.keep, "reason": verdict.reason, "detail": verdict.detail}
        rows.append(row)
    judged = [i for i, row in enumerate(rows)
              if row["keep"] and (row["origin"] == REWRITTEN or cfg.judge.judge_originals)]  # fmt: skip
    if cfg.judge.enabled and judged and llm is not None:
        prompts = judge_prompts([rows[i] for i in judged], [sources[i] for i in judged], cfg.judge)
        for i, judgement in zip(judged, complete_json_batch(llm, prompts, Judgement), strict=True):
            apply_judgement(rows[i], judgement, cfg.judge)
    return rows


def apply_judgement(row: dict[str, Any], judgement: Judgement | LlmOutputError, cfg: JudgeConfig) -> None:
    if isinstance(judgement, LlmOutputError):
        row["judge_reason"] = judgement.reason
        if cfg.on_invalid == "drop":
            row |= {"keep": False, "reason": "judge_invalid", "detail": judgement.reason[:200]}
        return
    row |= {"judge_score": judgement.score, "judge_reason": judgement.reason}
    if judgement.score < cfg.threshold:
        row |= {"keep": False, "reason": "judge_rejected", "detail": judgement.reason[:200]}
