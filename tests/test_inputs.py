import json
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.engine.run_files import RunFiles
from pipeline.inputs import DUPLICATE_CONTENT, DUPLICATE_URL, InputError, resolve_inputs, sanitize_id
from pipeline.records import VideoInput
from storage.outdir import OutDir
from tests.conftest import LECTURE, PART2, run_all_stages, shard_files


def test_folder_is_sorted_non_recursive_and_lists_what_it_ignores(tmp_path: Path, config):
    shutil.copy(PART2, tmp_path / "b.mp4")
    shutil.copy(LECTURE, tmp_path / "a.MP4")
    (tmp_path / "readme.txt").write_text("x")
    (tmp_path / "sub").mkdir()
    shutil.copy(PART2, tmp_path / "sub" / "c.mp4")
    resolved = resolve_inputs(tmp_path, config.input)
    assert [v.video_id for v in resolved.videos] == ["a", "b"]
    assert {Path(p).name for p in resolved.ignored} == {"readme.txt", "sub"}
    assert {v.topic for v in resolved.videos} == {sanitize_id(tmp_path.name)}


def test_txt_manifest_paths_relative_to_it(tmp_path: Path, config):
    manifest = tmp_path / "list.txt"
    manifest.write_text(f"# lecture list\n{LECTURE}\n\n../{tmp_path.name}/x.mp4\n")
    resolved = resolve_inputs(manifest, config.input)
    assert [v.source for v in resolved.videos] == [str(LECTURE), str(tmp_path / f"../{tmp_path.name}/x.mp4")]
    assert [v.topic for v in resolved.videos] == ["list", "list"]


def test_csv_and_parquet_manifests_carry_topics(tmp_path: Path, config):
    csv = tmp_path / "m.csv"
    csv.write_text(f"path,topic\n{LECTURE},Linear Regression\n{PART2},Gradient Descent\n")
    table = pa.table({"path": [str(LECTURE), str(PART2)]})
    pq.write_table(table, tmp_path / "m.parquet")
    from_csv = resolve_inputs(csv, config.input).videos
    assert [v.topic for v in from_csv] == ["Linear_Regression", "Gradient_Descent"]
    assert [v.topic for v in resolve_inputs(tmp_path / "m.parquet", config.input).videos] == ["m", "m"]


def test_manifest_without_path_column(tmp_path: Path, config):
    csv = tmp_path / "bad.csv"
    csv.write_text("url\nx\n")
    with pytest.raises(InputError, match="'path' column"):
        resolve_inputs(csv, config.input)


def test_ids_are_safe_and_unique(tmp_path: Path, config):
    manifest = tmp_path / "m.txt"
    manifest.write_text("../../etc/pa ss wd.mp4\n/tmp/a/lecture.mp4\n/tmp/b/lecture.mp4\n/x/...mp4\n")
    ids = [v.video_id for v in resolve_inputs(manifest, config.input).videos]
    assert ids[0] == "pa_ss_wd"
    assert ids[1] == "lecture" and ids[2].startswith("lecture-") and len(ids[2]) == len("lecture-") + 8
    assert ids[3] == "video"
    out = OutDir(tmp_path / "out")
    for video_id in ids:
        assert out.stage_file("probe", video_id).startswith(str(tmp_path / "out") + "/")
    with pytest.raises(ValueError):
        out.path("stages", "..", "x")


def test_missing_input(config):
    with pytest.raises(InputError, match="not found"):
        resolve_inputs("/nonexistent/folder", config.input)


def test_a_video_listed_twice_or_under_two_names_or_urls_is_kept_once(tmp_path: Path, config):
    copy = tmp_path / "renamed.mp4"
    shutil.copy(LECTURE, copy)
    manifest = tmp_path / "list.txt"
    urls = ["https://www.youtube.com/watch?v=abc123XYZ_-", "https://youtu.be/abc123XYZ_-",
            "https://www.youtube.com/shorts/abc123XYZ_-", "https://example.org/talk.mp4"]  # fmt: skip
    manifest.write_text("\n".join([str(LECTURE), str(PART2), str(LECTURE), str(copy), *urls]) + "\n")
    resolved = resolve_inputs(manifest, config.input)
    assert [v.source for v in resolved.videos] == [str(LECTURE), str(PART2), urls[0], urls[3]]
    assert [(d["source"], d["duplicate_of"], d["reason"]) for d in resolved.duplicates] == [
        (str(LECTURE), str(LECTURE), DUPLICATE_CONTENT),
        (str(copy), str(LECTURE), DUPLICATE_CONTENT),
        (urls[1], urls[0], DUPLICATE_URL),
        (urls[2], urls[0], DUPLICATE_URL),
    ]
    files = RunFiles(OutDir(tmp_path / "out"))
    files.start(config, resolved)
    assert files.input_notes()["duplicates"] == resolved.duplicates


def test_a_url_serving_a_video_already_in_the_corpus_is_packed_once(tmp_path: Path, processed, media_server):
    """Content a URL turns out to hold once fetched (here the local PART2 again) is left out of the packs with a
    reason, and the shards hold the same samples as without it."""
    engine, videos = processed
    out = OutDir(tmp_path / "out")
    shutil.copytree(engine.out.root, out.root)
    part2 = next(video for video in videos if video.source == str(PART2))
    copy = VideoInput("served-copy", f"{media_server.url}/{PART2.name}", part2.topic, len(videos))
    copies, _ = run_all_stages(out, engine.config, [*videos, copy])
    assert copies.current(("interleave", copy.video_id)), "the copy itself is processed like any video"
    files = RunFiles(out)
    summary = files.finish(copies, [], 0.0)
    assert summary["videos"]["dropped"] == {f"pack: {DUPLICATE_CONTENT}": 1}
    repeat = {"video_id": copy.video_id, "source": copy.source, "duplicate_of": part2.video_id,
              "reason": DUPLICATE_CONTENT}  # fmt: skip
    assert summary["inputs"]["duplicates"] == [repeat]

    def samples(folder: OutDir) -> list[dict]:
        return [json.loads(row["metadata"]) for path in shard_files(folder) for row in pq.read_table(path).to_pylist()]

    assert samples(out) == samples(engine.out) and copy.video_id not in json.dumps(samples(out))
