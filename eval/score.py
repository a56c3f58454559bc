"""Scoring one benchmark's predictions with the scorer its config names; every score says what gave it."""

from __future__ import annotations

from dataclasses import dataclass

from configs.eval import MathScoringConfig
from eval.items import Example
from eval.judge import judge_math
from eval.scorers import (
    RULES,
    SCIENCEQA_OPTIONS,
    math_rule_score,
    okvqa_score,
    scienceqa_choice,
    textvqa_score,
    vqa_score,
)
from pipeline.models.llm import load_llm

VQA_SCORERS = {"okvqa": okvqa_score, "textvqa": textvqa_score, "vqa": vqa_score}
OVERFLOW = "context_overflow"


@dataclass(frozen=True)
class Score:
    value: float  # 0..1
    scored_by: str
    extracted: str | None = None


def _scienceqa(prediction: str, example: Example) -> Score:
    chosen = scienceqa_choice(prediction, list(example.choices))
    letter = SCIENCEQA_OPTIONS[chosen] if chosen is not None else None
    return Score(float(chosen == SCIENCEQA_OPTIONS.index(example.answers[0])), RULES, letter)


def score_predictions(scorer: str, rows: list[tuple[Example, str, bool]], math: MathScoringConfig) -> list[Score]:
    """One score per (example, prediction, context_overflow); an overflowed prompt, never generated, scores 0."""
    scores: dict[int, Score] = {i: Score(0.0, OVERFLOW) for i, (_, _, overflow) in enumerate(rows) if overflow}
    todo = [(i, example, prediction) for i, (example, prediction, overflow) in enumerate(rows) if not overflow]
    if scorer in VQA_SCORERS:
        scores |= {i: Score(VQA_SCORERS[scorer](pred, list(ex.answers)), RULES) for i, ex, pred in todo}
    elif scorer == "scienceqa":
        scores |= {i: _scienceqa(pred, ex) for i, ex, pred in todo}
    elif math.method == "rules":
        for i, example, prediction in todo:
            verdict = math_rule_score(prediction, example.math)
            scores[i] = Score(float(verdict.correct), verdict.scored_by, verdict.extracted)
    elif todo:
        verdicts = judge_math(load_llm(math.judge), [(pred, ex.math) for _, ex, pred in todo], math)
        for (i, _, _), verdict in zip(todo, verdicts, strict=True):
            scores[i] = Score(float(verdict.correct), verdict.scored_by, verdict.extracted)
    return [scores[i] for i in range(len(rows))]
