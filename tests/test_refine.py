"""refine with the real embedded LLM (SmolLM2-135M) and MiniLM: the rewrite stays aligned with its clips, a rewrite
that drifts falls back to the source with its reason, a rerun is answered by the call cache alone, and interleave
uses the refined text only where it was accepted."""

from __future__ import annotations

import sqlite3

import pytest

from configs import PipelineConfig, load_config
from pipeline import refine
from pipeline.engine.stage import Unit, UnitWork
from pipeline.models.llm import load_llm
from storage.tables import read_table

SHORT_VIDEO = "lecture_part2"  # 3 clips: the tests that call the LLM themselves keep to it


def _table(workspace, stage: str, video_id: str) -> list[dict]:
    return read_table(workspace.out, workspace.out.stage_file(stage, video_id)).to_pylist()


def _refine(processed, config: PipelineConfig, video_id: str = SHORT_VIDEO):
    """The refine stage on one processed video, switched on (the default config leaves it off: see default.yaml)."""
    workspace, videos = processed
    (video,) = [video for video in videos if video.video_id == video_id]
    clips = read_table(workspace.out, workspace.out.stage_file("clips", video_id))
    enabled = _with(config, refine={"enabled": True})
    return refine.run(UnitWork("refine", Unit(video.video_id, payload=video), enabled, lambda ref: clips))


def _with(config: PipelineConfig, **sections) -> PipelineConfig:
    return config.model_copy(
        update={name: getattr(config, name).model_copy(update=values) for name, values in sections.items()}
    )


def test_refinement_keeps_clip_alignment_on_the_sample(processed, config):
    workspace, videos = processed
    cfg = config.refine
    accepted = []
    for video in videos:
        output = _refine(processed, config, video.video_id)
        clips, rows = _table(workspace, "clips", video.video_id), output.rows
        assert [(r["clip_id"], r["asr"]) for r in rows] == [(c["clip_id"], c["asr"]) for c in clips]
        for row in rows:
            assert row["accepted"] == (row["reason"] == refine.ACCEPTED)
            if row["accepted"]:
                assert row["similarity"] >= cfg.min_similarity
                assert cfg.min_length_ratio <= row["length_ratio"] <= cfg.max_length_ratio
            elif row["reason"] == refine.LOW_SIMILARITY:
                assert row["similarity"] < cfg.min_similarity
            elif row["reason"] == refine.LENGTH_RATIO:
                assert not cfg.min_length_ratio <= row["length_ratio"] <= cfg.max_length_ratio
        funnel = output.funnel
        assert funnel["in"] == len(rows) == funnel["kept"] + sum(funnel["dropped"].values())
        accepted += [row for row in rows if row["accepted"]]
    assert accepted, "the embedded model kept no clip's speech"


def test_interleave_uses_the_refined_text_only_where_accepted(processed):
    workspace, videos = processed
    for video in videos:
        refined = {row["clip_id"]: row for row in _table(workspace, "refine", video.video_id)}
        texts = [row for row in _table(workspace, "interleave", video.video_id) if row["kind"] == "text"]
        assert texts
        for position in texts:
            clip = refined[position["clip_id"]]
            assert position["asr"] == clip["asr"].strip()
            assert position["text"] == (clip["refined_asr"] if clip["accepted"] else clip["asr"]).strip()


def test_drifting_rewrite_falls_back_to_the_source_with_the_similarity_reason(processed, config):
    drifting = _with(config, refine={"prompt": "Write a short poem about cats.", "max_new_tokens": 40})
    output = _refine(processed, drifting)
    drift = {refine.LOW_SIMILARITY, refine.ADDED_STRUCTURE}  # a poem is caught by its lines or by its words
    assert output.rows and all(row["reason"] in drift for row in output.rows), output.rows
    assert all(row["similarity"] < config.refine.min_similarity and row["refined_asr"] for row in output.rows)
    assert sum(output.funnel["dropped"].values()) == len(output.rows) and output.funnel["kept"] == 0


def test_a_rerun_is_answered_by_the_call_cache(processed, config, tmp_path, monkeypatch):
    cached = _with(config, llm={"cache_path": str(tmp_path / "calls.sqlite")}, refine={"max_new_tokens": 48})
    llm = load_llm(cached.llm)
    calls: list[int] = []
    generate = llm.backend.complete

    def counted(batch, params):  # the real model answers; the test only counts what reaches it
        calls.append(len(batch))
        return generate(batch, params)

    monkeypatch.setattr(llm.backend, "complete", counted)
    first = _refine(processed, cached)
    spoken = sum(1 for row in first.rows if row["asr"].strip())  # how many clips the ASR made: machine-dependent
    assert spoken and sum(calls) == spoken
    with sqlite3.connect(tmp_path / "calls.sqlite") as db:
        assert db.execute("SELECT COUNT(*) FROM calls").fetchone() == (spoken,)
    calls.clear()
    assert _refine(processed, cached).rows == first.rows and calls == []


def test_guards_reject_by_their_figures(config):
    source = "If it is too large, the loss can blow up. So always plot the loss after each step."
    cfg = config.refine
    assert refine.judge(source, "", 0.0, True, cfg)[0] == refine.EMPTY_ANSWER
    assert refine.judge(source, source.upper(), 0.5, True, cfg)[0] == refine.LOW_SIMILARITY
    assert refine.judge(source, "So the loss can blow up.", 0.9, True, cfg)[0] == refine.LENGTH_RATIO
    assert refine.judge(source, source, 0.99, False, cfg)[0] == refine.TRUNCATED
    assert refine.judge(source, source, 0.99, True, cfg) == (refine.ACCEPTED, 1.0)


def test_answer_labels_are_not_speech():
    assert refine.clean_answer("Corrected transcript: The loss is small.") == "The loss is small."
    assert refine.clean_answer("Transcription: Trading means changing W.") == "Trading means changing W."
    assert refine.clean_answer("Text books: a list.") == "Text books: a list."


@pytest.mark.parametrize(
    ("source", "rewrite", "added"),
    [
        ("so this line fits the data. the means are", "Data:\n\nThe means are", True),  # seen with SmolLM2
        ("we have three parts foot mass mantle", "We have three parts:\n- foot\n- mass\n- mantle", True),
        ("the model is linear", "## The model\nThe model is linear.", True),
        ("the model is linear", "**The model** is linear.", True),
        ("the model is linear", "Transcript note: the model is linear.", True),
        ("rna differs from dna uracil replaces thymine", "RNA differs from DNA: uracil replaces thymine.", False),
        ("so um the model is uh linear", "So the model is linear.", False),
    ],
)
def test_a_rewrite_may_fix_words_and_punctuation_but_not_add_structure(source, rewrite, added):
    assert refine.added_structure(source, rewrite) is added
    cfg = load_config(None).refine
    reason, _ = refine.judge(source, rewrite, similarity=0.99, finished=True, cfg=cfg)
    assert (reason == refine.ADDED_STRUCTURE) is added
