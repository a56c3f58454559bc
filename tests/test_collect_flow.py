"""From subjects to shards: taxonomy (embedded LLM), search on a site served on 127.0.0.1, metadata filters,
downloads with yt-dlp, and the processing DAG, through `textbook run` with no --input."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml

from tests.conftest import shard_files
from tests.test_end_to_end import textbook

pytestmark = pytest.mark.slow


def test_subjects_to_shards(tmp_path: Path, media_server):
    demo = yaml.safe_load(Path("configs/collect-demo.yaml").read_text())
    demo["search"]["url_template"] = media_server.url + "/search/{slug}.html"
    config = tmp_path / "collect.yaml"
    config.write_text(yaml.safe_dump(demo))
    out = tmp_path / "out"
    result = textbook("run", "--config", str(config), "--out", str(out), home=tmp_path / "prefect")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "kept of" in result.stdout

    tree = pq.read_table(out / "stages" / "taxonomy" / "tree.parquet").to_pylist()
    assert tree and all(row["subject"] == "Mathematics" and row["knowledge_point"] for row in tree)
    videos = pq.read_table(out / "stages" / "filter_meta" / "videos.parquet").to_pylist()
    assert {row["video_id"] for row in videos} == {"lecture", "lecture_part2"}
    assert all(row["llm_response"] for row in videos if row["reason"] is None or "relevance" in row["reason"])
    assert all(row["knowledge_points"][0] in {point["path"] for point in tree} for row in videos)

    kept = {row["video_id"] for row in videos if row["keep"]}
    assert kept, videos
    assert sorted(p.name for p in (out / "media").glob("*.mp4")) == sorted(f"{v}.mp4" for v in kept)
    samples = pq.read_table(shard_files(out)[0]).to_pylist()
    metadata = json.loads(samples[0]["metadata"])
    assert metadata["topic"] in {point["path"] for point in tree}
    source = metadata["videos"][0]
    assert source["url"].startswith(media_server.url) and source["title"].startswith("Lectures on")
