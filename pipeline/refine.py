"""refine: the LLM rewrites each clip's ASR (recognition errors, punctuation, casing, fillers), and guards check
that the rewrite is still that clip's speech before anything downstream uses it.

One prompt per clip, all of a video's clips in one batched call through the LLM layer (cached: a rerun pays
nothing twice), answers zipped back onto their clips, so ids and order cannot shift. A rewrite is accepted when
it adds no structure the speech lacks (line breaks, list items, headings, a leading label), its MiniLM cosine
similarity to the source is at least `min_similarity`, its length is within the configured ratio of the source's,
and the model finished it; otherwise the clip keeps its ASR and the row says why. Both
texts stay in the table: `refined_asr` is the model's answer whether accepted or not, `accepted` says which one
interleave uses.
"""

from __future__ import annotations

import re
from dataclasses import replace
from typing import Any

from configs.schema import RefineConfig
from pipeline.engine.stage import UnitWork
from pipeline.models.embed import TextEmbedder, load_text_embedder
from pipeline.models.llm import Llm, load_llm
from pipeline.records import StageOutput, funnel

VERSION = 2
ACCEPTED = "accepted"
DISABLED = "disabled"
NO_SPEECH = "no_speech"
EMPTY_ANSWER = "empty_answer"
LOW_SIMILARITY = "low_similarity"
LENGTH_RATIO = "length_ratio"
TRUNCATED = "truncated"
ADDED_STRUCTURE = "added_structure"

# Small models open their answer with a label ("Corrected transcript: ..."): it is not part of the speech.
ANSWER_LABEL = re.compile(
    r"^\s*(?:here is\s+)?(?:the\s+)?(?:corrected|rewritten|refined|revised)?\s*(?:transcript|transcription|text)"
    r"\s*(?:is)?\s*:\s*",
    re.IGNORECASE,
)


# What a rewrite of speech must not add: a line break, a list item, a markdown heading or emphasis, or a leading
# "Label:" the speech did not start with. Speech has none of them; a model that adds them writes a document.
STRUCTURE = re.compile(r"\n|^\s*(?:[-*\u2022]|\d+[.)])\s|^\s*#|\*\*|__", re.MULTILINE)
LEADING_LABEL = re.compile(r"^\s*[\w'-]+(?:\s+[\w'-]+)?\s*:")  # one or two words: a label, not a clause


def clean_answer(text: str) -> str:
    return ANSWER_LABEL.sub("", text, count=1).strip()


def added_structure(source: str, refined: str) -> bool:
    """Whether the rewrite adds layout the speech does not have; words, casing and punctuation may change."""
    if STRUCTURE.search(refined) and not STRUCTURE.search(source):
        return True
    return bool(LEADING_LABEL.match(refined)) and not LEADING_LABEL.match(source)


def judge(source: str, refined: str, similarity: float, finished: bool, cfg: RefineConfig) -> tuple[str, float]:
    """(reason, length ratio): ACCEPTED, or why the source is kept instead."""
    ratio = len(refined) / len(source)
    if not refined:
        return EMPTY_ANSWER, ratio
    if added_structure(source, refined):
        return ADDED_STRUCTURE, ratio
    if similarity < cfg.min_similarity:
        return LOW_SIMILARITY, ratio
    if not cfg.min_length_ratio <= ratio <= cfg.max_length_ratio:
        return LENGTH_RATIO, ratio
    if not finished:
        return TRUNCATED, ratio
    return ACCEPTED, ratio


def _unrefined(clip: dict[str, Any], reason: str) -> dict[str, Any]:
    return {"clip_id": clip["clip_id"], "asr": clip["asr"], "refined_asr": None, "accepted": False, "reason": reason,
            "similarity": None, "length_ratio": None}  # fmt: skip


def refine_clips(clips: list[dict[str, Any]], cfg: RefineConfig, llm: Llm, embedder: TextEmbedder) -> list[dict]:
    """One row per clip, in the clips' order; the LLM and the embedder see only clips with speech."""
    rows = [_unrefined(clip, NO_SPEECH) for clip in clips]
    spoken = [row for row in rows if row["asr"].strip()]
    if not spoken:
        return rows
    params = replace(llm.params, max_new_tokens=cfg.max_new_tokens, repetition_penalty=cfg.repetition_penalty)
    completions = llm.complete_batch([cfg.prompt.format(text=row["asr"].strip()) for row in spoken], params)
    answers = [clean_answer(completion.text) for completion in completions]
    similarities = embedder.similarity(answers, [row["asr"] for row in spoken])
    for row, completion, answer, similarity in zip(spoken, completions, answers, similarities, strict=True):
        reason, ratio = judge(row["asr"].strip(), answer, similarity, completion.finish_reason == "stop", cfg)
        row |= {"refined_asr": answer, "accepted": reason == ACCEPTED, "reason": reason,
                "similarity": round(similarity, 4), "length_ratio": round(ratio, 4)}  # fmt: skip
    return rows


def run(work: UnitWork) -> StageOutput:
    cfg, config = work.config.refine, work.config
    clips = work.inputs["clips"].select(["clip_id", "asr"]).to_pylist()
    if cfg.enabled:
        embedder = load_text_embedder(config.embeddings.text_model, config.embeddings.device)
        rows = refine_clips(clips, cfg, load_llm(config.llm), embedder)
    else:
        rows = [_unrefined(clip, DISABLED) for clip in clips]
    accepted = [row["accepted"] for row in rows]
    clips_funnel = funnel("clips", accepted, [row["reason"] for row in rows])
    changed = sum(row["accepted"] and row["refined_asr"] != row["asr"].strip() for row in rows)
    counters = {"clips": len(rows), "accepted": sum(accepted), "changed": changed}
    return StageOutput(rows=rows, counters=counters, funnel=clips_funnel)
