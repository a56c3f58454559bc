"""The schema of a training config (`train-tiny.yaml`, `train-llava.yaml`), validated before any model is built.

A training config is complete in its YAML file (no defaults here); `overrides` set dotted keys on top of it, as a
test or the CLI does (`run.max_steps=10`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, model_validator

from configs.schema import CONFIG_DIR, ConfigError, Section, read_config_file, validate_config
from configs.schema import RunConfig as TaskRunConfig

Trainable = Literal["projector", "projector+llm", "all"]
TRAIN_FLOW_CONFIG = CONFIG_DIR / "train-flow.yaml"


class PartConfig(Section):
    """One part of an assembled model: pretrained weights, or a random init from a config."""

    source: str | None = Field(
        description="pkg:<module>/<file.gguf> (converted once by the LLM loader), a local folder or a hub id; null = "
        "randomly initialised from `config`"
    )
    config: dict[str, Any] = Field(description="the transformers config (with source: keys that override its own)")


class LoraConfig(Section):
    rank: int = Field(ge=1)
    alpha: int = Field(ge=1)
    dropout: float = Field(ge=0, lt=1)
    target_modules: list[str] = Field(description="module names in the language model that get adapters")


class ModelConfig(Section):
    source: str | None = Field(
        description="a whole LLaVA checkpoint (hub id or local folder); null = assembled from the parts below"
    )
    tokenizer: str | None = Field(
        description="pkg:<module>/<file.gguf>, a folder or a hub id; null = the language model's (or source's)"
    )
    language_model: PartConfig
    vision_tower: PartConfig
    projector_hidden_act: str = Field(description="the two-layer MLP projector's activation")
    vision_feature_layer: int = Field(description="-2 = the penultimate hidden layer, as LLaVA-1.5")
    vision_feature_select_strategy: Literal["default", "full"] = Field(description="default drops the CLS embedding")
    image_token: str
    model_max_length: int = Field(ge=16, description="positions after each image is expanded to its embeddings")
    rope_parameters: dict[str, Any] | None = Field(
        description="set on the language model when model_max_length exceeds its max_position_embeddings"
    )
    trainable: Trainable = Field(description="the vision tower is frozen unless 'all'")
    lora: LoraConfig | None = Field(description="adapters on the language model instead of training it in full")
    gradient_checkpointing: bool
    attn_implementation: str = Field(description="sdpa, eager, flash_attention_2, ...")
    model_cache_dir: str = Field(description="where a GGUF language model is converted once to safetensors")


class DataConfig(Section):
    text_column: Literal["texts", "text_ocr_list"] = Field(description="text_ocr_list adds each clip's OCR text")
    max_images_per_sample: int = Field(ge=1, description="the first images in document order are kept")
    shuffle: bool = Field(description="false reads samples in shard order, as the paper did")
    shuffle_buffer: int = Field(ge=1, description="samples held to draw from when shuffling")
    num_workers: int = Field(ge=0, description="dataloader processes per rank; 0 = in the training process")
    prefetch_factor: int = Field(ge=1, description="batches each worker prepares ahead")


class OptimConfig(Section):
    lr: float = Field(gt=0)
    warmup_ratio: float = Field(ge=0, lt=1, description="linear warm-up over this share of the steps, then constant")
    weight_decay: float = Field(ge=0)
    betas: list[float] = Field(min_length=2, max_length=2)
    max_grad_norm: float | None = Field(gt=0, description="null = no clipping")


class RunConfig(Section):
    batch_size: int = Field(ge=1, description="samples per micro-batch per rank")
    grad_accum: int = Field(ge=1, description="micro-batches per optimizer step")
    epochs: int = Field(ge=1)
    max_steps: int | None = Field(ge=1, description="null = until the data of `epochs` runs out")
    checkpoint_every: int = Field(ge=1, description="optimizer steps between checkpoints")
    keep_checkpoints: int = Field(ge=1, description="the newest ones kept; older ones are removed")
    log_every: int = Field(ge=1)
    seed: int
    precision: Literal["auto", "bf16", "fp32"] = Field(description="auto = bf16 where the GPU has it, else fp32")
    fsdp: bool = Field(description="shard parameters, gradients and optimizer state (FSDP2) when world size > 1")
    save_model: bool = Field(description="write the trained model in the Hugging Face format at the end")
    peak_flops: float | None = Field(gt=0, description="per-GPU peak for MFU; null = looked up from the GPU's name")
    threads: int = Field(ge=0, description="torch CPU threads per process; 0 = torch's choice")


class TrainConfig(Section):
    model: ModelConfig
    data: DataConfig
    optim: OptimConfig
    run: RunConfig

    @model_validator(mode="after")
    def _lora_needs_llm_training(self) -> TrainConfig:
        if self.model.lora is not None and self.model.trainable == "projector":
            raise ValueError("model.lora adapts the language model: set model.trainable to projector+llm or all")
        return self


def _set_dotted(data: dict[str, Any], key: str, value: Any) -> None:
    *parents, leaf = key.split(".")
    node = data
    for part in parents:
        child = node.get(part)
        if not isinstance(child, dict):
            raise ConfigError(f"override '{key}': '{part}' is not a section")
        node = child
    node[leaf] = value


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """`KEY=VALUE` items of a command line (`run.max_steps=10`), each value read as YAML."""
    return {key: yaml.safe_load(value) for key, _, value in (item.partition("=") for item in items)}


def parse_train_config(data: dict[str, Any], overrides: dict[str, Any] | None = None) -> TrainConfig:
    for key, value in (overrides or {}).items():
        _set_dotted(data, key, value)
    return validate_config(TrainConfig, data)


def load_train_config(path: str | Path, overrides: dict[str, Any] | None = None) -> TrainConfig:
    return parse_train_config(read_config_file(path), overrides)


def dump_train_config(config: TrainConfig) -> str:
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)


class TrainJobConfig(Section):
    """A training run as the engine and the flows run it: what it trains, and how its unit runs as a Prefect task
    (runner, retries, timeouts: `train-flow.yaml`), the executor settings the data pipeline's stages have."""

    train: TrainConfig
    run: TaskRunConfig


def parse_train_job(data: dict[str, Any]) -> TrainJobConfig:
    return validate_config(TrainJobConfig, data)


def load_train_job(path: str | Path, overrides: dict[str, Any] | None = None) -> TrainJobConfig:
    """A training config (with `overrides`) and the task settings of `train-flow.yaml`."""
    task_settings = yaml.safe_load(TRAIN_FLOW_CONFIG.read_text())
    return parse_train_job({"train": load_train_config(path, overrides).model_dump(mode="json"), **task_settings})
