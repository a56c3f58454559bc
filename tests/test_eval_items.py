"""The eval config, the six loaders on fixtures in their published formats, and the llava_v1 prompt."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from PIL import Image

from configs.eval import EvalConfig, load_eval_config, parse_eval_config
from configs.schema import ConfigError
from eval.items import Example, load_examples
from eval.prompt import build_prompt, pad_to_square, prompt_images
from eval.scorers import MathProblem
from eval.sources import DatasetUnavailable

FIXTURES = Path(__file__).parent / "data" / "benchmarks"


@pytest.fixture(scope="module")
def config() -> EvalConfig:
    folders = {"okvqa": "okvqa", "textvqa": "textvqa", "scienceqa": "scienceqa", "mathvista": "mathvista"}
    folders |= {"mathvision": "mathvision", "mathverse": "mathverse"}
    return parse_eval_config(
        {
            "datasets": {
                name: {"path": str(FIXTURES / folders[entry.loader])}
                for name, entry in load_eval_config(None).datasets.items()
            }
        }
    )


def examples(config: EvalConfig, name: str, versions: list[str] | None = None) -> list[Example]:
    return load_examples(name, config.datasets[name], versions or config.mathverse_versions)


def test_defaults_pair_queries_and_supports_as_the_paper() -> None:
    defaults = load_eval_config(None)
    pairs = {name: (b.queries, b.support) for name, b in defaults.benchmarks.items()}
    assert pairs == {
        "okvqa": ("okvqa_val", "okvqa_train"),
        "textvqa": ("textvqa_val", "textvqa_train"),
        "scienceqa": ("scienceqa_test", "scienceqa_train"),
        "mathvista": ("mathvista_testmini", "mathvision_test"),
        "mathvision": ("mathvision_test", "mathvista_testmini"),
        "mathverse": ("mathverse_testmini", "mathvision_test"),
    }
    assert [b.max_new_tokens for b in defaults.benchmarks.values()] == [128, 128, 128, 512, 512, 512]
    assert defaults.shots == [0, 1, 2, 4, 8] and defaults.generation.rope_scaling.from_shots == 8


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"shots": [0, 2], "shot": 1}, "unknown config key 'shot'"),
        ({"benchmarks": {"okvqa": {"max_new_tokens": 0}}}, "benchmarks.okvqa.max_new_tokens"),
        ({"benchmarks": {"okvqa": {"support": "vqav2_train"}}}, "no datasets entry"),
        ({"benchmarks": {"okvqa": {"query_template": "{question}"}}}, "exactly one <image>"),
    ],
)
def test_a_bad_config_fails_naming_the_key(data: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_eval_config(data)


def test_vqa_sets_keep_every_annotator_and_okvqa_its_raw_answers(config: EvalConfig) -> None:
    okvqa = examples(config, "okvqa_val")
    assert [e.id for e in okvqa] == ["okvqa_val/1001", "okvqa_val/1002", "okvqa_val/1003"]
    assert okvqa[1].answers == ("Dogs",) * 10 and okvqa[1].example_answer == "Dogs"  # raw_answer, not "dogs"
    textvqa = examples(config, "textvqa_val")
    assert textvqa[0].question == "what does the sign say?" and len(textvqa[0].answers) == 10
    assert "STOP" not in textvqa[0].question  # no OCR tokens in the prompt
    assert Image.open(io.BytesIO(textvqa[0].image)).size == (64, 64)


def test_scienceqa_img_keeps_items_with_an_image_and_answers_with_letters(config: EvalConfig) -> None:
    test = examples(config, "scienceqa_test")
    assert len(test) == 3  # the fixture's imageless question is not ScienceQA-IMG
    assert (
        test[1].question
        == "Context: Moles dig burrows.\nWhich animal's feet are adapted for digging?\nA. mole\nB. eagle"
    )
    assert test[2].answers == ("B",) and test[2].choices == ("Denver", "Salt Lake City", "Boise", "Helena")


def test_mathvista_queries_are_its_real_testmini_queries(config: EvalConfig) -> None:
    items = {e.id: e for e in examples(config, "mathvista_testmini")}
    assert set(items) == {f"mathvista_testmini/{pid}" for pid in ("1", "2", "5", "7", "8")}
    cup = items["mathvista_testmini/2"]
    assert cup.question.endswith("Question: what is the total volume of the measuring cup? (Unit: g)")
    assert cup.math == MathProblem("1000", "free_form", "integer")
    angle = items["mathvista_testmini/5"]
    assert angle.example_answer == "A" and angle.math.choices == ("97", "102", "107", "122")
    assert items["mathvista_testmini/1"].math.precision == 1


def test_a_mathvision_item_becomes_its_question_and_options(config: EvalConfig) -> None:
    items = examples(config, "mathvision_test")
    assert items[0].question == "How many squares are in the picture?\nChoices:\n(A) 1\n(B) 2\n(C) 3\n(D) 4\n(E) 5"
    assert items[0].example_answer == "C" and items[0].math == MathProblem("3", "multi_choice", "text", tuple("12345"))
    assert items[1].question == "How many edges does the solid in have?" and items[1].math.answer_type == "integer"


def test_mathverse_reads_the_configured_problem_versions(config: EvalConfig) -> None:
    assert len(examples(config, "mathverse_testmini")) == 6  # five versions with an image, one free-form item
    only = examples(config, "mathverse_testmini", ["Vision Only"])
    assert [e.id for e in only] == ["mathverse_testmini/5"] and only[0].math.question_type == "multi_choice"


def test_a_missing_set_says_what_to_configure(config: EvalConfig, tmp_path: Path) -> None:
    missing = config.datasets["okvqa_val"].model_copy(update={"path": str(tmp_path / "nowhere")})
    with pytest.raises(DatasetUnavailable, match="no such file"):
        load_examples("okvqa_val", missing, [])
    empty = missing.model_copy(update={"path": str(tmp_path)})
    with pytest.raises(DatasetUnavailable, match="no validation"):
        load_examples("okvqa_val", empty, [])


def test_the_llava_v1_prompt_with_one_example(config: EvalConfig) -> None:
    shot = Example(id="s/1", image=b"shot", question="What is it?", answers=("cat", "dog"), example_answer="cat")
    query = Example(id="q/1", image=b"query", question="And this?", answers=("dog",), example_answer="dog")
    prompt = build_prompt(query, [shot], config.benchmarks["okvqa"], config.prompt, "</s>")
    suffix = "\nAnswer the question using a single word or phrase."
    assert prompt.text == (
        f"{config.prompt.system} USER: <image>\nWhat is it?{suffix} ASSISTANT: cat</s>"
        f"USER: <image>\nAnd this?{suffix} ASSISTANT:"
    )
    assert prompt.images == (b"shot", b"query") and prompt.example_ids == ("s/1",) and prompt.max_new_tokens == 128
    math = build_prompt(query, [shot], config.benchmarks["mathvista"], config.prompt, "<eos>").text
    assert "USER: <image>\nQuestion: What is it? ASSISTANT: cat<eos>USER: <image>\nAnd this? ASSISTANT:" in math


def test_images_are_padded_to_a_square_with_the_fill_colour() -> None:
    wide = Image.new("RGB", (40, 20), (255, 0, 0))
    square = pad_to_square(wide, (1, 2, 3))
    assert square.size == (40, 40)
    assert square.getpixel((0, 0)) == (1, 2, 3) and square.getpixel((20, 20)) == (255, 0, 0)
    assert square.getpixel((20, 9)) == (1, 2, 3) and square.getpixel((20, 10)) == (255, 0, 0)
    buffer = io.BytesIO()
    wide.save(buffer, format="PNG")
    prompt = build_prompt(
        Example(id="q", image=buffer.getvalue(), question="?", answers=("a",), example_answer="a"),
        [],
        load_eval_config(None).benchmarks["okvqa"],
        load_eval_config(None).prompt,
        "</s>",
    )
    assert [image.size for image in prompt_images(prompt, (0, 0, 0))] == [(40, 40)]
    assert [image.size for image in prompt_images(prompt, None)] == [(40, 20)]


def test_the_hub_route_reads_a_dataset_repository_through_datasets(config: EvalConfig) -> None:
    """`datasets.load_dataset` takes a local repository folder as it takes a hub id: the hub code path, offline."""
    hub = config.datasets["okvqa_val"].model_copy(update={"path": None, "hub": str(FIXTURES / "okvqa")})
    assert load_examples("okvqa_val", hub, []) == examples(config, "okvqa_val")
