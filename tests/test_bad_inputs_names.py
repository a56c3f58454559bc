"""The names-and-paths half of the bad-input matrix: file names and manifest entries with `../`, absolute paths, NUL,
newlines, 240 characters, bytes that are not UTF-8, HTML and Markdown go through a whole run without a crash and
without a file outside OUT; their text is escaped in report.html and in the Prefect summary; a symlink out of an
input folder is not followed unless asked; with `input.allowed_roots` (a served deployment's config) nothing outside
those folders is read."""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path

import pytest

from configs import parse_config
from flows.process import summary_markdown
from pipeline.dag import DAG, PROCESS_STAGES
from pipeline.engine.engine import Engine
from pipeline.engine.local import run_stages
from pipeline.engine.run_files import RunFiles
from pipeline.inputs import InputError, resolve_inputs
from storage.outdir import OutDir
from tests.conftest import LECTURE, ffmpeg, shard_files

CONFIG = parse_config({"filter_asr": {"min_words": 3, "min_speech_seconds": 1, "llm_scoring": False}})
HTML = "<img src=x onerror=alert(1)>"
MARKDOWN = "[click](javascript:alert(1))"
HOSTILE_FILES = [  # names of files that are not media: each a failure whose message carries its name, but the one
    # that is not UTF-8, which is listed as ignored under its readable name (it could not be recorded as it is)
    b"..\\..\\windows.mp4", b"two\nlines.mp4", b"x" * 240 + b".mp4", b"caf\xe9-latin1.mp4", b"-rf ~ $(x).mp4",
    MARKDOWN.encode() + b".mp4",
]  # fmt: skip
SAFE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@#-]*$")


@pytest.fixture(scope="module")
def hostile(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("names")
    folder, outside = root / "inputs", root / "outside"
    folder.mkdir()
    outside.mkdir()
    ffmpeg("-ss", "0.5", "-t", "3", "-i", str(LECTURE), "-vf", "scale=480:-2", "-c:v", "libx264", "-preset",
           "ultrafast", "-c:a", "aac", str(folder / f"{HTML}.mp4"))  # fmt: skip
    for number, name in enumerate(HOSTILE_FILES):
        descriptor = os.open(os.fsencode(folder) + b"/" + name, os.O_WRONLY | os.O_CREAT)
        os.write(descriptor, f"not a video, number {number}\n".encode() * 50)
        os.close(descriptor)
    (outside / "secret.mp4").write_bytes(b"a file outside the input folder\n" * 50)
    (folder / "linked.mp4").symlink_to(outside / "secret.mp4")
    manifest = root / "manifest.txt"
    manifest.write_text(f"{folder / (HTML + '.mp4')}\n../../../../../../etc/hostname\nevil\x00name.mp4\n"
                        "http://127.0.0.1:9/..%2F..%2Fescape.mp4\n")  # fmt: skip
    return {"root": root, "folder": folder, "outside": outside, "manifest": manifest}


def _run(inputs, out: Path) -> dict:
    files = RunFiles(OutDir(out))
    files.start(CONFIG, inputs)
    engine = Engine(files.out, CONFIG, DAG, inputs.videos)
    started = time.perf_counter()
    return files.finish(engine, run_stages(engine, PROCESS_STAGES), time.perf_counter() - started)


@pytest.fixture(scope="module")
def folder_run(hostile, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("names-out") / "out"
    return out, _run(resolve_inputs(hostile["folder"], CONFIG.input), out)


def test_hostile_names_run_through_and_nothing_is_written_outside_out(hostile, folder_run):
    out, summary = folder_run
    assert summary["videos"]["in"] == len(HOSTILE_FILES) and summary["samples"] >= 1
    assert summary["videos"]["failed"] == len(HOSTILE_FILES) - 1
    assert any(entry.endswith("caf\ufffd-latin1.mp4") for entry in summary["inputs"]["ignored"])
    assert sorted(p.name for p in hostile["root"].iterdir()) == ["inputs", "manifest.txt", "outside"]
    assert sorted(p.name for p in hostile["outside"].iterdir()) == ["secret.mp4"]
    for path in out.rglob("*"):
        assert all(SAFE.match(part) for part in path.relative_to(out).parts), path
    assert shard_files(out)


def test_a_symlink_out_of_the_input_folder_is_not_followed_unless_asked(hostile, folder_run):
    _, summary = folder_run
    assert any(entry.endswith("linked.mp4") for entry in summary["inputs"]["ignored"])
    followed = resolve_inputs(hostile["folder"], parse_config({"input": {"follow_symlinks": True}}).input)
    assert "linked" in {video.video_id for video in followed.videos}


def test_hostile_text_is_escaped_in_the_report_and_the_prefect_summary(folder_run):
    out, summary = folder_run
    report = (out / "report.html").read_text()
    markdown = summary_markdown(summary)
    assert MARKDOWN in json_text(summary)  # the raw text is in the machine-readable summary, as it was
    assert "<img src=x" not in report and "<img src=x" not in markdown
    assert MARKDOWN not in markdown and "javascript:alert(1)" in markdown.replace("\\", "")


def json_text(summary: dict) -> str:
    return json.dumps(summary, ensure_ascii=False)


def test_a_manifest_with_traversal_nul_and_absolute_paths_runs(hostile, tmp_path):
    inputs = resolve_inputs(hostile["manifest"], CONFIG.input)
    ids = [video.video_id for video in inputs.videos]
    assert len(ids) == 3 and ids[1] == "hostname" and all(SAFE.match(video_id) for video_id in ids)
    assert any("\x00" in entry for entry in inputs.ignored)
    summary = _run(inputs, tmp_path / "out")
    assert summary["samples"] >= 1 and summary["videos"]["failed"] == 2  # /etc/hostname is no video, :9 is closed


def test_allowed_roots_keep_a_served_deployment_inside_its_folders(hostile, tmp_path):
    allowed = parse_config({"input": {"allowed_roots": [str(hostile["folder"])]}}).input
    assert resolve_inputs(hostile["folder"] / f"{HTML}.mp4", allowed).videos
    with pytest.raises(InputError, match="outside input.allowed_roots"):
        resolve_inputs(hostile["outside"] / "secret.mp4", allowed)
    with pytest.raises(InputError, match="outside input.allowed_roots"):
        resolve_inputs(hostile["manifest"], allowed)  # the manifest itself is outside
    inside = hostile["folder"].parent / "inputs" / "list.txt"
    inside.write_text("../../../../../../etc/hostname\n")
    try:
        with pytest.raises(InputError, match="etc/hostname is outside input.allowed_roots"):
            resolve_inputs(inside, allowed)
    finally:
        inside.unlink()
    with pytest.raises(InputError, match="linked.mp4 is outside input.allowed_roots"):  # followed: it leaves them
        resolve_inputs(hostile["folder"], allowed.model_copy(update={"follow_symlinks": True}))
