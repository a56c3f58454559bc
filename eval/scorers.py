"""Scorers of the six benchmarks, each matching a named reference implementation (a public API: outside tools and
our checks call these).

- `vqa_score`: GT-Vision-Lab/VQA `vqaEval.py` (VQA v2's official evaluation).
- `textvqa_score`: TextVQA's EvalAI evaluation, `TextVQAAccuracyEvaluator` with `EvalAIAnswerProcessor` in
  facebookresearch/mmf `mmf/utils/m4c_evaluators.py` (LLaVA's `m4c_evaluator.py` is the same code).
- `okvqa_score`: the textbook paper's OKVQA scoring: its `short_answer` cut, then the VQA evaluation with a Porter
  stem after the punctuation step.
- `scienceqa_choice`: LLaVA-1.5's `eval_science_qa.py` answer parsing, without its random guess for an unparsed
  answer (scored wrong here).
- `math_rule_score`: rules that extract an answer by type, then MathVista's `normalize_extracted_answer` and
  `safe_equal` (lupantech/MathVista `evaluation/calculate_score.py`); the CPU stand-in for the LLM judge of
  `eval/judge.py`. Every `MathVerdict` says which scored it.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache

from eval.vqa_tables import (
    ARTICLES,
    CONTRACTIONS,
    EVALAI_COMMA_STRIP,
    NUMBER_WORDS,
    PERIOD_STRIP,
    PERIOD_STRIP_COUNT,
    PUNCTUATION,
    VQA_COMMA_STRIP,
)

SCIENCEQA_OPTIONS = ("A", "B", "C", "D", "E")
RULES = "rules"


def vqa_punctuation(text: str, comma_strip: re.Pattern[str] = VQA_COMMA_STRIP) -> str:
    """`processPunctuation`: a mark beside a space, or any mark in a text holding a digit-comma-digit, is deleted;
    others become a space. Periods not followed by a digit go (at most 32 of them, as in the reference)."""
    out = text
    delete_all = comma_strip.search(text) is not None
    for mark in PUNCTUATION:
        if delete_all or mark + " " in text or " " + mark in text:
            out = out.replace(mark, "")
        else:
            out = out.replace(mark, " ")
    return PERIOD_STRIP.sub("", out, count=PERIOD_STRIP_COUNT)


def vqa_digit_article(text: str) -> str:
    """`processDigitArticle`: lower case, number words to digits, articles dropped, contractions restored."""
    words = [NUMBER_WORDS.get(word, word) for word in text.lower().split()]
    return " ".join(CONTRACTIONS.get(word, word) for word in words if word not in ARTICLES)


def leave_one_out_accuracy(prediction: str, answers: list[str]) -> float:
    """min(1, matches among the other annotators / 3), averaged over leaving out each annotator in turn."""
    if not answers:
        raise ValueError("no annotator answers to score against")
    matches = [answer == prediction for answer in answers]
    total = sum(matches)
    return sum(min(1.0, (total - match) / 3) for match in matches) / len(answers)


def _one_line(text: str) -> str:
    return text.replace("\n", " ").replace("\t", " ").strip()


def vqa_score(prediction: str, answers: list[str]) -> float:
    """VQA accuracy as `vqaEval.py` computes it: the prediction normalised in full, the answers only by the
    punctuation step and only when the annotators disagree (unanimous answers are compared as given)."""
    normalised = vqa_digit_article(vqa_punctuation(_one_line(prediction)))
    if len(set(answers)) > 1:
        answers = [vqa_punctuation(answer) for answer in answers]
    return leave_one_out_accuracy(normalised, answers)


def evalai_normalize(text: str) -> str:
    """`EvalAIAnswerProcessor`: lower case, commas and question marks dropped, "'s" split off, then the VQA
    punctuation (with its own comma pattern) and digit/article steps."""
    text = text.lower().replace(",", "").replace("?", "").replace("'s", " 's").strip()
    return vqa_digit_article(vqa_punctuation(_one_line(text), EVALAI_COMMA_STRIP))


def textvqa_score(prediction: str, answers: list[str]) -> float:
    """TextVQA's soft score: prediction and every answer through the EvalAI processor, then the leave-one-out
    accuracy (the reference asserts ten answers; any number is scored the same way here)."""
    return leave_one_out_accuracy(evalai_normalize(prediction), [evalai_normalize(answer) for answer in answers])


OKVQA_LEADS = ("it is ", "it's ", "a ", "an ", "the ")


def okvqa_short_answer(prediction: str) -> str:
    """The paper's `short_answer`: first line, cut at ". ", at a double quote and at ", ", stripped, lower case,
    one trailing period off, then each of "it is ", "it's ", "a ", "an ", "the " removed in turn when it leads
    (so "it is the car" gives "car")."""
    answer = prediction.split("\n")[0].split(". ")[0].split('"')[0].split(", ")[0].strip().lower()
    answer = answer[:-1] if answer.endswith(".") else answer
    for lead in OKVQA_LEADS:
        if answer.startswith(lead):
            answer = answer[len(lead) :]
    return answer


@cache
def _stemmer():
    from nltk.stem import PorterStemmer

    return PorterStemmer()


def okvqa_normalize(text: str) -> str:
    """Punctuation step, a Porter stem of every word, then the digit/article step."""
    stemmed = " ".join(_stemmer().stem(word) for word in vqa_punctuation(_one_line(text)).split())
    return vqa_digit_article(stemmed)


def okvqa_score(prediction: str, answers: list[str]) -> float:
    """OKVQA accuracy as the paper scores it. `answers` are the raw annotator answers: OKVQA publishes their
    stemmed forms as `answers`, so every raw answer takes the same normalisation as the prediction here (which also
    makes "two" and "2" meet on either side)."""
    return leave_one_out_accuracy(
        okvqa_normalize(okvqa_short_answer(prediction)), [okvqa_normalize(answer) for answer in answers]
    )


_SCIENCEQA_SENTENCE = re.compile(r"The answer is ([A-Z]).")


def scienceqa_choice(prediction: str, choices: list[str]) -> int | None:
    """The option index a prediction names: a bare letter, "B. ...", or exactly one "The answer is B." (any
    character after the letter, as the reference's unescaped dot reads); None when it names no option of these
    choices."""
    if prediction in SCIENCEQA_OPTIONS:
        letter = prediction
    elif len(prediction) >= 3 and prediction[0] in SCIENCEQA_OPTIONS and prediction[1:3] == ". ":
        letter = prediction[0]
    else:
        found = _SCIENCEQA_SENTENCE.findall(prediction)
        letter = found[0] if len(found) == 1 else None
    options = SCIENCEQA_OPTIONS[: len(choices)]
    return options.index(letter) if letter in options else None


@dataclass(frozen=True)
class MathProblem:
    """What a math answer is checked against: MathVista's fields, which MathVision and MathVerse items map to."""

    answer: str
    question_type: str  # "multi_choice" or "free_form"
    answer_type: str  # "text" (choices), "integer", "float", "list", or "text" for a free-form expression
    choices: tuple[str, ...] = ()
    precision: int | None = None


@dataclass(frozen=True)
class MathVerdict:
    correct: bool
    extracted: str | None
    scored_by: str  # "rules", or "llm:<model id>" for the judge


_ANSWER_MARK = re.compile(r"answer(?:\s+is)?\s*[:：]\s*|answer\s+is\s+", re.IGNORECASE)
_NUMBER = re.compile(r"-?\d+(?:,\d{3})+(?:\.\d+)?|-?\d*\.\d+|-?\d+")
_LETTER = re.compile(r"\(([A-Z])\)|^([A-Z])(?:[.):]|$)")


def _answer_tail(text: str) -> str:
    """What follows the last "answer is" / "answer:" of a response, else the whole response."""
    marks = list(_ANSWER_MARK.finditer(text))
    tail = text[marks[-1].end() :] if marks else text
    return tail.strip().rstrip(".").strip()


def _choice_letter(text: str, count: int) -> str | None:
    match = _LETTER.search(text)
    if match is None:
        return None
    letter = match.group(1) or match.group(2)
    return letter if ord(letter) - ord("A") < count else None


def extract_math_answer(prediction: str, problem: MathProblem) -> str | None:
    """Our rules in place of MathVista's GPT extraction: a choice (its text, "(B)", "B." or a bare letter), the
    last number (thousands commas dropped), or the last bracketed list; None for an empty response."""
    text = prediction.strip()
    if not text:
        return None
    if problem.question_type == "multi_choice" and text in problem.choices:  # MathVista's own first rule
        return text
    tail = _answer_tail(text)
    if problem.question_type == "multi_choice":
        letter = _choice_letter(tail, len(problem.choices) or 26)
        if letter is not None:
            return letter
        named = [choice for choice in problem.choices if choice.lower() in tail.lower()]
        return max(named, key=len) if named else tail
    if problem.answer_type in ("integer", "float"):
        numbers = _NUMBER.findall(tail)
        return numbers[-1].replace(",", "") if numbers else None
    if problem.answer_type == "list":
        lists = re.findall(r"\[([^\[\]]*)\]", tail)
        return "[" + ", ".join(item.strip() for item in lists[-1].split(",")) + "]" if lists else None
    return tail


def levenshtein(left: Sequence[str], right: Sequence[str]) -> int:
    """Edit distance between two strings (or two word lists)."""
    previous = list(range(len(right) + 1))
    for i, a in enumerate(left, 1):
        current = [i]
        for j, b in enumerate(right, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (a != b)))
        previous = current
    return previous[-1]


def mathvista_normalize(extraction: str, problem: MathProblem) -> str | None:
    """MathVista's `normalize_extracted_answer`: a choice letter (or "(B)") becomes its choice's text, other text
    the nearest choice by edit distance; numbers are cast to the answer type (floats rounded to `precision`)."""
    if problem.question_type == "multi_choice":
        letters = re.findall(r"\(([a-zA-Z])\)", extraction.strip())
        extraction = letters[0].upper() if letters else extraction.strip()
        options = [chr(ord("A") + i) for i in range(len(problem.choices))]
        if extraction in options:
            return problem.choices[options.index(extraction)]
        distances = [levenshtein(extraction, choice) for choice in problem.choices]
        return problem.choices[distances.index(min(distances))]
    try:
        if problem.answer_type == "integer":
            return str(int(float(extraction)))
        if problem.answer_type == "float":
            return str(round(float(extraction), int(problem.precision or 0)))
    except ValueError:
        return None
    return extraction


def _plain(text: str) -> str:
    return re.sub(r"[\s$]", "", text).rstrip(".").lower()


def math_rule_score(prediction: str, problem: MathProblem) -> MathVerdict:
    """Extract, normalise as MathVista does, compare as strings. Departures, each for a case MathVista never has:
    an empty extraction is wrong (the nearest-choice step would otherwise pick a choice for it); a multiple-choice
    problem without listed choices (MathVerse) compares letters; a free-form text answer (MathVision, MathVerse)
    compares without spaces, dollar signs, case or a final period."""
    extracted = extract_math_answer(prediction, problem)
    if extracted is None or not extracted.strip():
        return MathVerdict(False, extracted, RULES)
    if problem.question_type == "multi_choice" and not problem.choices:
        letter = _choice_letter(extracted, 26)
        return MathVerdict(letter is not None and letter == problem.answer.strip().upper(), extracted, RULES)
    if problem.question_type == "free_form" and problem.answer_type == "text":
        return MathVerdict(_plain(extracted) == _plain(problem.answer), extracted, RULES)
    normalised = mathvista_normalize(extracted, problem)
    return MathVerdict(normalised is not None and normalised == problem.answer, normalised, RULES)
