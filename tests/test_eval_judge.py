"""The paper's math judge: its conversation, its verdict, and the embedded SmolLM2 answering it through the cached
LLM layer."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from configs.eval import MathScoringConfig, load_eval_config
from eval.items import Example
from eval.judge import judge_messages, parse_verdict
from eval.score import score_predictions
from eval.scorers import MathProblem
from pipeline.models.llm import load_llm

ANGLES = MathProblem("145°", "multi_choice", "text", ("135°", "140°", "145°", "150°"))
VOLUME = MathProblem("1000", "free_form", "integer")


def math_example(problem: MathProblem) -> Example:
    return Example(
        id="m/1", image=b"", question="?", answers=(problem.answer,), example_answer=problem.answer, math=problem
    )


def test_the_judge_conversation_is_the_papers() -> None:
    cfg = load_eval_config(None).math_scoring
    messages = judge_messages("C", ANGLES, cfg)
    assert messages[0] == {"role": "system", "content": cfg.judge_system}
    assert [m["role"] for m in messages[1:-1]] == ["user", "assistant"] * 6
    assert messages[-1]["content"] == (
        "Predicted Answer: C. Choice: ['135°', '140°', '145°', '150°']. Labeled Answer: 145°. "
        "Please output you judgement."
    )
    assert judge_messages("36", VOLUME, cfg)[-1]["content"].startswith("Predicted Answer: 36. Choice: None.")


@pytest.mark.parametrize(
    ("answer", "verdict"),
    [("###judge: True", True), ("###Judge: False", False), ("Sure. ###JUDGE: true", True), ("True", None), ("", None)],
)
def test_parse_verdict(answer: str, verdict: bool | None) -> None:
    assert parse_verdict(answer) is verdict


def test_smollm2_judges_through_the_cached_llm_layer(tmp_path: Path) -> None:
    defaults = load_eval_config(None).math_scoring
    cache = tmp_path / "calls.sqlite"
    judge = defaults.judge.model_copy(update={"cache_path": str(cache)})
    cfg: MathScoringConfig = defaults.model_copy(update={"method": "llm", "judge": judge})
    rows = [
        (math_example(ANGLES), "C", False),
        (math_example(VOLUME), "1000", False),
        (math_example(VOLUME), "", True),
    ]

    scores = score_predictions("math", rows, cfg)
    model_id = load_llm(judge).model_id
    assert [score.scored_by for score in scores] == [f"llm:{model_id}", f"llm:{model_id}", "context_overflow"]
    # the judge's own words are kept beside its verdict; 135M parameters follow the paper's verdict format
    assert all(parse_verdict(score.extracted) is not None for score in scores[:2])
    assert all(score.value in (0.0, 1.0) for score in scores)
    with sqlite3.connect(cache) as db:
        assert db.execute("SELECT COUNT(*) FROM calls").fetchone() == (2,)  # the overflowed prompt is not judged

    assert score_predictions("math", rows, cfg) == scores  # a rescore is answered from the cache
    with sqlite3.connect(cache) as db:
        assert db.execute("SELECT COUNT(*) FROM calls").fetchone() == (2,)
