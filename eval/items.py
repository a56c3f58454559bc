"""One `Example` per benchmark item, whatever its published format: the text a template inserts, the image, what
scores an answer, and what an in-context example is answered with.

How each format becomes an example:
- OKVQA, TextVQA: the question; the annotators' answers (OKVQA's raw answers where the row has them); examples
  answer with the first annotator's. TextVQA's OCR tokens are not put in the prompt (the paper's script).
- ScienceQA: "Context: <hint>" when there is one, the question, then "A. <choice>" lines; answered with the letter.
- MathVista: its `query` (the question with MathVista's hint and its "(A) ..." choices), scored against `answer`.
- MathVision: the question without its "<image1>" marks, then "Choices:" and "(A) ..." lines when it has options
  (MathVista's layout); its answer is the letter, scored as the choice it names.
- MathVerse: the question of each configured problem version; multiple-choice answers are letters.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from configs.eval import DatasetConfig
from eval.scorers import SCIENCEQA_OPTIONS, MathProblem
from eval.sources import image_bytes, read_rows


@dataclass(frozen=True)
class Example:
    id: str  # "<set name>/<the item's own id>"
    image: bytes = field(repr=False)
    question: str
    answers: tuple[str, ...]
    example_answer: str
    choices: tuple[str, ...] = ()
    math: MathProblem | None = None

    @property
    def image_digest(self) -> str:
        return hashlib.sha256(self.image).hexdigest()


Mapper = Callable[[dict[str, Any], int], dict[str, Any]]


def _letter(index: int) -> str:
    return chr(ord("A") + index)


def _okvqa(row: dict[str, Any], index: int) -> dict[str, Any]:
    answers = [a.get("raw_answer") or a["answer"] if isinstance(a, dict) else a for a in row["answers"]]
    return {"id": row["question_id"], "image": row["image"], "question": row["question"], "answers": answers}


def _textvqa(row: dict[str, Any], index: int) -> dict[str, Any]:
    return {"id": row["question_id"], "image": row["image"], "question": row["question"], "answers": row["answers"]}


def _scienceqa(row: dict[str, Any], index: int) -> dict[str, Any]:
    choices = list(row["choices"])
    lines = [f"Context: {row['hint']}"] if row.get("hint") else []
    lines += [row["question"], *(f"{SCIENCEQA_OPTIONS[i]}. {choice}" for i, choice in enumerate(choices))]
    letter = SCIENCEQA_OPTIONS[row["answer"]]
    return {"id": index, "image": row["image"], "question": "\n".join(lines), "answers": [letter], "choices": choices}


def free_form_problem(answer: str) -> MathProblem:
    """A free-form answer's type from its text: an integer, a float with its decimals as precision, or text."""
    if re.fullmatch(r"-?\d+", answer):
        return MathProblem(answer, "free_form", "integer")
    if re.fullmatch(r"-?\d*\.\d+", answer):
        return MathProblem(answer, "free_form", "float", precision=len(answer.split(".")[1]))
    return MathProblem(answer, "free_form", "text")


def _mathvista(row: dict[str, Any], index: int) -> dict[str, Any]:
    choices = list(row.get("choices") or [])
    precision = row.get("precision")
    problem = MathProblem(
        str(row["answer"]),
        row["question_type"],
        row["answer_type"],
        tuple(choices),
        int(precision) if precision is not None else None,
    )
    answer = _letter(choices.index(problem.answer)) if problem.answer in choices else problem.answer
    image = row.get("decoded_image") or row["image"]
    question = row.get("query") or row["question"]
    return {"id": row["pid"], "image": image, "question": question, "answers": [answer], "math": problem}


def choices_block(choices: list[str]) -> str:
    return "Choices:\n" + "\n".join(f"({_letter(i)}) {choice}" for i, choice in enumerate(choices))


def _mathvision(row: dict[str, Any], index: int) -> dict[str, Any]:
    options = [str(option) for option in row.get("options") or []]
    answer = str(row["answer"]).strip()
    question = re.sub(r" *<image\d*> *", " ", row["question"]).strip()
    if options:
        question = f"{question}\n{choices_block(options)}"
    if options and len(answer) == 1 and ord(answer) - ord("A") in range(len(options)):
        problem = MathProblem(options[ord(answer) - ord("A")], "multi_choice", "text", tuple(options))
    elif re.fullmatch(r"[A-E]", answer):
        problem = MathProblem(answer, "multi_choice", "text")
    else:
        problem = free_form_problem(answer)
    image = row.get("decoded_image") or row["image"]
    return {"id": row["id"], "image": image, "question": question, "answers": [answer], "math": problem}


def _mathverse(row: dict[str, Any], index: int) -> dict[str, Any]:
    answer = str(row["answer"]).strip()
    multi = row["question_type"].replace("-", "_") == "multi_choice"
    problem = MathProblem(answer, "multi_choice", "text") if multi else free_form_problem(answer)
    item = {"id": row["sample_index"], "image": row["image"], "question": row["question"], "answers": [answer]}
    return {**item, "math": problem, "version": row["problem_version"]}


MAPPERS: dict[str, Mapper] = {
    "okvqa": _okvqa,
    "textvqa": _textvqa,
    "scienceqa": _scienceqa,
    "mathvista": _mathvista,
    "mathvision": _mathvision,
    "mathverse": _mathverse,
}


def load_examples(name: str, cfg: DatasetConfig, mathverse_versions: list[str]) -> list[Example]:
    """Every item of a set that has an image, in its published order."""
    mapper = MAPPERS[cfg.loader]
    examples = []
    for index, (row, base) in enumerate(read_rows(cfg)):
        item = mapper(row, index)
        if "version" in item and item["version"] not in mathverse_versions:
            continue
        image = image_bytes(item["image"], base)
        if image is None:
            continue
        answers = tuple(str(answer) for answer in item["answers"])
        examples.append(
            Example(
                id=f"{name}/{item['id']}",
                image=image,
                question=item["question"],
                answers=answers,
                example_answer=answers[0],
                choices=tuple(item.get("choices", ())),
                math=item.get("math"),
            )
        )
    return examples
