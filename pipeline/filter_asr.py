"""filter_asr: drop a video whose transcript the corpus should not hold, with the reason.

Rules first, on the asr table and the probe's duration: too short (words or seconds of speech), too few words per
minute of video, another language than the kept ones (what the model heard, and what py3langid reads in the
text), a transcript the asr stage marked `asr_repetitive`. A video that passes them is scored by the LLM for
knowledge density (0-10), as the published metadata keeps such scores; the raw answer stays in the table. A score
that cannot be parsed keeps the video and says so: a weak model must not silently empty the corpus.

Text that Whisper wrote over no speech (the asr guards' `no_speech` flag) does not count as speech.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from configs.schema import FilterAsrConfig
from pipeline.engine.stage import UnitWork
from pipeline.language import detect_language
from pipeline.models.llm import load_llm
from pipeline.models.llm.structured import LlmOutputError, complete_json
from pipeline.records import StageOutput, funnel, unit_drop
from pipeline.verdicts import KEEP, Reasons, Verdict
from storage.schemas import ASR_NO_SPEECH_FLAG
from storage.tables import table_stamp

VERSION = 2
TOO_SHORT = "too_short"
FEW_WORDS_PER_MINUTE = "few_words_per_minute"
OTHER_LANGUAGE = "other_language"
ASR_REPETITIVE = "asr_repetitive"
LOW_KNOWLEDGE_DENSITY = "low_knowledge_density"
REASONS = Reasons("filter_asr", TOO_SHORT, FEW_WORDS_PER_MINUTE, OTHER_LANGUAGE, ASR_REPETITIVE, LOW_KNOWLEDGE_DENSITY)
UNSCORED = "unscored: "  # the llm_response of a video whose answer never parsed


class KnowledgeDensity(BaseModel):
    knowledge_density: int = Field(ge=0, le=10)


def transcript_figures(segments: list[dict[str, Any]], duration: float) -> dict[str, Any]:
    """Words, seconds of speech, words per minute of video and languages of a video's asr rows."""
    speech = [segment for segment in segments if ASR_NO_SPEECH_FLAG not in segment["flags"]]
    words = sum(len(segment["words"]) for segment in speech)
    text = " ".join(segment["text"] for segment in speech)
    text_language, text_confidence = detect_language(text)
    return {
        "duration": duration,
        "words": words,
        "speech_seconds": round(sum(segment["end"] - segment["start"] for segment in speech), 3),
        "words_per_minute": round(words / (duration / 60), 2) if duration > 0 else 0.0,
        "audio_language": speech[0]["language"] if speech else None,
        "audio_language_probability": speech[0]["language_probability"] if speech else 0.0,
        "text_language": text_language,
        "text_language_confidence": text_confidence,
        "transcript": text,
    }


def apply_rules(video: dict[str, Any], cfg: FilterAsrConfig) -> Verdict:
    """The first rule the video breaks, with what was measured; keep when it breaks none."""
    if video["words"] < cfg.min_words:
        return REASONS.drop(TOO_SHORT, f"{video['words']} words < {cfg.min_words}")
    if video["speech_seconds"] < cfg.min_speech_seconds:
        return REASONS.drop(TOO_SHORT, f"{video['speech_seconds']:.1f} s of speech < {cfg.min_speech_seconds:g}")
    if video["words_per_minute"] < cfg.min_words_per_minute:
        return REASONS.drop(FEW_WORDS_PER_MINUTE, f"{video['words_per_minute']:.1f} < {cfg.min_words_per_minute:g}")
    heard = [(video["audio_language"], video["audio_language_probability"], "heard")]
    read = [(video["text_language"], video["text_language_confidence"], "text")]
    for language, confidence, source in heard + read:
        if language and confidence >= cfg.min_language_confidence and language not in cfg.languages:
            return REASONS.drop(OTHER_LANGUAGE, f"{source} {language} ({confidence:.2f})")
    if cfg.drop_repetitive and video["asr_repetitive"]:
        return REASONS.drop(ASR_REPETITIVE, "loops cover most of the transcript")
    return KEEP


def score(video: dict[str, Any], cfg: FilterAsrConfig, work: UnitWork) -> Verdict:
    """The LLM's knowledge density of the transcript's opening `max_transcript_chars`, written into `video`."""
    prompt = cfg.prompt.format(transcript=video["transcript"][: cfg.max_transcript_chars])
    try:
        answer = complete_json(load_llm(work.config.llm), prompt, KnowledgeDensity)
    except LlmOutputError as error:
        video["llm_response"] = f"{UNSCORED}{error.reason}"
        return KEEP
    video["llm_response"] = answer.model_dump_json()
    video["knowledge_density"] = answer.knowledge_density
    if answer.knowledge_density < cfg.min_knowledge_density:
        return REASONS.drop(LOW_KNOWLEDGE_DENSITY, f"{answer.knowledge_density} < {cfg.min_knowledge_density:g}")
    return KEEP


def run(work: UnitWork) -> StageOutput:
    cfg = work.config.filter_asr
    asr = work.inputs["asr"]
    stamp = table_stamp(asr)
    video = transcript_figures(asr.to_pylist(), work.inputs["probe"]["duration"][0].as_py())
    video |= {
        "video_id": work.video.video_id,
        "asr_repetitive": bool(stamp and stamp.stats["values"].get("asr_repetitive")),
    }
    video |= {"knowledge_density": None, "llm_response": None}
    decision = apply_rules(video, cfg)
    if decision.keep and cfg.llm_scoring:
        decision = score(video, cfg, work)
    row = {**video, "keep": decision.keep, "reason": decision.reason, "reason_detail": decision.detail}
    return StageOutput(
        rows=[row],
        counters={"llm_unparsed": int((video["llm_response"] or "").startswith(UNSCORED))},
        values={key: video[key] for key in ("words", "speech_seconds", "knowledge_density")},
        funnel=funnel("videos", [decision.keep], [decision.reason or ""]),
        drop=unit_drop("filter_asr", decision.reason) if decision.reason is not None else None,
    )
