"""The schema of the evaluation config (`eval.yaml`): validated before any model loads, defaults in the YAML.

A user config is merged over `eval.yaml` the way a pipeline config is merged over `default.yaml`, so an unknown
key or a wrong type fails at once with the dotted name of the key.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator

from configs.schema import CONFIG_DIR, LlmConfig, RunConfig, Section, read_config_file, validate_config

EVAL_CONFIG = CONFIG_DIR / "eval.yaml"

Loader = Literal["okvqa", "textvqa", "scienceqa", "mathvista", "mathvision", "mathverse"]


class DatasetConfig(Section):
    loader: Loader = Field(description="the public format the rows come in")
    path: str | None = Field(description="a local Parquet/JSON/JSONL file or a folder of <split>* files")
    hub: str | None = Field(description="the hub dataset read through `datasets` when there is no path")
    hub_config: str | None
    split: str


class BenchmarkConfig(Section):
    title: str = Field(description="its column in the results table")
    queries: str = Field(description="a datasets entry")
    support: str = Field(description="the datasets entry in-context examples come from")
    scorer: Literal["okvqa", "textvqa", "vqa", "scienceqa", "math"]
    example_template: str = Field(description="an in-context example's user turn; {question}, one <image>")
    query_template: str = Field(description="the query's user turn; {question}, one <image>")
    max_new_tokens: int = Field(ge=1)


class PromptConfig(Section):
    system: str
    user_role: str
    assistant_role: str
    pad_to_square: bool


class RicesConfig(Section):
    image_backend: Literal["efficientnet-lite0", "open_clip"]
    image_model: str = Field(description="efficientnet-lite0: its .pth; open_clip: a model name (ViT-L-14)")
    image_pretrained: str | None
    device: str
    batch_size: int = Field(ge=1)
    cache_dir: str = Field(description="support and query embeddings, one .npy per set and embedder")


class RopeScalingConfig(Section):
    type: Literal["linear", "dynamic"]
    factor: float = Field(gt=1)
    from_shots: int = Field(ge=0, description="prompts with at least this many examples run RoPE-scaled")


class VllmGenerationConfig(Section):
    tensor_parallel_size: int = Field(ge=1)
    gpu_memory_utilization: float = Field(gt=0, le=1)
    max_model_len: int | None = Field(ge=1)
    dtype: str


class GenerationConfig(Section):
    backend: Literal["transformers", "vllm"]
    device: str
    dtype: Literal["float32", "bfloat16", "float16"]
    threads: int = Field(ge=0)
    batch_size: int = Field(ge=1)
    rope_scaling: RopeScalingConfig | None
    vllm: VllmGenerationConfig


class JudgeExample(Section):
    user: str
    assistant: str


class MathScoringConfig(Section):
    method: Literal["rules", "llm"]
    judge_system: str
    judge_query: str = Field(description="{prediction}, {choices} (a Python list or None), {answer}")
    judge_examples: list[JudgeExample] = Field(description="worked examples, as turns before the query")
    judge: LlmConfig


class EvalConfig(Section):
    datasets: dict[str, DatasetConfig]
    mathverse_versions: list[str] = Field(min_length=1)
    benchmarks: dict[str, BenchmarkConfig]
    shots: list[int] = Field(min_length=1)
    selection: Literal["rices", "random"]
    seed: int
    limit: int | None = Field(ge=1)
    prompt: PromptConfig
    rices: RicesConfig
    generation: GenerationConfig
    math_scoring: MathScoringConfig
    run: RunConfig = Field(description="how `textbook eval` runs its cells: runner, retries, timeouts")

    @model_validator(mode="after")
    def _sets_exist(self) -> EvalConfig:
        for name, benchmark in self.benchmarks.items():
            for field in ("queries", "support"):
                if getattr(benchmark, field) not in self.datasets:
                    raise ValueError(f"benchmark {name}: {field} {getattr(benchmark, field)!r} is no datasets entry")
            for field in ("example_template", "query_template"):
                if getattr(benchmark, field).count("<image>") != 1:
                    raise ValueError(f"benchmark {name}: {field} must hold exactly one <image>")
        if any(shots < 0 for shots in self.shots):
            raise ValueError("shots must be >= 0")
        return self


def parse_eval_config(data: dict[str, Any]) -> EvalConfig:
    """Validate a config dict merged over `eval.yaml`."""
    return validate_config(EvalConfig, data, EVAL_CONFIG)


def load_eval_config(path: str | Path | None) -> EvalConfig:
    """Read a YAML eval config (or only the defaults when `path` is None) and validate it."""
    return parse_eval_config({} if path is None else read_config_file(path))
