"""The pydantic schema every config is validated against before any work starts.

Defaults live in `default.yaml`, not here: a user config is merged over it, then validated, so an unknown
key or a wrong type fails at once with the dotted name of the key.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, TypeVar
from urllib.parse import urlsplit

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from configs.secrets import redact

ModelT = TypeVar("ModelT", bound=BaseModel)

CONFIG_DIR = Path(__file__).resolve().parent
DEFAULT_CONFIG = CONFIG_DIR / "default.yaml"


class Section(BaseModel):
    """A config section: no unknown keys, no silent coercion of the wrong type."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class InputConfig(Section):
    video_extensions: list[str]
    follow_symlinks: bool = Field(
        description="take a folder's symlinks that point outside it; false: list them ignored"
    )
    allowed_roots: list[str] = Field(description="folders every local input must lie in (a served deployment's "
                                     "config); empty: anywhere, as the CLI reads what its user names")  # fmt: skip


class TaxonomyConfig(Section):
    subjects: list[str] = Field(description="roots of the tree the LLM expands; empty: no collection front")
    file: str | None = Field(description="a YAML tree or a CSV (subject,course,sub_course,knowledge_point) to use")
    courses_per_subject: int = Field(ge=1)
    sub_courses_per_course: int = Field(ge=1)
    points_per_sub_course: int = Field(ge=1)
    prompt: str = Field(description="asks for {count} {child}s of {path}")


class SearchConfig(Section):
    url_template: str = Field(description="yt-dlp URL with {n}, {query}, {quoted} or {slug}; ytsearch{n}:{query}")
    query_template: str = Field(description="the query of a point: {knowledge_point}, {sub_course}, {course}, ...")
    results_per_point: int = Field(ge=1)
    refresh_hours: float | None = Field(
        gt=0, description="null: a point is searched once; N: searched again in each new period of N hours"
    )


class FilterMetaConfig(Section):
    min_duration_seconds: float = Field(ge=0)
    max_duration_seconds: float = Field(gt=0)
    drop_live: bool
    drop_shorts: bool
    languages: list[str] = Field(description="ISO 639-1 codes kept by the title/description language detector")
    min_language_confidence: float = Field(ge=0, le=1, description="below it the detector's verdict is ignored")
    blocked_channels: list[str]
    blocked_keywords: list[str]
    llm_scoring: bool
    min_relevance: float = Field(ge=0, le=10)
    min_knowledge_density: float = Field(ge=0, le=10)
    prompt: str = Field(description="scores a video for {path}: {title}, {description}, {channel}")


class DownloadConfig(Section):
    format: str = Field(description="yt-dlp format selector")
    attempts: int = Field(ge=1, description="tries for transient failures (HTTP 429/5xx, timeouts)")
    backoff_seconds: float = Field(ge=0, description="wait before retry n is backoff_seconds * 2**n")
    max_retry_after_seconds: float = Field(ge=0, description="the longest wait a 429's Retry-After may ask for")
    concurrent: int = Field(ge=1, description="downloads at once per process")
    rate_limit_bytes_per_second: int | None = Field(ge=1)
    max_filesize_mb: float | None = Field(gt=0)
    socket_timeout_seconds: float = Field(gt=0)
    cookiefile: str | None = Field(description="a Netscape cookie file (its path only is kept; never its content)")
    proxy: str | None = Field(description="a proxy URL without credentials; one with a password goes in proxy_env")
    proxy_env: str | None = Field(description="the variable holding the proxy URL, credentials and all")
    media_dir: str | None = Field(description="where downloads go; default OUT/media (OUT must then be local)")
    keep_media: bool = Field(description="false: delete a downloaded video once every stage reading it is done")

    @field_validator("proxy")
    @classmethod
    def _no_password(cls, proxy: str | None) -> str | None:
        if proxy and urlsplit(proxy).password:
            raise ValueError("download.proxy carries a password: put the URL in an environment variable and name "
                             "it in download.proxy_env, so it never reaches config.yaml or Prefect")  # fmt: skip
        return proxy


class ProbeConfig(Section):
    require_audio: bool
    min_duration_seconds: float = Field(ge=0)
    min_frame_side: int = Field(ge=1, description="a video whose picture is narrower or lower than this fails")


class FasterWhisperAsrConfig(Section):
    compute_type: str = Field(description="CTranslate2 weights/compute type: int8, float16, int8_float16, ...")
    batch_size: int | None = Field(
        ge=1, description="decode VAD-cut pieces in batches (implies VAD); null = one 30 s window at a time"
    )
    max_piece_seconds: int = Field(
        ge=1, le=30, description="batched: the longest piece, which is one segment; keep it within clips.max_seconds"
    )


class OpenAiWhisperAsrConfig(Section):
    fp16: bool = Field(description="half precision on GPU; the CPU runs float32 whatever this says")
    model_cache_dir: str = Field(description="a CTranslate2 model is converted once to a checkpoint here")


class AsrGuardsConfig(Section):
    action: Literal["flag", "drop"] = Field(
        description="flag: keep a suspect segment with its reasons; drop: keep it out of the table (so out of "
        "clips), listed with its reasons in the table's stats"
    )
    max_compression_ratio: float = Field(gt=0, description="gzip ratio of a segment's text above which it loops")
    min_avg_logprob: float = Field(le=0, description="mean token log-probability below which the text is a guess")
    no_speech_threshold: float = Field(ge=0, le=1, description="no-speech probability above which text is suspect")
    no_speech_max_avg_logprob: float = Field(
        le=0, description="suspect text over no speech with a mean log-probability below this is taken as made up"
    )
    repetition_max_ngram: int = Field(ge=1, description="longest phrase, in words, looked for as a loop")
    repetition_min_repeats: int = Field(ge=2, description="times in a row a phrase must come to count as a loop")
    segment_repetition_share: float = Field(gt=0, le=1, description="share of looped words that flags a segment")
    max_repetitive_share: float = Field(
        ge=0, le=1, description="share of a video's words in loops above which it is marked asr_repetitive"
    )


class AsrRecoveryConfig(Section):
    """Speech a window lost (Whisper looping or guessing after a pause) decoded again on its own."""

    enabled: bool
    min_lost_seconds: float = Field(gt=0, description="a stretch of detected speech no good segment covers, this long")
    vad_min_silence_ms: int = Field(ge=0, description="the Silero VAD's pause that separates two stretches of speech")
    vad_speech_pad_ms: int = Field(ge=0, description="audio kept on both sides of a stretch of speech")


class AsrConfig(Section):
    backend: Literal["faster-whisper", "openai-whisper"]
    model: str = Field(
        description="pkg:<module>/<dir> for a model a package ships, a local dir (CTranslate2) or file "
        "(openai-whisper checkpoint), or a hub name"
    )
    device: str
    cpu_threads: int = Field(ge=0, description="threads of the model on CPU; 0 = the library's default")
    language: str | None = Field(description="null: detected from the audio (multilingual models) and stored")
    beam_size: int = Field(ge=1)
    vad_filter: bool = Field(description="skip silence with the Silero VAD that faster-whisper ships")
    chunk_seconds: float = Field(ge=30, description="audio is decoded and transcribed in windows of this length")
    faster_whisper: FasterWhisperAsrConfig
    openai_whisper: OpenAiWhisperAsrConfig
    guards: AsrGuardsConfig
    recovery: AsrRecoveryConfig


class FilterAsrConfig(Section):
    """Whole-video rules on the transcript, then the LLM's knowledge-density score (the `llm` section)."""

    min_words: int = Field(ge=0, description="fewer words in the whole transcript: too_short")
    min_speech_seconds: float = Field(ge=0, description="fewer seconds of transcribed speech: too_short")
    min_words_per_minute: float = Field(ge=0, description="fewer words per minute of video: few_words_per_minute")
    languages: list[str] = Field(description="ISO 639-1 codes kept, for the audio's and the text's language")
    min_language_confidence: float = Field(ge=0, le=1, description="below it a language verdict is ignored")
    drop_repetitive: bool = Field(description="drop a video the asr stage marked asr_repetitive")
    llm_scoring: bool = Field(description="score knowledge density with the LLM once the rules pass")
    min_knowledge_density: float = Field(ge=0, le=10, description="a lower score drops the video")
    max_transcript_chars: int = Field(ge=1, description="the opening of the transcript the LLM reads")
    prompt: str = Field(description="asks for the knowledge density of {transcript}")


class ClipsConfig(Section):
    min_seconds: float = Field(gt=0)
    max_seconds: float = Field(gt=0)
    sentence_endings: str


class RefineConfig(Section):
    """The LLM's rewrite of each clip's ASR (the `llm` section) and the guards that accept it (`embeddings`)."""

    enabled: bool = Field(description="false: every clip keeps its ASR (reason disabled), no LLM call")
    prompt: str = Field(description="asks for the rewrite of one clip's ASR, given as {text}")
    max_new_tokens: int = Field(ge=1, description="cap on a rewrite; one that reaches it is truncated and rejected")
    repetition_penalty: float = Field(
        gt=0, description="for the rewrite only: it repeats the source's words by nature, so 1.0 (off) suits it"
    )
    min_similarity: float = Field(
        ge=-1, le=1, description="MiniLM cosine of rewrite and source below which the source is kept"
    )
    min_length_ratio: float = Field(gt=0, description="rewrite/source characters below which the source is kept")
    max_length_ratio: float = Field(gt=0, description="rewrite/source characters above which the source is kept")


class KeyframesConfig(Section):
    sample_interval_seconds: float = Field(gt=0)
    ssim_width: int = Field(ge=16, description="frames are downscaled to this width and made grayscale for SSIM")
    ssim_threshold: float = Field(gt=0, le=1)
    motion_width: int = Field(ge=16, description="width at which a candidate is aligned to the last keyframe")
    motion_max_changed_share: float = Field(
        ge=0, le=1, description="an aligned candidate with less of its area changed is the same content moved"
    )
    motion_pixel_difference: int = Field(ge=1, le=255, description="a grey-level change that counts, once aligned")
    jpeg_quality: int = Field(ge=1, le=100)
    max_width: int | None = Field(default=None, ge=16, description="keyframes wider than this are downscaled")


class OcrConfig(Section):
    backend: Literal["rapidocr"]
    min_confidence: float = Field(ge=0, le=1)
    word_gap_ratio: float | None = Field(
        gt=0, description="a blank column run this wide, over the line's height, is a space; null: the model's text"
    )


class FrameFilterConfig(Section):
    """Per keyframe: low-information frames out, then OCR dedup against the previous kept keyframe."""

    analysis_width: int = Field(ge=16, description="keyframes are measured in grayscale scaled to this width")
    blank_max_std: float = Field(ge=0, description="pixel standard deviation (0-255) at or below which it is blank")
    min_edge_density: float = Field(
        ge=0, le=1, description="share of Canny edge pixels below which a frame without text has too little detail"
    )
    min_ocr_chars: int = Field(ge=0, description="OCR characters (no spaces) a frame needs to count as having text")
    duplicate_min_similarity: float = Field(
        ge=0, le=1, description="difflib ratio of two OCR texts (letters, digits) from which they are near-duplicates"
    )
    min_new_chars: int = Field(
        ge=1, description="characters a frame's OCR must add to the previous kept one's to count as new content"
    )
    build_up_max_lost_share: float = Field(
        ge=0, le=1, description="a frame continues a build-up when at most this share of the previous text is gone"
    )
    build_up: Literal["keep_all", "most_complete"] = Field(
        description="keep_all: every step of a slide built up piece by piece; most_complete: only its last step"
    )
    visual_width: int = Field(ge=16, description="keyframes are compared picture to picture at this width")
    duplicate_max_changed_share: float = Field(
        ge=0, le=1, description="a frame is the same picture as the previous kept one when less of it changed"
    )
    pixel_difference: int = Field(ge=1, le=255, description="a grey-level change that counts, once aligned")


class PictureLabelsConfig(Section):
    """ocr_asr: a textless picture an ImageNet classifier names with confidence, compared with the speech by name."""

    model: str = Field(description="EfficientNet-Lite0 ImageNet weights (a file or pkg: path); its own head names")
    top: int = Field(ge=1, le=10, description="the most likely classes compared with the speech")
    min_confidence: float = Field(
        ge=0, le=1, description="the first class at least this likely: the classifier knows what the picture shows"
    )
    min_label_asr_similarity: float = Field(
        ge=-1, le=1, description="MiniLM cosine of the best of the names and the speech below which the picture goes"
    )
    graphic_labels: list[str] = Field(
        description="classes the classifier gives pages, screens and drawings: they say nothing of the subject, so a "
        "picture named so is not judged by its name"
    )


class ClipFilterConfig(Section):
    """Per clip: whether its keyframes stay (its speech always does)."""

    method: Literal["ocr_asr", "vlm"] = Field(
        description="ocr_asr: the embedded CPU signal (OCR text vs speech, faces); vlm: a vision-language model "
        "captions the frames (the `vlm` section) and the caption is compared with the speech"
    )
    min_ocr_asr_similarity: float = Field(
        ge=-1, le=1, description="ocr_asr: MiniLM cosine of the clip's OCR text and speech below which frames go"
    )
    min_evidence_words: int = Field(
        ge=0, description="ocr_asr: a low similarity drops frames only when their OCR has this many real words"
    )
    keep_textless_images: bool = Field(
        description="ocr_asr: frames without text, without a face and without a name the picture labeller is sure of "
        "cannot be compared with the speech; true keeps them (a diagram, a demo), false drops them"
    )
    picture_labels: PictureLabelsConfig
    face_cascades: list[str] = Field(
        description="OpenCV Haar cascades (files in cv2.data.haarcascades) whose hits count as a face or person"
    )
    min_face_area_share: float = Field(
        ge=0, le=1, description="a detection counts when its box covers at least this share of the frame"
    )
    caption_prompt: str = Field(description="vlm: the instruction sent with the clip's frames")
    min_caption_asr_similarity: float = Field(
        ge=-1, le=1, description="vlm: MiniLM cosine of the caption and the speech below which the frames go"
    )
    vlm_max_images: int = Field(ge=1, description="vlm: at most this many of a clip's frames, evenly spread")
    vlm_image_max_side: int = Field(ge=16, description="vlm: frames are downscaled to at most this many pixels a side")


class InterleaveConfig(Section):
    ocr_separator: str
    ocr_prefix: str | None = Field(
        description="put before each image's OCR text in text_ocr_list (the paper's Idefics2 variant: \"OCR: \"); "
        "null = none"
    )


class PackConfig(Section):
    max_images_per_sample: int = Field(ge=1)
    max_tokens_per_sample: int = Field(ge=1)
    end_of_video_marker: str
    tokenizer: str = Field(
        description="pkg:<module>/<file> for a tokenizer.json a package ships, a path, or a hub name"
    )


class ShardsConfig(Section):
    target_bytes: int = Field(ge=1)
    keep_superseded_sets: int = Field(ge=0, description="superseded shard sets kept for readers that opened them")


class SchedulesConfig(Section):
    """Cron schedules of the deployments `textbook serve` registers; null = run only when triggered."""

    textbook: str | None = Field(description="the whole pipeline: collect new videos (if subjects) and process them")
    collect: str | None = Field(description="collection alone; downloads and stages skip what is done")


class TaskPolicyConfig(Section):
    retries: int = Field(ge=0, description="reruns of a unit whose failure may pass (network, endpoint, timeout)")
    retry_delay_seconds: float = Field(ge=0, description="wait before the first retry; doubles at each next one")
    timeout_seconds: float | None = Field(gt=0, description="a unit running longer fails (and may retry)")


class TaskPoliciesConfig(Section):
    network: TaskPolicyConfig
    model: TaskPolicyConfig
    compute: TaskPolicyConfig


class RunConfig(Section):
    workers: int = Field(ge=1, description="videos processed at once within a stage")
    progress: bool
    runner: Literal["local", "ray", "dask"] = Field(description="local threads, or a Ray / Dask cluster")
    address: str | None = Field(description="an existing Ray or Dask cluster; null starts a local one")
    tasks: TaskPoliciesConfig = Field(description="retries and timeouts by stage kind (see pipeline/dag.py)")
    concurrency_limits: dict[str, int] = Field(
        description="task runs at once per Prefect tag: stage:<name>, network, model, compute, gpu (a stage whose "
        "model runs on a CUDA device)"
    )
    gpus_per_model_task: float = Field(ge=0, description="GPUs a Ray worker reserves for a GPU stage's task")
    malloc_arenas: int | None = Field(
        2,
        ge=1,
        description="glibc malloc arenas of a process running units (null: glibc's default, 8 per core): each thread "
        "otherwise frees into an arena of its own, which keeps the memory",
    )


class TransformersLlmConfig(Section):
    device: str
    dtype: Literal["float32", "bfloat16", "float16"]
    threads: int = Field(ge=0, description="torch CPU threads for the process; 0 = torch's default")
    parallel_batches: int = Field(
        2,
        ge=1,
        description="greedy batches generated side by side, each on its own thread (sampled ones go one at "
        "a time: torch's seed is process-wide)",
    )
    model_cache_dir: str = Field(description="a GGUF model is converted once to safetensors here")


class OpenAiLlmConfig(Section):
    base_url: str = Field(description="an OpenAI-compatible endpoint, e.g. http://127.0.0.1:8000/v1 of `vllm serve`")
    api_key_env: str | None = Field(description="the variable holding the API key; a key is never put in a config")
    timeout_seconds: float = Field(gt=0)


class VllmLlmConfig(Section):
    tensor_parallel_size: int = Field(ge=1)
    gpu_memory_utilization: float = Field(gt=0, le=1)
    max_model_len: int | None = Field(ge=1)
    dtype: str
    max_images_per_prompt: int = Field(
        ge=0, description="images one prompt may carry (vLLM's limit_mm_per_prompt); 0 for a text-only model"
    )


class LlmConfig(Section):
    backend: Literal["transformers", "openai", "vllm"]
    model: str = Field(description="pkg:<module>/<file.gguf>, a local path, a hub name, or the name a server serves")
    max_new_tokens: int = Field(ge=1)
    temperature: float = Field(ge=0, description="0 = greedy: the same prompt gives the same answer")
    top_p: float = Field(gt=0, le=1)
    seed: int
    repetition_penalty: float = Field(
        gt=0,
        description="divides the logit of a token the answer already holds (transformers back-end; vLLM counts the "
        "prompt too); 1.0 = off",
    )
    batch_size: int = Field(ge=1, description="prompts generated at once (requests in flight for openai)")
    max_retries: int = Field(ge=0, description="re-asks with the validation error when a JSON answer is invalid")
    prefill_json: bool = Field(
        description="start a JSON answer with the object's opening and first key, for the model to continue; the "
        "openai back-end needs a server that honours continue_final_message (vLLM, server.py), not api.openai.com"
    )
    json_max_new_tokens: int | None = Field(
        ge=1, description="the cap on max_new_tokens for a JSON answer (they are short); null = max_new_tokens"
    )
    cache_path: str | None = Field(description="SQLite file of answered calls, so no call is paid twice; null = none")
    transformers: TransformersLlmConfig
    openai: OpenAiLlmConfig
    vllm: VllmLlmConfig


class EmbeddingsConfig(Section):
    text_model: str = Field(description="sentence-transformers model: pkg:<module>/<folder>, a folder or a hub name")
    device: str
    image_backend: Literal["efficientnet-lite0", "open_clip"] = Field(
        description="image embeddings (InSI-SIM, RICES): EfficientNet-Lite0 ImageNet features (embedded, CPU) or "
        "an OpenCLIP image tower"
    )
    image_model: str = Field(
        description="efficientnet-lite0: its .pth (pkg:<module>/<file> or a path); open_clip: a model name, e.g. "
        "ViT-L-14"
    )
    image_pretrained: str | None = Field(
        description="open_clip: a pretrained tag (openai, laion2b_s32b_b82k) or a local checkpoint; else null"
    )
    image_batch_size: int = Field(ge=1)


class MetricsConfig(Section):
    """OUT/metrics.json: counts, distributions and InSI-SIM over the shards."""

    insi_sim_samples_per_shard: int | None = Field(
        ge=1,
        description="InSI-SIM over the first N samples of each shard (its cost grows with images squared); "
        "null = every sample",
    )
    ssim_width: int = Field(ge=16, description="InSI-SIM's SSIM compares grayscale images this many pixels wide")


class ReportConfig(Section):
    """OUT/report.html: one self-contained page (inline CSS, thumbnails as data URIs)."""

    on_run: bool = Field(description="write the report at the end of every `textbook run`")
    preview_samples: int = Field(ge=0, description="samples shown in the preview, from the first shard on")
    thumbnail_width: int = Field(ge=16, description="keyframes are shown as JPEG thumbnails this wide")
    thumbnail_quality: int = Field(ge=1, le=100)


class PipelineConfig(Section):
    input: InputConfig
    taxonomy: TaxonomyConfig
    search: SearchConfig
    filter_meta: FilterMetaConfig
    download: DownloadConfig
    probe: ProbeConfig
    asr: AsrConfig
    filter_asr: FilterAsrConfig
    clips: ClipsConfig
    refine: RefineConfig
    keyframes: KeyframesConfig
    ocr: OcrConfig
    frame_filter: FrameFilterConfig
    clip_filter: ClipFilterConfig
    interleave: InterleaveConfig
    pack: PackConfig
    shards: ShardsConfig
    run: RunConfig
    schedules: SchedulesConfig
    llm: LlmConfig
    vlm: LlmConfig = Field(description="the vision-language model of clip_filter's vlm method; same keys as llm")
    embeddings: EmbeddingsConfig
    metrics: MetricsConfig
    report: ReportConfig


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
    return f"config key '{key}': {first['msg']} (got {redact(repr(first.get('input')))})"


def validate_config(model: type[ModelT], data: dict[str, Any], defaults: Path | None = None) -> ModelT:
    """`data` merged over the YAML `defaults` (when given) and validated; the first error as one line naming its
    key. Every config of the project (pipeline, training, evaluation) is read this way."""
    merged = _merge(yaml.safe_load(defaults.read_text()), data) if defaults is not None else data
    try:
        return model.model_validate(merged)
    except ValidationError as error:
        raise ConfigError(_first_error(error)) from None


def read_config_file(path: str | Path) -> dict[str, Any]:
    """A YAML config file as a mapping of sections, or a one-line error saying why it is not one."""
    try:
        data = yaml.safe_load(Path(path).read_text()) or {}
    except (OSError, yaml.YAMLError) as error:
        raise ConfigError(f"cannot read config {path}: {error}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config {path} must be a mapping of sections, got {type(data).__name__}")
    return data


def parse_config(data: dict[str, Any]) -> PipelineConfig:
    """Validate a config dict merged over the embedded defaults."""
    return validate_config(PipelineConfig, data, DEFAULT_CONFIG)


def load_config(path: str | Path | None) -> PipelineConfig:
    """Read a YAML config (or only the defaults when `path` is None) and validate it."""
    return parse_config({} if path is None else read_config_file(path))


def dump_config(config: PipelineConfig) -> str:
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)
