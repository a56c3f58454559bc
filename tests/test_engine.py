"""The engine's contract: a result is current only through current inputs under the current config, every table a
result reads is in its fingerprint, a failed or blocked recompute takes the old result out of view, and a stage of
any unit kind is planned, skipped and rerun by the same path."""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import re
import shutil
import socket
import sys
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import storage.outdir
from configs import PipelineConfig
from pipeline.dag import DAG, PROCESS_STAGES
from pipeline.engine.engine import Engine
from pipeline.engine.local import run_stages
from pipeline.engine.run_files import RunFiles
from pipeline.engine.stage import Dag, DagError, Stage, Unit, UnitWork, code_version
from pipeline.records import StageOutput
from storage.outdir import OutDir
from storage.shards import read_index


def _copy(processed, tmp_path: Path) -> tuple[OutDir, list]:
    engine, videos = processed
    shutil.copytree(engine.out.root, tmp_path / "out")
    return OutDir(tmp_path / "out"), videos


def _with(config: PipelineConfig, section: str, **values) -> PipelineConfig:
    return config.model_copy(update={section: getattr(config, section).model_copy(update=values)})


def _statuses(reports) -> dict[str, dict[str, int]]:
    return {report.stage: {k: v for k, v in report.counts.items() if v} for report in reports}


def _shard_images(out: OutDir) -> dict[str, bytes]:
    images = {}
    for entry in read_index(out)["shards"]:
        for sample in pq.read_table(out.path("shards", entry["file"])).column("images").to_pylist():
            images |= {image["path"]: image["bytes"] for image in sample if image is not None}
    return images


def test_reencoded_keyframes_reach_the_shards_when_every_table_between_is_unchanged(processed, tmp_path, config):
    """The shards copy JPEG bytes from the keyframes stage: with OCR held to its earlier answers, a re-encode leaves
    interleave's and pack's tables the same, and the shards must still be rebuilt with the new bytes."""
    out, videos = _copy(processed, tmp_path)
    before = Engine(out, config, DAG, videos)
    interleaved = {v.video_id: before.current(("interleave", v.video_id)) for v in videos}
    old_images = _shard_images(out)
    held_ocr = {v.video_id: before.table(("ocr", v.video_id)).to_pylist() for v in videos}
    fixed_ocr = dataclasses.replace(DAG["ocr"], run=lambda work: StageOutput(rows=held_ocr[work.unit.unit_id]))
    dag = DAG.with_stage(fixed_ocr)
    reencoded = _with(config, "keyframes", jpeg_quality=config.keyframes.jpeg_quality - 30)

    engine = Engine(out, reencoded, dag, videos)
    assert not engine.up_to_date(PROCESS_STAGES)
    reports = _statuses(run_stages(engine, PROCESS_STAGES))
    assert reports["keyframes"] == {"done": 2} and reports["shards"] == {"done": 1}, reports
    assert {v.video_id: engine.current(("interleave", v.video_id)) for v in videos} == interleaved
    new_images = _shard_images(out)
    assert new_images.keys() == old_images.keys()
    for video in videos:
        keyframes = engine.table(("keyframes", video.video_id)).select(["name", "jpeg"]).to_pylist()
        for keyframe in keyframes:
            if keyframe["name"] in new_images:
                assert new_images[keyframe["name"]] == keyframe["jpeg"]
                assert new_images[keyframe["name"]] != old_images[keyframe["name"]]
    assert Engine(out, reencoded, dag, videos).up_to_date(PROCESS_STAGES)


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_a_failed_recompute_takes_the_old_result_out_of_view(processed, tmp_path, config):
    """clip_filter moved to a VLM that refuses connections: every video fails there, nothing downstream is served
    from the old verdicts, the old results go to stale/, and the run says nothing is current."""
    out, videos = _copy(processed, tmp_path)
    old = {v.video_id: Engine(out, config, DAG, videos).stamp(("clip_filter", v.video_id)) for v in videos}
    unreachable = _with(config, "clip_filter", method="vlm")
    openai = unreachable.vlm.openai.model_copy(update={"base_url": f"http://127.0.0.1:{_closed_port()}/v1"})
    unreachable = _with(unreachable, "vlm", openai=openai)
    engine = Engine(out, unreachable, DAG, videos)
    reports = _statuses(run_stages(engine, PROCESS_STAGES))
    assert reports["clip_filter"] == {"failed": 2}, reports
    for stage in ("interleave", "pack", "shards"):
        assert set(reports[stage]) == {"blocked"}, reports
    assert reports["keyframes"] == {"skipped": 2}  # what the change does not reach stays current
    for video in videos:
        assert not out.exists(out.stage_file("clip_filter", video.video_id))
        stale = out.path("stale", "clip_filter", f"{video.video_id}.{old[video.video_id].fingerprint}.parquet")
        assert out.exists(stale), stale
        assert not out.exists(out.stage_file("interleave", video.video_id))
    assert not [path for path in out.list("shards") if path.endswith(".parquet")]
    assert out.list("stale", "shards")
    summary = RunFiles(out).finish(engine, [], 0.0)
    assert not summary["current"] and summary["samples"] == 0 and summary["shards"] == []
    assert {failure["stage"] for failure in engine.failures()} == {"clip_filter"}

    back = Engine(out, config, DAG, videos)  # the old setting again: recomputed, not resurrected from stale/
    reports = _statuses(run_stages(back, PROCESS_STAGES))
    assert reports["clip_filter"] == {"done": 2} and reports["shards"] == {"done": 1}
    assert RunFiles(out).finish(back, [], 0.0)["current"] and back.failures() == []


@pytest.mark.parametrize("cut", [0, 0.5], ids=["emptied", "cut-in-half"])
def test_a_result_a_power_cut_left_unreadable_is_computed_again(processed, tmp_path, config, cut):
    """Results are made durable a second's worth at a time, so a power cut may leave a renamed one empty or short:
    it reads as missing, its unit runs again, and what it feeds stays current when the result comes out the same."""
    out, videos = _copy(processed, tmp_path)
    video = videos[0].video_id
    path = Path(out.stage_file("frame_filter", video))
    path.write_bytes(path.read_bytes()[: int(path.stat().st_size * cut)])
    engine = Engine(out, config, DAG, videos)
    reports = _statuses(run_stages(engine, PROCESS_STAGES))
    assert reports["frame_filter"] == {"done": 1, "skipped": 1}, reports
    assert reports["clip_filter"] == {"skipped": 2} and reports["shards"] == {"skipped": 1}, reports
    assert pq.read_table(path).num_rows == engine.table(("keyframes", video)).num_rows


def test_results_written_lazily_are_made_durable_in_one_flush(tmp_path, monkeypatch):
    out = OutDir(tmp_path)
    paths = [out.stage_file("asr", f"v{n}") for n in range(3)]
    for path in paths:
        with out.open_atomic(path, durable=False) as handle:
            handle.write(b"rows")
    synced: list[int] = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: synced.append(fd) or real_fsync(fd))
    storage.outdir.make_durable([*paths, out.stage_file("asr", "moved-aside-since")])
    assert len(synced) == 3 + 1  # each file, then their folder once
    assert [Path(path).read_bytes() for path in paths] == [b"rows"] * 3


def test_a_unit_whose_input_is_not_current_is_blocked_not_served(processed, tmp_path, config):
    """Only interleave is asked for after a clips setting changed: clips is not current, so interleave is blocked
    and its old result is retired, whatever it holds."""
    out, videos = _copy(processed, tmp_path)
    changed = _with(config, "clips", max_seconds=config.clips.max_seconds + 5)
    engine = Engine(out, changed, DAG, videos)
    reports = _statuses(run_stages(engine, ["interleave", "pack", "shards"]))
    assert reports == {"interleave": {"blocked": 2}, "pack": {"blocked": 1}, "shards": {"blocked": 1}}
    assert not any(out.exists(out.stage_file("interleave", v.video_id)) for v in videos)
    assert RunFiles(out).finish(engine, [], 0.0)["samples"] == 0


WORD_COUNTS = pa.schema([("video_id", pa.string()), ("words", pa.int64())])


def _plan_corpus(engine: Engine, stage: Stage) -> Iterator[Unit]:
    yield Unit("corpus", tuple(("interleave", v.video_id) for v in engine.videos))


def _count_words(work: UnitWork) -> StageOutput:
    rows = []
    for stage, video_id in work.unit.reads:
        texts = work.read(stage, video_id).column("text").to_pylist()
        rows.append({"video_id": video_id, "words": sum(len((text or "").split()) for text in texts)})
    return StageOutput(rows=rows, counters={"videos": len(rows)})


def _toy_stage(run=_count_words) -> Stage:
    return Stage("word_counts", "corpus", "1", ("interleave",), ("interleave",), WORD_COUNTS, run, _plan_corpus)


def test_a_new_corpus_stage_is_planned_skipped_and_rerun_by_the_engine(processed, tmp_path, config):
    out, videos = _copy(processed, tmp_path)
    dag = DAG.extended(_toy_stage())
    engine = Engine(out, config, dag, videos)
    assert list(engine.units("word_counts")) == ["corpus"]
    first = engine.run_unit("word_counts", "corpus")
    assert first.status == "done" and first.stats["counters"] == {"videos": 2}
    rows = engine.table(("word_counts", "corpus")).to_pylist()
    assert [row["video_id"] for row in rows] == [v.video_id for v in videos] and all(r["words"] > 20 for r in rows)
    assert engine.run_unit("word_counts", "corpus").status == "skipped"
    assert Engine(out, config, dag, videos).run_unit("word_counts", "corpus").status == "skipped"
    assert engine.run_unit("word_counts", "corpus", force=True).status == "done"
    prefixed = _with(config, "interleave", ocr_prefix="OCR: ")  # a section it depends on: it runs again
    assert Engine(out, prefixed, dag, videos).up_to_date(["word_counts"]) is False


def test_a_stage_that_reads_what_its_plan_does_not_declare_fails_with_the_reason(processed, tmp_path, config):
    out, videos = _copy(processed, tmp_path)

    def sneaky(work: UnitWork) -> StageOutput:
        work.read("keyframes", videos[0].video_id)
        return StageOutput(rows=[])

    engine = Engine(out, config, DAG.extended(_toy_stage(sneaky)), videos)
    result = engine.run_unit("word_counts", "corpus")
    assert result.status == "failed" and "does not declare" in result.message
    assert [f["stage"] for f in engine.failures()] == ["word_counts"]


def test_the_dag_is_validated_when_built():
    toy = _toy_stage()
    with pytest.raises(DagError, match="no earlier stage"):
        Dag((toy,))
    with pytest.raises(DagError, match="unknown config sections"):
        DAG.extended(dataclasses.replace(toy, config_sections=("interleave", "no_such_section")))
    with pytest.raises(DagError, match="twice"):
        DAG.extended(dataclasses.replace(toy, name="pack"))


def test_a_stage_version_changes_with_its_code(tmp_path):
    module_file = tmp_path / "toy_stage.py"

    def version_of(source: str) -> str:
        module_file.write_text(source)
        spec = importlib.util.spec_from_file_location("toy_stage", module_file)
        module = importlib.util.module_from_spec(spec)
        sys.modules["toy_stage"] = module
        spec.loader.exec_module(module)
        return code_version(module, 1)

    try:
        first = version_of("def run(work):\n    return 1\n")
        assert version_of("def run(work):\n    return 1\n") == first
        assert version_of("def run(work):\n    return 2\n") != first
    finally:
        sys.modules.pop("toy_stage", None)
    assert all(re.fullmatch(r"\d+-[0-9a-f]{8}", stage.version) for stage in DAG.stages)
