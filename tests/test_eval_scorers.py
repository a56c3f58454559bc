"""The scorers against hand-computed cases, one per normalisation rule and edge case of their references."""

from __future__ import annotations

import pytest

from eval.scorers import (
    MathProblem,
    evalai_normalize,
    leave_one_out_accuracy,
    math_rule_score,
    okvqa_score,
    okvqa_short_answer,
    scienceqa_choice,
    textvqa_score,
    vqa_digit_article,
    vqa_punctuation,
    vqa_score,
)

TEN_TWOS = ["2"] * 10


@pytest.mark.parametrize(
    ("matching", "expected"),
    [(10, 1.0), (4, 1.0), (3, 0.9), (2, 0.6), (1, 0.3), (0, 0.0)],
    ids=["unanimous", "four", "three", "two-of-ten", "one", "none"],
)
def test_leave_one_out_accuracy_of_k_matching_annotators(matching: int, expected: float) -> None:
    # k matching of 10: the k left out see k-1 others, the 10-k others see k; each min(1, n/3)
    answers = ["red"] * matching + ["blue"] * (10 - matching)
    assert leave_one_out_accuracy("red", answers) == pytest.approx(expected)


def test_no_answers_is_an_error_not_a_zero() -> None:
    with pytest.raises(ValueError):
        leave_one_out_accuracy("red", [])


@pytest.mark.parametrize(
    ("raw", "normalised"),
    [
        ("yes.", "yes"),  # a trailing period goes
        ("2.5", "2.5"),  # a decimal point stays
        ("black-and-white", "black and white"),  # a mark between letters becomes a space
        ("t - shirt", "t  shirt"),  # a mark beside a space is deleted
        ("1,000", "1000"),  # digit-comma-digit: every mark is deleted
        ("don't", "don't"),  # the apostrophe is no punctuation here
    ],
)
def test_vqa_punctuation(raw: str, normalised: str) -> None:
    assert vqa_punctuation(raw) == normalised


def test_vqa_period_strip_stops_after_32_periods_as_the_reference_does() -> None:
    assert vqa_punctuation("a." * 40) == "a" * 32 + "a." * 8


@pytest.mark.parametrize(
    ("raw", "normalised"),
    [
        ("Two", "2"),
        ("none", "0"),
        ("ten", "10"),
        ("The dog", "dog"),
        ("an apple a day", "apple day"),
        ("dont", "don't"),
    ],
)
def test_vqa_digit_article(raw: str, normalised: str) -> None:
    assert vqa_digit_article(raw) == normalised


def test_vqa_score_normalises_the_prediction() -> None:
    assert vqa_score("two", TEN_TWOS) == 1.0
    assert vqa_score("Two.", TEN_TWOS) == 1.0
    assert vqa_score("the dog", ["dog"] * 10) == 1.0
    assert vqa_score("dont know", ["don't know"] * 10) == 1.0
    assert vqa_score("1,000", ["1000"] * 10) == 1.0
    assert vqa_score("  yes\n", ["yes"] * 10) == 1.0


def test_vqa_score_leaves_unanimous_answers_as_given() -> None:
    assert vqa_score("two", ["two"] * 10) == 0.0  # the prediction becomes "2"; the answers stay "two"
    assert vqa_score("the dog", ["the dog"] * 10) == 0.0
    assert vqa_score("black-and-white", ["black-and-white"] * 10) == 0.0


def test_vqa_score_normalises_disagreeing_answers_by_punctuation_only() -> None:
    answers = ["black and white"] * 3 + ["black-and-white"] * 7
    assert vqa_score("black and white", answers) == 1.0  # all ten read "black and white"
    assert vqa_score("1000", ["1,000"] * 5 + ["1000"] * 5) == 1.0
    assert vqa_score("2", ["two"] * 5 + ["three"] * 5) == 0.0  # number words in answers are not mapped


def test_vqa_score_of_an_empty_prediction_and_partial_agreement() -> None:
    assert vqa_score("", ["yes"] * 10) == 0.0
    assert vqa_score("red", ["red", "red"] + ["blue"] * 8) == pytest.approx(0.6)


@pytest.mark.parametrize(
    ("raw", "normalised"),
    [
        ("Coca-Cola's", "coca cola 's"),  # lower case, "'s" split off, hyphen to a space
        ("1,000", "1000"),
        ("yes?", "yes"),
        ("Two", "2"),
        ("The End.", "end"),
        ("isnt", "isn't"),
    ],
)
def test_evalai_normalize(raw: str, normalised: str) -> None:
    assert evalai_normalize(raw) == normalised


def test_textvqa_score_normalises_answers_too() -> None:
    assert textvqa_score("Two", ["two"] * 10) == 1.0  # unlike vqa_score: every answer is processed
    assert textvqa_score("coca cola's", ["Coca-Cola's"] * 10) == 1.0
    assert textvqa_score("STOP", ["stop", "stop"] + ["halt"] * 8) == pytest.approx(0.6)
    assert textvqa_score("", ["stop"] * 10) == 0.0


@pytest.mark.parametrize(
    ("prediction", "short"),
    [
        ("It is a dog. It sits.", "dog"),  # cut at ". ", then "it is " and "a " in turn
        ("The Eiffel tower, in Paris", "eiffel tower"),
        ('He said "hello"', "he said"),
        ("skiing.\nmore", "skiing"),
        ("it's an owl", "owl"),
        ("", ""),
    ],
)
def test_okvqa_short_answer(prediction: str, short: str) -> None:
    assert okvqa_short_answer(prediction) == short


def test_okvqa_score_stems_prediction_and_raw_answers() -> None:
    assert okvqa_score("It is a dog.", ["dogs"] * 10) == 1.0
    assert okvqa_score("running", ["run"] * 10) == 1.0
    assert okvqa_score("skiing.", ["ski"] * 10) == 1.0
    assert okvqa_score("two", TEN_TWOS) == 1.0
    assert okvqa_score("2", ["two"] * 10) == 1.0
    assert okvqa_score("The Eiffel Tower", ["eiffel tower"] * 2 + ["paris"] * 8) == pytest.approx(0.6)
    assert okvqa_score("", ["dog"] * 10) == 0.0


CHOICES = ["cat", "dog", "fish"]


@pytest.mark.parametrize(
    ("prediction", "index"),
    [
        ("B", 1),
        ("B. dog", 1),
        ("The answer is C.", 2),
        ("I think The answer is A!", 0),  # any character after the letter
        ("The answer is C", None),  # nothing after the letter: the reference's pattern fails
        ("The answer is A. The answer is B.", None),  # two answers name none
        ("D", None),  # not an option of three choices
        ("b", None),
        ("A.", None),
        ("", None),
    ],
)
def test_scienceqa_choice(prediction: str, index: int | None) -> None:
    assert scienceqa_choice(prediction, CHOICES) == index


ANGLES = MathProblem("145°", "multi_choice", "text", ("135°", "140°", "145°", "150°"))


@pytest.mark.parametrize(
    ("prediction", "correct", "extracted"),
    [
        ("(C)", True, "145°"),
        ("The answer is C.", True, "145°"),
        ("C", True, "145°"),
        ("145°", True, "145°"),
        ("I think it is 140°", False, "140°"),
        ("E", False, "135°"),  # no fifth option: the nearest choice by edit distance (a tie: the first), as MathVista
        ("", False, None),
    ],
)
def test_math_rules_on_a_multiple_choice_problem(prediction: str, correct: bool, extracted: str | None) -> None:
    verdict = math_rule_score(prediction, ANGLES)
    assert (verdict.correct, verdict.extracted, verdict.scored_by) == (correct, extracted, "rules")


@pytest.mark.parametrize(
    ("prediction", "problem", "correct"),
    [
        ("The total volume is 1,000 g.", MathProblem("1000", "free_form", "integer"), True),
        ("1000.0", MathProblem("1000", "free_form", "integer"), True),
        ("two", MathProblem("2", "free_form", "integer"), False),  # no digits, nothing extracted
        ("d = 1.23 m", MathProblem("1.2", "free_form", "float", precision=1), True),
        ("The answer is 0.6", MathProblem("0.6", "free_form", "float", precision=1), True),
        ("3.14 then 2", MathProblem("3.14", "free_form", "float", precision=2), False),  # the last number counts
        ("between [2007,2008]", MathProblem("[2007, 2008]", "free_form", "list"), True),
        ("2007 and 2008", MathProblem("[2007, 2008]", "free_form", "list"), False),
        ("B", MathProblem("B", "multi_choice", "text"), True),  # MathVerse: choices inside the question
        ("(A)", MathProblem("B", "multi_choice", "text"), False),
        ("Answer: 2 \\sqrt{3}.", MathProblem("2\\sqrt{3}", "free_form", "text"), True),
    ],
)
def test_math_rules_by_answer_type(prediction: str, problem: MathProblem, correct: bool) -> None:
    assert math_rule_score(prediction, problem).correct is correct
