"""The paper's LLM judge for the math benchmarks, through the project's LLM layer (so calls are cached: a rescore
asks nothing twice). The conversation is the paper's: its system prompt, its worked examples as earlier turns, then
"Predicted Answer: ... Choice: ... Labeled Answer: ..."; the verdict is its "###judge: True|False", and an answer
without one is wrong, as the paper's script counts it.
"""

from __future__ import annotations

import re

from configs.eval import MathScoringConfig
from eval.scorers import MathProblem, MathVerdict
from pipeline.models.llm import Llm, Message

_VERDICT = re.compile(r"###judge: (True|False)", re.IGNORECASE)


def judge_messages(prediction: str, problem: MathProblem, cfg: MathScoringConfig) -> list[Message]:
    choices = str(list(problem.choices)) if problem.choices else "None"
    query = cfg.judge_query.format(prediction=prediction, choices=choices, answer=problem.answer)
    turns: list[Message] = [{"role": "system", "content": cfg.judge_system}]
    for example in cfg.judge_examples:
        turns += [{"role": "user", "content": example.user}, {"role": "assistant", "content": example.assistant}]
    return [*turns, {"role": "user", "content": query}]


def parse_verdict(answer: str) -> bool | None:
    match = _VERDICT.search(answer)
    return None if match is None else match.group(1).lower() == "true"


def judge_math(llm: Llm, items: list[tuple[str, MathProblem]], cfg: MathScoringConfig) -> list[MathVerdict]:
    """One verdict per (prediction, problem), batched; `extracted` keeps the judge's own words."""
    completions = llm.complete_batch([judge_messages(prediction, problem, cfg) for prediction, problem in items])
    scored_by = f"llm:{llm.model_id}"
    return [MathVerdict(parse_verdict(done.text) is True, done.text, scored_by) for done in completions]
