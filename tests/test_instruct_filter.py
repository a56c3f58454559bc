"""The filter's rules hold whatever the judge says (SmolLM2-135M is no reliable judge), the judge path works
against the project's OpenAI-compatible server on 127.0.0.1, and triage's rules place what they can tell."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from configs.instruct import InstructConfig
from configs.schema import OpenAiLlmConfig
from eval.sources import DatasetUnavailable
from instruct.decontaminate import benchmark_examples
from instruct.filter import filter_candidates
from instruct.rewrite import REWRITTEN, focus_parts, rewrite_items
from instruct.text import as_turns
from instruct.triage import categorise, rule_category
from pipeline.models.llm import ImageInputError, Llm, load_llm
from pipeline.models.llm.server import ChatServer
from tests import test_instruct_pipeline as shared

# the pipeline test's session fixtures: equal configs, so one model serves both modules
instruct_config, user_set = shared.instruct_config, shared.user_set

SOURCE = (
    "Text in the picture: Gradient descent. Step against the gradient of the loss. Learning rate. "
    "What the teacher says: Gradient descent updates each weight by taking a small step against the gradient of "
    "the loss. The size of the step is set by the learning rate."
)
QUESTION = "What sets the size of the step in gradient descent?"
GOOD = "The learning rate decides how large each update is, so a larger rate moves the weights further at once."
FORCED_BAD = {
    "off_topic": "Paris is a large European capital with many museums, bridges and famous old cafes.",
    "empty_answer": "   ",
    "restates_question": "What sets the size of the step in gradient descent?",
    "wrong_language": "La taille du pas est fixée par le taux d'apprentissage, qui décide de chaque mise à jour.",
    "copied_source": "Gradient descent updates each weight by taking a small step against the gradient of the loss.",
    "meta_answer": "The JSON object holds the answer: the learning rate sets how large each step of the update is.",
}


def candidate(item_id: str, answer: str) -> dict:
    return {"item_id": item_id, "origin": REWRITTEN, "category": "Code & Math", "keep": True, "reason": None,
            "detail": None, "model": "m", "conversations": as_turns([(QUESTION, answer)], 1)}  # fmt: skip


def forced_candidates() -> list[dict]:
    return [candidate("good", GOOD), *(candidate(name, answer) for name, answer in FORCED_BAD.items())]


@pytest.mark.parametrize("judge", ["lenient", "off"])
def test_rules_remove_forced_bad_cases_whatever_the_judge(judge: str, instruct_config: InstructConfig) -> None:
    """With the real judge at its most lenient threshold (it can keep anything) or no judge at all."""
    judge_cfg = instruct_config.filter.judge.model_copy(update={"enabled": judge != "off", "threshold": 1})
    cfg = instruct_config.filter.model_copy(update={"judge": judge_cfg})
    llm = load_llm(instruct_config.llm) if judge != "off" else None
    candidates = forced_candidates()
    rows = filter_candidates(candidates, [SOURCE] * len(candidates), cfg, llm)
    verdicts = {row["item_id"]: (row["keep"], row["reason"]) for row in rows}
    assert verdicts == {"good": (True, None), **{name: (False, name) for name in FORCED_BAD}}
    judged = [row for row in rows if row["judge_score"] is not None or row["judge_reason"]]
    assert [row["item_id"] for row in judged] == (["good"] if judge != "off" else [])  # only what the rules kept


@pytest.fixture()
def served_judge(instruct_config: InstructConfig, tmp_path: Path) -> Iterator[Llm]:
    """The embedded model behind the project's chat server on a free 127.0.0.1 port, and a client LLM (the
    `openai` back-end, its own call cache) talking to it."""
    embedded = load_llm(instruct_config.llm)
    server = ChatServer(("127.0.0.1", 0), Llm(embedded.backend, embedded.params, 4, 0))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    openai = OpenAiLlmConfig(base_url=f"http://127.0.0.1:{server.server_address[1]}/v1", api_key_env=None,
                             timeout_seconds=120.0)  # fmt: skip
    client = instruct_config.llm.model_copy(
        update={"backend": "openai", "model": embedded.model_id, "cache_path": str(tmp_path / "client.sqlite"),
                "openai": openai}
    )  # fmt: skip
    yield load_llm(client)
    server.shutdown()
    server.server_close()


def test_the_judge_scores_through_the_openai_compatible_server(
    served_judge: Llm, instruct_config: InstructConfig, tmp_path: Path
) -> None:
    candidates = [candidate("good", GOOD), candidate("other", "A small step keeps the loss going down steadily.")]
    rows = filter_candidates(candidates, [SOURCE] * 2, instruct_config.filter, served_judge)
    threshold = instruct_config.filter.judge.threshold
    for row in rows:
        if row["judge_score"] is None:  # an answer that never validated: kept, with the reason (on_invalid: keep)
            assert row["keep"] and row["judge_reason"]
        else:
            assert 1 <= row["judge_score"] <= 5
            assert row["keep"] == (row["judge_score"] >= threshold)
            assert row["reason"] == (None if row["keep"] else "judge_rejected")
    with sqlite3.connect(tmp_path / "client.sqlite") as db:  # the answers came over the server, and are cached
        assert db.execute("SELECT COUNT(*) FROM calls").fetchone()[0] >= 2
    assert filter_candidates(candidates, [SOURCE] * 2, instruct_config.filter, served_judge) == rows


def item(**fields) -> dict:
    base = {"item_id": "i", "images": [{"bytes": b"", "path": "a.jpg"}], "ocr": "", "transcript": "", "caption": "",
            "conversations": [], "action": "rewrite", "category": None}  # fmt: skip
    return base | fields


def qa(question: str) -> list[dict]:
    return as_turns([(question, "an answer")], 1)


@pytest.mark.parametrize(
    ("fields", "category"),
    [
        ({"conversations": qa("What does the bar chart show for 2020?")}, "Chart"),
        ({"conversations": qa("Solve the equation for x.")}, "Code & Math"),
        ({"conversations": qa("What is written on the sign?")}, "OCR"),
        ({"caption": "A dog on a beach."}, "Caption"),
        ({"images": [], "conversations": qa("Tell me a story.")}, "Language"),
        ({"images": [{"bytes": b"", "path": "a.jpg"}] * 2, "conversations": qa("Which differs?")}, "Multi-Image"),
        ({"conversations": as_turns([("Find the cat.", "[0.1, 0.2, 0.5, 0.6]")], 1)}, "Detection"),
        ({"images": [{"bytes": b"", "path": "clip.mp4"}], "caption": "A talk."}, "Video"),
    ],
)
def test_rules_place_what_they_can_tell(fields: dict, category: str) -> None:
    assert rule_category(item(**fields))[0] == category


def test_a_source_category_and_action_come_first(instruct_config: InstructConfig) -> None:
    rows = categorise([item(category="Domain-specific"), item(item_id="d", action="discard")],
                      instruct_config.triage, None)  # fmt: skip
    assert (rows[0]["category"], rows[0]["category_by"], rows[0]["keep"]) == ("Domain-specific", "config", True)
    assert (rows[1]["keep"], rows[1]["reason"]) == (False, "discarded_source")


def test_items_with_images_reach_a_vision_model_as_content_parts(instruct_config: InstructConfig) -> None:
    """With `rewrite.vlm` set, the item's images travel as image parts: the embedded text-only model refuses them,
    naming what it was sent (a VLM behind vLLM reads them)."""
    picture = shared.chart_png()
    chart = item(images=[{"bytes": picture, "path": "chart.png"}], ocr="Sales by year: 2019 20, 2020 35, 2021 50.")
    with pytest.raises(ImageInputError, match=r"cannot read the 1 image\(s\) of this request \(96x64 PNG\)"):
        rewrite_items([chart], ["Chart"], instruct_config.rewrite, load_llm(instruct_config.llm), sees_images=True)


def test_each_turn_asks_about_its_own_part_of_the_text() -> None:
    text = "Gradient descent takes small steps. The step size is the learning rate. Too large a rate diverges."
    assert focus_parts(item(transcript=text), 2) == [
        "Gradient descent takes small steps. The step size is the learning rate.",
        "Too large a rate diverges.",
    ]
    assert focus_parts(item(transcript="One short sentence here."), 3) == ["One short sentence here."] * 3


def test_a_benchmark_set_that_cannot_be_read_is_reported_not_checked(instruct_config: InstructConfig) -> None:
    """The eval config's hub sets have no local path: nothing is fetched, each is listed with what to set; with
    `missing: fail` the first one stops the stage."""
    defaults = instruct_config.decontaminate.model_copy(update={"eval_config": None})
    sets, unchecked, _ = benchmark_examples(defaults)
    assert sets == {} and set(unchecked) == set(defaults.sets)
    assert all("set datasets." in reason for reason in unchecked.values())
    with pytest.raises(DatasetUnavailable, match=defaults.sets[0]):
        benchmark_examples(defaults.model_copy(update={"missing": "fail"}))
