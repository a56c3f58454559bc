"""End to end: the tiny LLaVA of the training config (random weights, the SmolLM2 tokenizer) evaluated on every
benchmark fixture at 0 and 2 shots, resumed, and pushed past its context."""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

import pytest

from configs.eval import EvalConfig, parse_eval_config
from configs.schema import _merge
from eval.__main__ import main
from eval.generate import load_generator
from eval.run import evaluate, read_jsonl
from storage.outdir import OutDir
from tests.conftest import save_tiny_llava

FIXTURES = Path(__file__).parent / "data" / "benchmarks"
SET_FOLDERS = {
    "okvqa_val": "okvqa",
    "okvqa_train": "okvqa",
    "textvqa_val": "textvqa",
    "textvqa_train": "textvqa",
    "scienceqa_test": "scienceqa",
    "scienceqa_train": "scienceqa",
    "mathvista_testmini": "mathvista",
    "mathvision_test": "mathvision",
    "mathverse_testmini": "mathverse",
}
BENCHMARKS = ["okvqa", "textvqa", "scienceqa", "mathvista", "mathvision", "mathverse"]
SHORT_POSITIONS = 128  # a 2-shot OKVQA prompt (~165 tokens) fits only with RoPE scaling by 2


@pytest.fixture(scope="session")
def short_context_llava(tmp_path_factory: pytest.TempPathFactory) -> Path:
    positions = {
        "model.language_model.config.max_position_embeddings": SHORT_POSITIONS,
        "model.model_max_length": SHORT_POSITIONS,
    }
    return save_tiny_llava(tmp_path_factory.mktemp("short-llava"), positions)


def fixture_config(tmp_path: Path, **overrides: object) -> EvalConfig:
    """Every set read from the fixtures, short answers (random weights never stop on their own), 2 queries each."""
    benchmarks = {name: {"max_new_tokens": 4} for name in BENCHMARKS}
    data = {
        "datasets": {name: {"path": str(FIXTURES / folder)} for name, folder in SET_FOLDERS.items()},
        "benchmarks": benchmarks,
        "limit": 2,
        "rices": {"cache_dir": str(tmp_path / "rices")},
        "generation": {"threads": 2},
    }
    return parse_eval_config(_merge(data, overrides))


def test_tiny_llava_on_every_benchmark_at_0_and_2_shots_then_resumed(tiny_llava: Path, tmp_path: Path) -> None:
    config = fixture_config(tmp_path)
    summary = evaluate(config, str(tiny_llava), tmp_path / "out", BENCHMARKS, [0, 2])
    out = OutDir(tmp_path / "out")

    table = (tmp_path / "out" / "results.md").read_text()
    assert "| Shots | OKVQA | TextVQA | ScienceQA-IMG | MathVista | MathVision | MathVerse | Avg. |" in table
    assert table.count("\n| 0 | ") == 1 and table.count("\n| 2 | ") == 1
    assert (tmp_path / "out" / "accuracy_by_shots.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert set(summary["average"]) == {"0", "2"}

    for name in BENCHMARKS:
        zero = read_jsonl(out, out.path("predictions", f"{name}-0shot.jsonl"))
        two = read_jsonl(out, out.path("predictions", f"{name}-2shot.jsonl"))
        assert [row["example_ids"] for row in zero] == [[], []]
        assert all(len(row["example_ids"]) == 2 and row["id"] not in row["example_ids"] for row in two)
        assert all(0 <= row["score"] <= 1 and not row["context_overflow"] for row in zero + two)
        assert all(row["prompt_tokens"] > 0 for row in zero)
        # a 2-shot prompt carries two more image turns than the query alone
        assert all(b["prompt_tokens"] > a["prompt_tokens"] for a, b in zip(zero, two, strict=True))
        scores = json.loads((tmp_path / "out" / "scores" / f"{name}-2shot.json").read_text())
        assert scores["count"] == 2 and scores["generated_now"] == 2
    math_scores = json.loads((tmp_path / "out" / "scores" / "mathvista-0shot.json").read_text())
    assert math_scores["scored_by"] == ["rules"]

    before = {p.name: p.read_text() for p in (tmp_path / "out" / "predictions").iterdir()}
    again = evaluate(config, str(tiny_llava), tmp_path / "out", BENCHMARKS, [0, 2])
    assert all(cell["generated_now"] == 0 for by_k in again["cells"].values() for cell in by_k.values())
    assert {p.name: p.read_text() for p in (tmp_path / "out" / "predictions").iterdir()} == before


def test_a_changed_template_regenerates_only_its_benchmark(tiny_llava: Path, tmp_path: Path) -> None:
    evaluate(fixture_config(tmp_path), str(tiny_llava), tmp_path / "out", ["okvqa", "textvqa"], [0])
    changed = fixture_config(tmp_path, benchmarks={"okvqa": {"query_template": "<image>\nQ: {question}"}})
    summary = evaluate(changed, str(tiny_llava), tmp_path / "out", ["okvqa", "textvqa"], [0])
    assert summary["cells"]["okvqa"]["0"]["generated_now"] == 2
    assert summary["cells"]["textvqa"]["0"]["generated_now"] == 0
    rescored = fixture_config(tmp_path, benchmarks={"textvqa": {"scorer": "vqa", "title": "TextVQA (VQA scoring)"}})
    summary = evaluate(rescored, str(tiny_llava), tmp_path / "out", ["textvqa"], [0])
    assert summary["cells"]["textvqa"]["0"]["generated_now"] == 0  # another scorer rescores, it does not regenerate


def test_a_checkpoint_retrained_in_place_is_another_model(tiny_llava: Path, tmp_path: Path) -> None:
    config = fixture_config(tmp_path)
    evaluate(config, str(tiny_llava), tmp_path / "out", ["scienceqa"], [0])
    weights = tiny_llava / "model.safetensors"
    stat = weights.stat()
    os.utime(weights, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    again = evaluate(config, str(tiny_llava), tmp_path / "out", ["scienceqa"], [0])
    assert again["cells"]["scienceqa"]["0"]["generated_now"] == 2


def test_a_prompt_past_the_context_is_recorded_not_truncated_and_rope_scaling_fits_it(
    short_context_llava: Path, tmp_path: Path
) -> None:
    model = str(short_context_llava)
    unscaled = fixture_config(tmp_path, generation={"rope_scaling": None})
    cell = evaluate(unscaled, model, tmp_path / "plain", ["okvqa"], [0, 2])["cells"]["okvqa"]
    assert cell["0"]["context_overflow"] == 0
    assert cell["2"]["context_overflow"] == 2 and cell["2"]["accuracy"] == 0.0 and not cell["2"]["rope_scaled"]
    plain = OutDir(tmp_path / "plain")
    rows = read_jsonl(plain, plain.path("predictions", "okvqa-2shot.jsonl"))
    assert all(row["prompt_tokens"] + 4 > SHORT_POSITIONS and row["prediction"] == "" for row in rows)
    assert all(row["scored_by"] == "context_overflow" and len(row["example_ids"]) == 2 for row in rows)

    scaled = fixture_config(tmp_path, generation={"rope_scaling": {"type": "linear", "factor": 2.0, "from_shots": 2}})
    cell = evaluate(scaled, model, tmp_path / "scaled", ["okvqa"], [2])["cells"]["okvqa"]["2"]
    assert cell["rope_scaled"] and cell["context_overflow"] == 0 and cell["generated_now"] == 2


def test_cli_writes_the_table_and_refuses_an_unknown_benchmark(
    tiny_llava: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "eval.yaml"
    config.write_text(json.dumps(fixture_config(tmp_path).model_dump(mode="json")))  # JSON is YAML
    out = tmp_path / "cli"
    args = ["--model", str(tiny_llava), "--benchmarks", "scienceqa", "--shots", "0,1", "--out", str(out)]
    assert main([*args, "--config", str(config), "--selection", "random"]) == 0
    assert "| 1 |" in (out / "results.md").read_text()
    assert json.loads((out / "scores" / "scienceqa-1shot.json").read_text())["selection"] == "random"
    assert main([*args[:2], "--benchmarks", "vqav2", "--out", str(out), "--config", str(config)]) == 2
    assert "unknown benchmark" in capsys.readouterr().err


def test_the_vllm_back_end_without_vllm_says_what_it_needs(tiny_llava: Path, tmp_path: Path) -> None:
    if importlib.util.find_spec("vllm") is not None:
        pytest.skip("vllm is installed: this checks the message of a machine without it")
    generation = fixture_config(tmp_path).generation.model_copy(update={"backend": "vllm"})
    with pytest.raises(RuntimeError, match="needs the vllm package"):
        load_generator(str(tiny_llava), generation, 3)
