"""The schema of the instruction-data config (`instruct.yaml`): validated before any model loads, defaults in the YAML.

A user config is merged over `instruct.yaml` the way a pipeline config is merged over `default.yaml`, so an unknown
key or a wrong type fails at once with the dotted name of the key.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator

from configs.schema import (
    CONFIG_DIR,
    EmbeddingsConfig,
    LlmConfig,
    RunConfig,
    Section,
    read_config_file,
    validate_config,
)

INSTRUCT_CONFIG = CONFIG_DIR / "instruct.yaml"

# MAmmoTH-VL's ten task categories.
CATEGORIES = ("General", "OCR", "Chart", "Caption", "Domain-specific", "Code & Math", "Language", "Detection",
              "Multi-Image", "Video")  # fmt: skip
Category = Literal["General", "OCR", "Chart", "Caption", "Domain-specific", "Code & Math", "Language", "Detection",
                   "Multi-Image", "Video"]  # fmt: skip
Action = Literal["keep", "rewrite", "discard"]


class ShardSourceConfig(Section):
    """Our shards as a source: one item per kept keyframe, with its clip's OCR and speech."""

    tag: str = Field(description="the source tag of every shard item")
    action: Action
    neighbours: int = Field(ge=0, description="the speech of this many clips before and after joins the context")
    min_context_words: int = Field(ge=0, description="a keyframe with fewer words of OCR and speech is no item")
    end_of_video_marker: str = Field(description="the text position pack puts between videos (never context)")
    max_items: int | None = Field(ge=1, description="the first N items of the set; null = all")


class UserSourceConfig(Section):
    """A user-brought image-text set: a Parquet/JSON/JSONL file or a `datasets` folder (save_to_disk)."""

    path: str
    format: Literal["auto", "llava", "qa", "caption"] = Field(
        description="llava: {image, conversations}; qa: image, question, answer; caption: image, caption; auto: "
        "by the columns of the first row"
    )
    action: Action
    category: Category | None = Field(description="every item's category; null = rules, then the LLM")
    max_items: int | None = Field(ge=1)


class TriageConfig(Section):
    llm_fallback: bool = Field(description="ask the LLM for the category of an item the rules cannot place")
    default_category: Category = Field(description="when the rules cannot tell and the LLM is off or fails")
    prompt: str = Field(description="asks for the category of {item}, one of {categories}")


class RewritePrompt(Section):
    question: str = Field(description="asks for one question over {context}, about the turn's part of it, {focus}")
    answer: str = Field(description="asks for the answer to {question} over {context}")


class RewriteConfig(Section):
    prompts: dict[str, RewritePrompt] = Field(description="per category; 'default' for the others")
    text_only_note: str = Field(description="said before the context when the model cannot see the image")
    turns: int = Field(ge=1, le=8, description="question-answer turns per conversation (at most)")
    question_max_new_tokens: int = Field(ge=8)
    max_new_tokens: int = Field(ge=16, description="the cap on an answer")
    vlm: LlmConfig | None = Field(description="a vision-language model for items with images; null = the text LLM")

    @model_validator(mode="after")
    def _known_categories(self) -> RewriteConfig:
        unknown = set(self.prompts) - {*CATEGORIES, "default"}
        if unknown:
            raise ValueError(f"rewrite.prompts: unknown categories {sorted(unknown)}")
        if "default" not in self.prompts:
            raise ValueError("rewrite.prompts needs a 'default' prompt")
        return self


class JudgeConfig(Section):
    enabled: bool
    prompt: str = Field(description="asks for a score of {conversation} given {context}")
    threshold: int = Field(ge=1, le=5, description="a conversation scored below it is dropped (judge_rejected)")
    on_invalid: Literal["keep", "drop"] = Field(description="a judge answer that never validates: keep or drop")
    judge_originals: bool = Field(description="also judge conversations kept as they came")


class RulesConfig(Section):
    min_answer_words: int = Field(ge=1)
    max_answer_words: int = Field(ge=1)
    languages: list[str] = Field(description="ISO 639-1 codes an answer may be in")
    min_language_confidence: float = Field(ge=0, le=1, description="below it the language verdict is ignored")
    max_repeated_share: float = Field(gt=0, le=1, description="share of an answer's words in loops")
    repetition_max_ngram: int = Field(ge=1, description="the longest phrase, in words, looked for as a loop")
    repetition_min_repeats: int = Field(ge=2, description="times in a row a phrase must come to count as a loop")
    max_question_overlap: float = Field(
        gt=0, le=1, description="an answer whose content words are this share of the question's or more restates it"
    )
    meta_phrases: list[str] = Field(
        description="words about the prompt or the format, not the item (lowercase, words only): an answer saying one "
        "that its source does not is a meta_answer"
    )
    min_shared_content_words: int = Field(
        ge=0, description="content words an answer must share with its source text (items that have one)"
    )
    max_copied_ngram_share: float = Field(gt=0, le=1, description="share of an answer's word n-grams in its source")
    copy_ngram: int = Field(ge=2)


class FilterConfig(Section):
    rules: RulesConfig
    judge: JudgeConfig


class DedupConfig(Section):
    enabled: bool
    threshold: float = Field(gt=0, le=1, description="MiniLM cosine of two conversations' text at which one goes")


class DecontaminateConfig(Section):
    eval_config: str | None = Field(description="the eval config naming the benchmarks' sets; null = eval.yaml")
    sets: list[str] = Field(description="its datasets entries to check against (the benchmarks' query sets)")
    use_hub: bool = Field(description="read a set without a local path from the hub; false: it is not checked")
    missing: Literal["record", "fail"] = Field(
        description="a set that cannot be read: record it as not checked (in the report), or fail the stage"
    )
    image_threshold: float = Field(gt=0, le=1, description="image-embedding cosine at which an item is contaminated")
    question_threshold: float = Field(gt=0, le=1, description="MiniLM cosine of a question to a benchmark question")


class MixConfig(Section):
    original_share: float = Field(ge=0, le=1, description="the share of original (not rewritten) conversations")
    seed: int


class ExportConfig(Section):
    sampling_strategy: str = Field(description="written in data.yaml for LLaVA-NeXT: all, first:N, random:N%")
    image_folder: str


class InstructConfig(Section):
    shards: ShardSourceConfig
    sources: dict[str, UserSourceConfig] = Field(description="user-brought sets by tag (--source adds more)")
    source_defaults: UserSourceConfig = Field(description="settings of a --source given on the command line")
    batch_size: int = Field(ge=1, description="items per unit of every per-batch stage")
    triage: TriageConfig
    rewrite: RewriteConfig
    filter: FilterConfig
    dedup: DedupConfig
    decontaminate: DecontaminateConfig
    mix: MixConfig
    export: ExportConfig
    llm: LlmConfig
    embeddings: EmbeddingsConfig
    run: RunConfig = Field(description="how `textbook instruct` runs its units: runner, retries, timeouts")


def parse_instruct_config(data: dict[str, Any]) -> InstructConfig:
    """Validate a config dict merged over `instruct.yaml`."""
    return validate_config(InstructConfig, data, INSTRUCT_CONFIG)


def load_instruct_config(path: str | Path | None) -> InstructConfig:
    """Read a YAML instruct config (or only the defaults when `path` is None) and validate it."""
    return parse_instruct_config({} if path is None else read_config_file(path))
