"""yt-dlp for real against a server on 127.0.0.1: direct files, pages with <video>, failures, a killed download."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from configs import parse_config
from pipeline.dag import DAG
from pipeline.download import DownloadFailed, download, reason_of
from pipeline.engine.engine import Engine
from pipeline.inputs import resolve_inputs
from storage.outdir import OutDir
from storage.tables import read_table
from tests.conftest import shard_files

FAST_RETRY = {"download": {"attempts": 2, "backoff_seconds": 0.1}}


def _engine(out: Path, videos: list, **overrides) -> Engine:
    return Engine(OutDir(out), parse_config({**FAST_RETRY, **overrides}), DAG, videos)


def test_direct_file_and_page_with_video_tag(tmp_path: Path, media_server):
    cfg = parse_config(FAST_RETRY).download
    direct = download(f"{media_server.url}/lecture_part2.mp4", "direct", tmp_path, cfg)
    assert Path(direct["filepath"]).read_bytes()[4:8] == b"ftyp"
    page = download(media_server.page("/page.html", "Gradient descent", ["lecture_part2.mp4"]), "page", tmp_path, cfg)
    assert page["title"].startswith("Gradient descent") and Path(page["filepath"]).name == "page.mp4"
    assert (tmp_path / "page.info.json").is_file()
    archive = (tmp_path / "archive.txt").read_text().splitlines()
    assert len(archive) == 2
    hits_before = sum(media_server.hits.values())
    again = download(f"{media_server.url}/lecture_part2.mp4", "direct", tmp_path, cfg)
    assert again["filepath"] == direct["filepath"]
    assert sum(media_server.hits.values()) - hits_before <= 1  # at most a look at the page, never the file again


def test_not_found_fails_at_once_and_rate_limit_is_retried(tmp_path: Path, media_server):
    cfg = parse_config({"download": {"attempts": 3, "backoff_seconds": 0.05}}).download
    with pytest.raises(DownloadFailed, match=r"HTTP 404 \(not found\)") as missing:
        download(f"{media_server.url}/missing.mp4", "missing", tmp_path, cfg)
    assert not missing.value.transient and media_server.hits["/missing.mp4"] == 1
    with pytest.raises(DownloadFailed, match=r"HTTP 429 \(rate limited\) after 3 attempts"):
        download(f"{media_server.url}/busy.mp4", "busy", tmp_path, cfg)
    assert media_server.hits["/busy.mp4"] == 3


def test_reasons_are_short_and_countable():
    assert reason_of("ERROR: [youtube] abc: Private video. Sign in if you've been granted access") == "private video"
    assert reason_of("ERROR: unable to download video data: HTTP Error 403: Forbidden") == "HTTP 403 (forbidden)"
    assert reason_of("ERROR: Read timed out.") == "timeout"


def test_url_manifest_beside_local_paths_runs_and_records_failures(tmp_path: Path, media_server, config):
    from tests.conftest import PART2, run_all_stages

    manifest = tmp_path / "urls.txt"
    page = media_server.page("/lecture.html", "Gradient descent", ["lecture_part2.mp4"])
    manifest.write_text(f"{page}\n{PART2}\n{media_server.url}/missing.mp4\n{media_server.url}/busy.mp4\n")
    videos = resolve_inputs(manifest, config.input).videos
    assert [v.video_id for v in videos] == ["lecture", "lecture_part2", "missing", "busy"]
    workspace, _ = run_all_stages(OutDir(tmp_path / "out"), parse_config(FAST_RETRY), videos)
    failures = {f["video_id"]: f for f in workspace.failures()}
    assert set(failures) == {"missing", "busy"}
    assert failures["missing"]["message"] == "HTTP 404 (not found)" and failures["missing"]["stage"] == "download"
    assert failures["busy"]["message"].startswith("HTTP 429 (rate limited)")
    fetched = read_table(workspace.out, workspace.out.stage_file("download", "lecture")).to_pylist()[0]
    assert fetched["downloaded"] and fetched["title"].startswith("Gradient descent") and fetched["url"] == page
    local = read_table(workspace.out, workspace.out.stage_file("download", "lecture_part2")).to_pylist()[0]
    assert not local["downloaded"] and local["path"] == str(PART2)
    assert shard_files(workspace.out)


def test_keep_media_false_deletes_the_download_once_every_reader_is_done(tmp_path: Path, media_server, config):
    from tests.conftest import run_all_stages

    manifest = tmp_path / "urls.txt"
    manifest.write_text(f"{media_server.url}/lecture_part2.mp4\n")
    keep_none = parse_config({**FAST_RETRY, "download": {**FAST_RETRY["download"], "keep_media": False}})
    workspace, _ = run_all_stages(OutDir(tmp_path / "out"), keep_none, resolve_inputs(manifest, config.input).videos)
    media = tmp_path / "out" / "media"
    assert not (media / "lecture_part2.mp4").exists() and (media / "lecture_part2.info.json").exists()
    assert shard_files(workspace.out)


KILLED_DOWNLOAD = """
import sys
from configs import parse_config
from pipeline.dag import DAG
from pipeline.engine.engine import Engine
from pipeline.records import VideoInput
from storage.outdir import OutDir
engine = Engine(OutDir(sys.argv[1]), parse_config({}), DAG, [VideoInput("slow", sys.argv[2], "t", 0)])
print(engine.run_unit("download", "slow").status)
"""


def test_killed_download_completes_once_on_rerun(tmp_path: Path, media_server):
    out = tmp_path / "out"
    url = f"{media_server.url}/slow/lecture_part2.mp4"
    process = subprocess.Popen([sys.executable, "-c", KILLED_DOWNLOAD, str(out), url])
    deadline = time.monotonic() + 60
    while not list((out / "media").glob("slow.*part")) and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert list((out / "media").glob("slow.*part")), "the download should have been caught mid-file"
    assert not (out / "stages" / "download" / "slow.parquet").exists()

    from pipeline.records import VideoInput

    video = VideoInput("slow", url, "t", 0)
    workspace = _engine(out, [video])
    assert workspace.run_unit("download", video.video_id).status == "done"
    assert workspace.run_unit("download", video.video_id).status == "skipped"
    files = sorted(p.name for p in (out / "media").iterdir())
    assert files == ["archive.txt", "slow.info.json", "slow.mp4"]
    assert (out / "media" / "slow.mp4").read_bytes() == (
        Path(__file__).parent / "data" / "lecture_part2.mp4"
    ).read_bytes()
    assert read_table(workspace.out, workspace.out.stage_file("download", "slow")).num_rows == 1
    assert len((out / "media" / "archive.txt").read_text().splitlines()) == 1
