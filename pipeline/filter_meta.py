"""filter_meta: rule filters on search metadata, then an LLM score of relevance and knowledge density.

Every rule answers keep or drop with a reason; the LLM's raw answer and scores stay in the videos table, as in
the published metadata. A video whose score cannot be parsed is kept and the reason is written beside it: a
weak model must not silently empty the corpus.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pydantic import BaseModel, Field

from configs.schema import FilterMetaConfig
from pipeline.engine.stage import UnitWork
from pipeline.language import detect_language
from pipeline.models.llm import Llm
from pipeline.models.llm.structured import LlmOutputError, complete_json_batch
from pipeline.records import StageOutput, funnel
from pipeline.search import merge_results
from pipeline.verdicts import KEEP, Reasons, Verdict

VERSION = 2
DESCRIPTION_CHARS = 400
UNSCORED = "unscored: "  # the llm_response of a video whose answer never parsed


REASONS = Reasons(
    "filter_meta",
    "too_short",
    "too_long",
    "live",
    "short",
    "other_language",
    "blocked_channel",
    "blocked_keyword",
    "low_relevance",
    "low_knowledge_density",
)


class Scores(BaseModel):
    relevance: int = Field(ge=0, le=10)
    knowledge_density: int = Field(ge=0, le=10)


def _duration(video: dict[str, Any], cfg: FilterMetaConfig) -> Verdict:
    duration = video.get("duration")
    if duration is None:
        return KEEP
    if duration < cfg.min_duration_seconds:
        return REASONS.drop("too_short", f"{duration:.0f} s < {cfg.min_duration_seconds:.0f} s")
    if duration > cfg.max_duration_seconds:
        return REASONS.drop("too_long", f"{duration:.0f} s > {cfg.max_duration_seconds:.0f} s")
    return KEEP


def _live_or_short(video: dict[str, Any], cfg: FilterMetaConfig) -> Verdict:
    if cfg.drop_live and video.get("live"):
        return REASONS.drop("live", "a live stream")
    if cfg.drop_shorts and "/shorts/" in (video.get("url") or ""):
        return REASONS.drop("short", "a YouTube short")
    return KEEP


def _language(video: dict[str, Any], cfg: FilterMetaConfig) -> Verdict:
    language, confidence = video["detected_language"], video["language_confidence"]
    if language and confidence >= cfg.min_language_confidence and language not in cfg.languages:
        return REASONS.drop("other_language", f"{language} ({confidence:.2f}), not {'/'.join(cfg.languages)}")
    return KEEP


def _blocked(video: dict[str, Any], cfg: FilterMetaConfig) -> Verdict:
    channel = (video.get("channel") or "").casefold()
    if channel and channel in {name.casefold() for name in cfg.blocked_channels}:
        return REASONS.drop("blocked_channel", video.get("channel"))
    text = f"{video.get('title') or ''} {video.get('description') or ''}".casefold()
    for keyword in cfg.blocked_keywords:
        if keyword.casefold() in text:
            return REASONS.drop("blocked_keyword", keyword)
    return KEEP


RULES: tuple[Callable[[dict[str, Any], FilterMetaConfig], Verdict], ...] = (
    _duration,
    _live_or_short,
    _language,
    _blocked,
)


def apply_rules(video: dict[str, Any], cfg: FilterMetaConfig) -> Verdict:
    for rule in RULES:
        decision = rule(video, cfg)
        if not decision.keep:
            return decision
    return KEEP


def filter_videos(videos: list[dict[str, Any]], paths: dict[str, str], cfg: FilterMetaConfig, llm: Llm | None) -> list:
    """The videos table: every search result with its language, scores, and a keep flag with the drop reason."""
    rows = []
    for video in videos:
        language, confidence = detect_language(f"{video.get('title') or ''}. {video.get('description') or ''}")
        row = {**video, "detected_language": language, "language_confidence": confidence,
               "knowledge_points": [paths[point] for point in video["point_ids"]],
               "relevance": None, "knowledge_density": None, "llm_response": None}  # fmt: skip
        decision = apply_rules(row, cfg)
        rows.append({**row, "keep": decision.keep, "reason": decision.reason, "reason_detail": decision.detail})
    if cfg.llm_scoring and llm is not None:
        _score(rows, cfg, llm)
    return rows


def _score(rows: list[dict[str, Any]], cfg: FilterMetaConfig, llm: Llm) -> None:
    """Relevance and knowledge density of the videos the rules kept; an answer that never parsed keeps its video
    unscored (`llm_response` says why, the stage's stats count it)."""
    kept = [row for row in rows if row["keep"]]
    prompts = [
        cfg.prompt.format(
            path=row["knowledge_points"][0],
            title=row.get("title") or "",
            channel=row.get("channel") or "",
            description=(row.get("description") or "")[:DESCRIPTION_CHARS],
        )
        for row in kept
    ]
    for row, answer in zip(kept, complete_json_batch(llm, prompts, Scores), strict=True):
        if isinstance(answer, LlmOutputError):
            row["llm_response"] = f"{UNSCORED}{answer.reason}"
            continue
        row["llm_response"] = answer.model_dump_json()
        row["relevance"], row["knowledge_density"] = answer.relevance, answer.knowledge_density
        verdict = KEEP
        if answer.relevance < cfg.min_relevance:
            verdict = REASONS.drop("low_relevance", f"{answer.relevance} < {cfg.min_relevance:g}")
        elif answer.knowledge_density < cfg.min_knowledge_density:
            verdict = REASONS.drop(
                "low_knowledge_density", f"{answer.knowledge_density} < {cfg.min_knowledge_density:g}"
            )
        row["keep"], row["reason"], row["reason_detail"] = verdict.keep, verdict.reason, verdict.detail


def run(work: UnitWork) -> StageOutput:
    """The videos table of every current search, merged by URL and judged."""
    cfg = work.config.filter_meta
    tree, searches = work.unit.reads[0], work.unit.reads[1:]
    results = [row for ref in searches for row in work.read(*ref).to_pylist()]
    paths = {point["point_id"]: point["path"] for point in work.read(*tree).to_pylist()}
    llm = None
    if cfg.llm_scoring:
        from pipeline.models.llm import load_llm

        llm = load_llm(work.config.llm)
    rows = filter_videos(merge_results(results), paths, cfg, llm)
    unparsed = sum(1 for row in rows if (row["llm_response"] or "").startswith(UNSCORED))
    counters = {"videos": len(rows), "kept": sum(row["keep"] for row in rows), "llm_unparsed": unparsed}
    return StageOutput(rows=rows, counters=counters, funnel=funnel("videos", [row["keep"] for row in rows],
                                                                   [row["reason"] for row in rows]))  # fmt: skip
