"""The output contract: shards, pack budgets, export and inspect."""

import json
import re
import shutil
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from PIL import Image

from configs import parse_config
from pipeline.dag import DAG, PROCESS_STAGES
from pipeline.engine.engine import Engine
from pipeline.engine.local import run_stages
from pipeline.pack import pack_topic
from pipeline.records import VideoInput
from storage import schemas
from storage.export import describe_shard, export_published
from storage.outdir import OutDir
from storage.shards import ShardSet, read_index
from tests.conftest import DATA

NAME = re.compile(r"^[A-Za-z0-9._-]+@\d+\.\d_\d+\.\d#\d+\.jpg$")


def _shard_paths(workspace: Engine) -> list[str]:
    return [workspace.out.path("shards", entry["file"]) for entry in read_index(workspace.out)["shards"]]


def test_shards_follow_the_schema_and_stay_aligned(processed):
    workspace, _ = processed
    paths = _shard_paths(workspace)
    assert paths
    table = pq.read_table(paths[0])
    assert table.schema.remove_metadata() == schemas.SHARD
    for sample in table.to_pylist():
        assert len(sample["images"]) == len(sample["texts"]) == len(sample["text_ocr_list"])
        for image, text, text_ocr in zip(sample["images"], sample["texts"], sample["text_ocr_list"], strict=True):
            assert (image is None) != (text is None)
            assert (text_ocr is None) == (text is None)
            if image is not None:
                assert NAME.match(image["path"]), image["path"]
            else:
                assert text_ocr.startswith(text)
        assert sample["image_num"] == sum(image is not None for image in sample["images"])
        assert sample["text_num"] == sum(text is not None for text in sample["texts"])
        assert sample["token_num"] > 0


def test_two_videos_of_a_topic_share_a_sample_with_the_marker(processed, config):
    workspace, _ = processed
    samples = pq.read_table(_shard_paths(workspace)[0]).to_pylist()
    first = samples[0]
    metadata = json.loads(first["metadata"])
    assert [v["video_id"] for v in metadata["videos"]] == ["lecture", "lecture_part2"]
    marker = first["texts"].index(config.pack.end_of_video_marker)
    before = [i["path"] for i in first["images"][:marker] if i]
    after = [i["path"] for i in first["images"][marker:] if i]
    assert before and all(p.startswith("lecture@") for p in before)
    assert after and all(p.startswith("lecture_part2@") for p in after)
    assert metadata["clips"][0] == {
        "video_id": "lecture",
        "clip_id": 0,
        "start": 0.0,
        "end": metadata["clips"][0]["end"],
    }
    assert "GradientDescent" in " ".join(t for t in first["text_ocr_list"] if t).replace(" ", "")


def test_shards_load_with_datasets_and_images_decode(processed):
    datasets = pytest.importorskip("datasets")
    workspace, _ = processed
    loaded = datasets.load_dataset("parquet", data_files=_shard_paths(workspace), split="train")
    images = [image for image in loaded[0]["images"] if image is not None]
    assert images and isinstance(images[0], Image.Image) and images[0].size == (640, 360)


def test_export_writes_the_published_layout(processed, tmp_path):
    workspace, _ = processed
    counts = export_published(workspace.out, tmp_path / "export")
    samples = json.loads((tmp_path / "export" / "textbook.json").read_text())
    assert counts["samples"] == len(samples) and counts["images"] > 0
    paths = [path for sample in samples for path in sample["images"] if path]
    assert len(paths) == counts["images"]
    for path in paths:
        Image.open(tmp_path / "export" / path).verify()
    assert isinstance(samples[0]["metadata"], dict) and samples[0]["token_num"] > 0


def test_inspect_describes_samples(processed):
    workspace, _ = processed
    lines = list(describe_shard(_shard_paths(workspace)[0], limit=1))
    assert "samples" in lines[0] and any(line.strip().startswith("[image lecture@") for line in lines)


def _fragment(video_id: str, clips: int, images_per_clip: int, words: int) -> list[dict]:
    rows = []
    for clip in range(clips):
        span = {"clip_id": clip, "clip_start": clip * 10.0, "clip_end": clip * 10.0 + 10}
        for n in range(images_per_clip):
            rows.append(
                {
                    **span,
                    "kind": "image",
                    "image_name": f"{video_id}@{clip}#{n}.jpg",
                    "keyframe_id": n,
                    "image_time": float(n),
                    "text": None,
                    "text_ocr": "slide",
                }
            )
        text = " ".join(["word"] * words)
        rows.append({**span, "kind": "text", "image_name": None, "keyframe_id": None, "image_time": None, "text": text,
                     "text_ocr": text})  # fmt: skip
    return [{"position": i, **row} for i, row in enumerate(rows)]


def test_pack_respects_image_and_token_budgets(config):
    cfg = parse_config({"pack": {"max_images_per_sample": 5, "max_tokens_per_sample": 60}}).pack
    videos = [VideoInput("a", "a.mp4", "t", 0), VideoInput("b", "b.mp4", "t", 1)]
    fragments = [(videos[0], _fragment("a", 4, 2, 10)), (videos[1], _fragment("b", 3, 0, 25))]
    samples = pack_topic("t", fragments, {}, cfg)
    assert all(s["image_num"] <= 5 and s["token_num"] <= 60 for s in samples)
    clips = [(c["video_id"], c["clip_id"]) for s in samples for c in json.loads(s["metadata"])["clips"]]
    assert clips == [("a", 0), ("a", 1), ("a", 2), ("a", 3), ("b", 0), ("b", 1), ("b", 2)]
    assert any(s["image_num"] == 0 for s in samples)


def test_sample_without_images_is_kept(tmp_path, config):
    cfg = config.pack
    video = VideoInput("talk", "talk.mp4", "t", 0)
    samples = pack_topic("t", [(video, _fragment("talk", 2, 0, 5))], {}, cfg)
    assert len(samples) == 1 and samples[0]["image_num"] == 0 and samples[0]["text_num"] == 2


def _topics_run(out: OutDir, config, topics: dict[str, str], force_keyframes: str | None = None) -> Engine:
    """The processed sample again with each video under the topic given, one shard a topic (a tiny target)."""
    one_per_topic = config.model_copy(update={"shards": config.shards.model_copy(update={"target_bytes": 1})})
    videos = [VideoInput(video_id, str(DATA / f"{video_id}.mp4"), topic, order)
              for order, (video_id, topic) in enumerate(topics.items())]  # fmt: skip
    engine = Engine(out, one_per_topic, DAG, videos)
    if force_keyframes:
        engine.run_unit("keyframes", force_keyframes, force=True)
    run_stages(engine, PROCESS_STAGES)
    return engine


def _set_samples(shard_set: ShardSet) -> list[tuple[str, list]]:
    return [(json.loads(s["metadata"])["topic"], s["texts"]) for s in shard_set.samples()]


def test_readers_see_one_whole_set_while_topics_are_added_and_changed(processed, tmp_path, config):
    workspace, _ = processed
    shutil.copytree(workspace.out.root, tmp_path / "out")
    out = OutDir(tmp_path / "out")
    _topics_run(out, config, {"lecture": "algebra"})
    first = ShardSet.open(out)
    before = _set_samples(first)
    assert {topic for topic, _ in before} == {"algebra"}

    _topics_run(out, config, {"lecture": "algebra", "lecture_part2": "geometry"})  # a collection adds a topic
    second = ShardSet.open(out)
    assert _set_samples(first) == before  # a reader of the old set still reads exactly it
    after = _set_samples(second)
    assert {topic for topic, _ in after} == {"algebra", "geometry"}
    algebra = {entry["file"] for entry in first.shards}
    assert algebra < {entry["file"] for entry in second.shards}  # the unchanged topic's shard is the same file
    (algebra_file,) = [Path(out.path("shards", name)) for name in algebra]
    written_at = algebra_file.stat().st_mtime_ns

    _topics_run(out, config, {"lecture": "algebra", "lecture_part2": "geometry"}, force_keyframes="lecture_part2")
    third = ShardSet.open(out)
    assert algebra_file.stat().st_mtime_ns == written_at  # only the changed topic's shard was written again
    topic_keys = {entry["topics"][0][0]: entry["topics"][0][1] for entry in second.shards}
    changed = {topic for topic, key in (entry["topics"][0] for entry in third.shards) if topic_keys[topic] != key}
    assert changed == {"geometry"}
    assert _set_samples(second) == after and _set_samples(first) == before
    assert sorted(Path(p).name for p in out.list("shards") if p.endswith(".parquet")) == sorted(
        entry["file"] for entry in third.shards
    )


def test_every_image_traces_to_its_keyframe_through_the_metadata(processed):
    workspace, _ = processed
    keyframes = {}
    for shard_path in _shard_paths(workspace):
        for sample in pq.read_table(shard_path).to_pylist():
            identities = json.loads(sample["metadata"])["images"]
            positions = [i for i, image in enumerate(sample["images"]) if image is not None]
            assert [identity["position"] for identity in identities] == positions
            for identity in identities:
                video = identity["video_id"]
                if video not in keyframes:
                    rows = workspace.table(("keyframes", video)).to_pylist()
                    keyframes[video] = {row["keyframe_id"]: row for row in rows}
                keyframe = keyframes[video][identity["keyframe_id"]]
                image = sample["images"][identity["position"]]
                assert image["path"] == identity["name"] == keyframe["name"] and image["bytes"] == keyframe["jpeg"]
                assert (identity["time"], identity["clip_id"]) == (keyframe["time"], keyframe["clip_id"])
    assert keyframes


def test_only_shards_have_images_and_texts_columns(processed):
    workspace, _ = processed
    found = [Path(path) for path in Path(workspace.out.root).rglob("*.parquet")]
    with_both = [path for path in found if {"images", "texts"} <= set(pq.read_schema(path).names)]
    assert with_both and all(path.parent.name == "shards" for path in with_both), with_both
