"""The pydantic schema every config is validated against before any work starts.

Defaults live in `default.yaml`, not here: a user config is merged over it, then validated, so an unknown
key or a wrong type fails at once with the dotted name of the key.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

CONFIG_DIR = Path(__file__).resolve().parent
DEFAULT_CONFIG = CONFIG_DIR / "default.yaml"


class Section(BaseModel):
    """A config section: no unknown keys, no silent coercion of the wrong type."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class InputConfig(Section):
    video_extensions: list[str]


class ProbeConfig(Section):
    require_audio: bool
    min_duration_seconds: float = Field(ge=0)


class AsrConfig(Section):
    backend: Literal["faster-whisper"]
    model: str = Field(description="pkg:<module>/<dir> for a model a package ships, a local dir, or a hub name")
    device: str
    compute_type: str
    cpu_threads: int = Field(ge=0)
    language: str | None
    beam_size: int = Field(ge=1)
    vad_filter: bool


class ClipsConfig(Section):
    min_seconds: float = Field(gt=0)
    max_seconds: float = Field(gt=0)
    sentence_endings: str


class KeyframesConfig(Section):
    sample_interval_seconds: float = Field(gt=0)
    ssim_width: int = Field(ge=16, description="frames are downscaled to this width and made grayscale for SSIM")
    ssim_threshold: float = Field(gt=0, le=1)
    jpeg_quality: int = Field(ge=1, le=100)
    max_width: int | None = Field(default=None, ge=16, description="keyframes wider than this are downscaled")


class OcrConfig(Section):
    backend: Literal["rapidocr"]
    min_confidence: float = Field(ge=0, le=1)


class InterleaveConfig(Section):
    ocr_separator: str


class PackConfig(Section):
    max_images_per_sample: int = Field(ge=1)
    max_tokens_per_sample: int = Field(ge=1)
    end_of_video_marker: str
    tokenizer: str = Field(
        description="pkg:<module>/<file> for a tokenizer.json a package ships, a path, or a hub name"
    )


class ShardsConfig(Section):
    target_bytes: int = Field(ge=1)


class RunConfig(Section):
    workers: int = Field(ge=1, description="videos processed at once within a stage")
    progress: bool


class PipelineConfig(Section):
    input: InputConfig
    probe: ProbeConfig
    asr: AsrConfig
    clips: ClipsConfig
    keyframes: KeyframesConfig
    ocr: OcrConfig
    interleave: InterleaveConfig
    pack: PackConfig
    shards: ShardsConfig
    run: RunConfig


class ConfigError(ValueError):
    """A config that cannot be used; the message names the offending key."""


def _merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _first_error(error: ValidationError) -> str:
    first = error.errors()[0]
    key = ".".join(str(part) for part in first["loc"]) or "<root>"
    if first["type"] == "extra_forbidden":
        return f"unknown config key '{key}'"
    return f"config key '{key}': {first['msg']} (got {first.get('input')!r})"


def parse_config(data: dict[str, Any]) -> PipelineConfig:
    """Validate a config dict merged over the embedded defaults."""
    defaults = yaml.safe_load(DEFAULT_CONFIG.read_text())
    try:
        return PipelineConfig.model_validate(_merge(defaults, data))
    except ValidationError as error:
        raise ConfigError(_first_error(error)) from None


def load_config(path: str | Path | None) -> PipelineConfig:
    """Read a YAML config (or only the defaults when `path` is None) and validate it."""
    if path is None:
        return parse_config({})
    try:
        data = yaml.safe_load(Path(path).read_text()) or {}
    except (OSError, yaml.YAMLError) as error:
        raise ConfigError(f"cannot read config {path}: {error}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config {path} must be a mapping of sections, got {type(data).__name__}")
    return parse_config(data)


def dump_config(config: PipelineConfig) -> str:
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)
