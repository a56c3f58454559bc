"""frame_filter and clip_filter on the bundled sample, against its ground truth (tests/data/make_sample), and what
interleave and the shards make of their verdicts. The stages run without Prefect (the session's `processed`
fixture); the variants (the other build-up policy, off-topic speech, the VLM path) call the stage functions on the
same tables."""

from __future__ import annotations

import io
import threading
from collections.abc import Iterator
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from configs import PipelineConfig
from configs.schema import OpenAiLlmConfig
from flows.runners import task_options
from pipeline import clip_filter, interleave
from pipeline.clip_filter import filter_clips
from pipeline.dag import DAG
from pipeline.engine.stage import Unit, UnitWork
from pipeline.frame_filter import filter_keyframes
from pipeline.models.llm import Llm, LlmBackendError, SamplingParams, image_part, load_llm, text_part
from pipeline.models.llm.cache import call_key, call_request
from pipeline.models.llm.server import ChatServer
from storage.shards import read_index
from storage.tables import read_stamp, read_table

VIDEO = "lecture"
OFF_TOPIC = "Welcome back to the channel! Today I am unboxing a new phone; like and subscribe for more."


def _inside(time: float, span: dict[str, float]) -> bool:
    return span["start"] <= time < span["end"]


@pytest.fixture(scope="module")
def sample(processed) -> dict[str, Any]:
    """The lecture's tables and stamps from the processed sample, read once for the module."""
    workspace, videos = processed
    out = workspace.out

    def table(stage: str) -> list[dict[str, Any]]:
        return read_table(out, out.stage_file(stage, VIDEO)).to_pylist()

    keyframes = table("keyframes")
    return {
        "shown": {row["keyframe_id"]: row["time"] for row in keyframes},  # the frame on screen at its time
        "workspace": workspace,
        "video": next(video for video in videos if video.video_id == VIDEO),
        "keyframes": keyframes,
        "ocr": {row["keyframe_id"]: row["text"] for row in table("ocr")},
        "clips": table("clips"),
        "frame_filter": table("frame_filter"),
        "clip_filter": table("clip_filter"),
        "interleave": table("interleave"),
        "stats": {
            stage: read_stamp(out, out.stage_file(stage, VIDEO)).stats for stage in ("frame_filter", "clip_filter")
        },
        "all_stats": [
            read_stamp(out, out.stage_file(stage, video.video_id)).stats
            for stage in ("frame_filter", "clip_filter")
            for video in videos
        ],
    }


@pytest.fixture(scope="module")
def most_complete(sample, config: PipelineConfig) -> list[dict[str, Any]]:
    cfg = config.frame_filter.model_copy(update={"build_up": "most_complete"})
    return filter_keyframes(sample["keyframes"], sample["ocr"], cfg)


def _in_segment(rows: list[dict[str, Any]], times: dict[int, float], segment: dict[str, Any]) -> list[dict]:
    return [row for row in rows if _inside(times[row["keyframe_id"]], segment)]


def test_blank_and_talking_head_give_no_image_in_the_interleave_or_the_shards(sample, truth):
    times = sample["shown"]
    images = [row for row in sample["interleave"] if row["kind"] == "image"]
    assert images
    for stretch in (truth["blank"], truth["talking_head"]):
        assert not [row for row in images if _inside(times[row["keyframe_id"]], stretch)], stretch
        dropped = _in_segment(sample["frame_filter"], times, stretch)
        assert dropped and not any(row["keep"] for row in dropped)
    reasons = {row["reason"] for row in sample["frame_filter"] if not row["keep"]}
    assert {"blank", "low_information"} <= reasons

    workspace = sample["workspace"]
    names = {row["name"]: sample["shown"][row["keyframe_id"]] for row in sample["keyframes"]}
    for entry in read_index(workspace.out)["shards"]:
        shard = pq.read_table(workspace.out.path("shards", entry["file"])).to_pylist()
        shown = [names[image["path"]] for row in shard for image in row["images"] if image and image["path"] in names]
        assert shown and not [time for time in shown if truth["blank"]["start"] <= time < truth["talking_head"]["end"]]


def test_the_same_slide_caught_twice_is_one_image(sample, truth):
    zoom = next(slide for slide in truth["slides"] if slide["kind"] == "zoom")
    rows = _in_segment(sample["frame_filter"], sample["shown"], zoom)
    kept = [row for row in rows if row["keep"]]
    assert rows and len(kept) == 1, rows  # the zoom is seen as one slide: one keyframe, or repeats marked duplicates
    assert all(row["reason"] == "duplicate" and row["duplicate_of"] == kept[0]["keyframe_id"] for row in rows[1:])


def _build_up(truth) -> list[dict[str, Any]]:
    """The slide a build-up starts from, then each of its steps."""
    slides = truth["slides"]
    first = next(i for i, slide in enumerate(slides) if slide["kind"] == "build_step")
    steps = [slides[first - 1]]
    while first < len(slides) and slides[first]["kind"] == "build_step":
        steps.append(slides[first])
        first += 1
    return steps


def test_build_up_keeps_every_step_by_default(sample, truth, config):
    assert config.frame_filter.build_up == "keep_all"
    steps = _build_up(truth)
    kept = [
        [row for row in _in_segment(sample["frame_filter"], sample["shown"], step) if row["keep"]] for step in steps
    ]
    assert all(len(rows) == 1 for rows in kept), kept
    assert [rows[0]["reason"] for rows in kept[1:]] == ["build_up_step"] * (len(steps) - 1)
    images = {row["keyframe_id"] for row in sample["interleave"] if row["kind"] == "image"}
    assert {rows[0]["keyframe_id"] for rows in kept} <= images


def test_build_up_most_complete_keeps_only_the_last_step(sample, truth, most_complete):
    steps = _build_up(truth)
    segments = [_in_segment(most_complete, sample["shown"], step) for step in steps]
    last = [row for row in segments[-1] if row["keep"]]
    assert len(last) == 1 and last[0]["reason"] == "build_up_step"
    for rows in segments[:-1]:
        assert rows and all(
            not row["keep"]
            and row["reason"] == "build_up_superseded"
            and row["duplicate_of"] == last[0]["keyframe_id"]
            for row in rows
        ), rows
    # the rest of the video is judged the same under both policies
    outside = [row for row in most_complete if not any(row in segment for segment in segments)]
    default = {row["keyframe_id"]: row for row in sample["frame_filter"]}
    assert all(row["keep"] == default[row["keyframe_id"]]["keep"] for row in outside)


def test_returning_slide_is_kept(sample, truth):
    returning = next(slide for slide in truth["slides"] if slide["kind"] == "return")
    kept = [row for row in _in_segment(sample["frame_filter"], sample["shown"], returning) if row["keep"]]
    assert len(kept) == 1 and kept[0]["reason"] == "distinct_text"
    assert kept[0]["keyframe_id"] in {row["keyframe_id"] for row in sample["interleave"] if row["kind"] == "image"}
    first = next(slide for slide in truth["slides"] if slide["id"] == returning["returns"])
    assert [row for row in _in_segment(sample["frame_filter"], sample["shown"], first) if row["keep"]]


def test_every_kept_keyframe_has_text_or_a_reason(sample):
    kept = [row for row in sample["frame_filter"] if row["keep"]]
    assert kept
    for row in kept:
        assert row["has_text"] or row["reason"] == "detail_without_text", row
        assert row["has_text"] == (row["ocr_chars"] >= 10)
    assert all(sample["ocr"][row["keyframe_id"]].strip() for row in kept if row["has_text"])


def test_funnels_add_up(sample):
    for stats in sample["all_stats"]:
        funnel = stats["funnel"]
        assert funnel["in"] == funnel["kept"] + sum(funnel["dropped"].values()), funnel
    frames = sample["stats"]["frame_filter"]["funnel"]
    assert frames["unit"] == "keyframes" and frames["in"] == len(sample["keyframes"])
    assert frames["kept"] == sum(row["keep"] for row in sample["frame_filter"])
    clips = sample["stats"]["clip_filter"]["funnel"]
    assert clips["unit"] == "clips" and clips["in"] == len(sample["clips"])
    assert clips["kept"] == sum(row["keep_images"] for row in sample["clip_filter"])


def test_clip_filter_keeps_the_lecture_slides_and_says_why(sample, config):
    rows = sample["clip_filter"]
    with_frames = [row for row in rows if row["frames"]]
    assert with_frames and all(row["keep_images"] and row["reason"] == "ocr_matches_asr" for row in with_frames)
    assert all(row["similarity"] >= config.clip_filter.min_ocr_asr_similarity for row in with_frames)
    assert all(row["reason"] in ("no_keyframes", "no_kept_keyframes") for row in rows if not row["frames"])
    texts = {row["clip_id"] for row in sample["interleave"] if row["kind"] == "text"}
    assert {clip["clip_id"] for clip in sample["clips"] if clip["asr"].strip()} == texts  # speech always stays


def test_clip_filter_drops_frames_whose_text_has_nothing_to_do_with_the_speech(sample, config):
    clips = [{**clip, "asr": OFF_TOPIC} for clip in sample["clips"]]
    rows = filter_clips(clips, sample["keyframes"], sample["frame_filter"], sample["ocr"], config)
    judged = [row for row in rows if row["frames"]]
    assert judged and all(not row["keep_images"] and row["reason"] == "ocr_asr_dissimilar" for row in judged), rows
    assert all(row["similarity"] < config.clip_filter.min_ocr_asr_similarity for row in judged)


def _one_clip(sample, truth, stretch: str) -> tuple[list[dict], list[dict], list[dict]]:
    """A clip spanning a ground-truth stretch, with the speech said there, its keyframes, and frame_filter's rows
    for them as if it had kept them all."""
    span = truth[stretch]
    speech = " ".join(line["text"] for line in truth["narration"] if _inside(line["start"], span))
    clip = {"clip_id": 0, "start": span["start"], "end": span["end"], "asr": speech or "Let us look at this."}
    keyframes = [
        {**row, "clip_id": 0} for row in sample["keyframes"] if _inside(sample["shown"][row["keyframe_id"]], span)
    ]
    ids = {row["keyframe_id"] for row in keyframes}
    forced = [{**row, "keep": True} for row in sample["frame_filter"] if row["keyframe_id"] in ids]
    return [clip], keyframes, forced


def test_talking_head_without_text_is_recognised_by_its_face(sample, truth, config):
    clips, keyframes, frames = _one_clip(sample, truth, "talking_head")
    row = filter_clips(clips, keyframes, frames, sample["ocr"], config)[0]
    assert row["reason"] == "face_without_text" and not row["keep_images"]
    assert row["frames_with_face"] == row["frames"] == len(keyframes) >= 1


@pytest.mark.parametrize(("keep_textless", "reason"), [(True, "textless_not_compared"), (False, "no_text")])
def test_textless_frames_without_a_face_follow_the_config(sample, truth, config, keep_textless, reason):
    clips, keyframes, frames = _one_clip(sample, truth, "blank")
    cfg = config.model_copy(
        update={"clip_filter": config.clip_filter.model_copy(update={"keep_textless_images": keep_textless})}
    )
    row = filter_clips(clips, keyframes, frames, sample["ocr"], cfg)[0]
    assert (row["keep_images"], row["reason"], row["frames_with_face"]) == (keep_textless, reason, 0)


def _interleave(sample, config: PipelineConfig, clip_filter: list[dict[str, Any]]) -> list[dict[str, Any]]:
    workspace, video = sample["workspace"], sample["video"]
    out = workspace.out
    tables = {name: read_table(out, out.stage_file(name, VIDEO)) for name in DAG["interleave"].inputs}
    tables["clip_filter"] = pa.Table.from_pylist(clip_filter, schema=tables["clip_filter"].schema)
    work = UnitWork("interleave", Unit(VIDEO, payload=video), config, lambda ref: tables[ref[0]])
    return interleave.run(work).rows


def _content(rows: list[dict[str, Any]]) -> list[tuple]:
    return [(row["clip_id"], row["kind"], row["keyframe_id"], row["text"], row["text_ocr"]) for row in rows]


def test_interleave_shows_only_kept_keyframes_of_kept_clips_with_their_ocr(sample, config):
    kept = {row["keyframe_id"] for row in sample["frame_filter"] if row["keep"]}
    images = [row for row in sample["interleave"] if row["kind"] == "image"]
    assert {row["keyframe_id"] for row in images} == kept
    assert all(row["text_ocr"] == sample["ocr"][row["keyframe_id"]] for row in images)

    dropped_clip = next(row["clip_id"] for row in sample["clip_filter"] if row["keep_images"])
    verdicts = [
        {**row, "keep_images": False, "reason": "ocr_asr_dissimilar"} if row["clip_id"] == dropped_clip else row
        for row in sample["clip_filter"]
    ]
    rows = _interleave(sample, config, verdicts)
    assert not [row for row in rows if row["clip_id"] == dropped_clip and row["kind"] == "image"]
    speech = [row for row in rows if row["clip_id"] == dropped_clip and row["kind"] == "text"]
    assert len(speech) == 1 and speech[0]["text_ocr"] == speech[0]["text"]  # its speech stays, without OCR
    others = [row for row in rows if row["clip_id"] != dropped_clip]
    assert _content(others) == _content([row for row in sample["interleave"] if row["clip_id"] != dropped_clip])


def test_ocr_prefix_marks_each_image_text_in_text_ocr(sample, config):
    assert config.interleave.ocr_prefix is None
    prefixed = config.model_copy(update={"interleave": config.interleave.model_copy(update={"ocr_prefix": "OCR: "})})
    rows = _interleave(sample, prefixed, sample["clip_filter"])
    for row in (row for row in rows if row["kind"] == "text"):
        images = [r for r in rows if r["kind"] == "image" and r["clip_id"] == row["clip_id"] and r["text_ocr"]]
        expected = [row["text"], *(f"OCR: {image['text_ocr']}" for image in images)]
        assert row["text_ocr"] == config.interleave.ocr_separator.join(expected)
    assert any("OCR: " in row["text_ocr"] for row in rows if row["kind"] == "text")
    assert not any("OCR: " in (row["text_ocr"] or "") for row in sample["interleave"])


# The VLM path, tested on the nearest real thing: the openai back-end's requests, images included, against this
# package's own server, which serves the embedded text-only model and refuses images as a text model's server does.


@pytest.fixture(scope="module")
def text_model_server(config: PipelineConfig) -> Iterator[tuple[str, str]]:
    embedded = load_llm(config.llm.model_copy(update={"cache_path": None, "max_new_tokens": 16}))
    server = ChatServer(("127.0.0.1", 0), Llm(embedded.backend, embedded.params, 4, 0))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1", embedded.model_id
    server.shutdown()
    server.server_close()


def test_vlm_method_sends_the_clip_frames_as_images_and_a_text_model_refuses_them(sample, config, text_model_server):
    base_url, model_id = text_model_server
    vlm = config.vlm.model_copy(
        update={
            "model": model_id,
            "cache_path": None,
            "openai": OpenAiLlmConfig(base_url=base_url, api_key_env=None, timeout_seconds=60.0),
        }
    )
    cfg = config.model_copy(
        update={"vlm": vlm, "clip_filter": config.clip_filter.model_copy(update={"method": "vlm"})}
    )
    with pytest.raises(LlmBackendError) as refused:
        filter_clips(sample["clips"], sample["keyframes"], sample["frame_filter"], sample["ocr"], cfg)
    message = str(refused.value)
    assert "answered 400" in message and "text-only model" in message, message
    # the frames arrived as decodable JPEGs at their size (640x360 is below vlm_image_max_side)
    assert "640x360 JPEG" in message and "image(s)" in message


def test_text_only_backend_refuses_images_and_reads_text_parts(config, text_model_server):
    embedded = load_llm(config.llm.model_copy(update={"cache_path": None, "max_new_tokens": 16}))
    jpeg = _jpeg()
    with pytest.raises(LlmBackendError, match=r"text-only model: it cannot read the 1 image\(s\) .*8x8 JPEG"):
        embedded.complete([{"role": "user", "content": [image_part(jpeg), text_part("What is shown?")]}])
    parts = [{"role": "user", "content": [text_part("What is the capital "), text_part("of France?")]}]
    assert embedded.complete(parts) == embedded.complete("What is the capital of France?")


def test_images_enter_the_call_cache_by_digest(config):
    params = SamplingParams.from_config(config.llm)
    one = [{"role": "user", "content": [image_part(_jpeg()), text_part("Describe.")]}]
    other = [{"role": "user", "content": [image_part(_jpeg(color=(0, 0, 255))), text_part("Describe.")]}]
    request = call_request("m", one, params)
    stored = request["messages"][0]["content"][0]["image_url"]["url"]
    assert stored.startswith("sha256:") and len(stored) == len("sha256:") + 64
    assert call_key(request) != call_key(call_request("m", other, params))
    assert call_key(request) == call_key(call_request("m", one, params))


def _jpeg(color: tuple[int, int, int] = (255, 0, 0)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), color).save(buffer, format="JPEG")
    return buffer.getvalue()


def test_clip_filter_is_a_gpu_task_only_where_its_vlm_runs_in_process(config):
    stage = DAG["clip_filter"]
    served = config.model_copy(update={"clip_filter": config.clip_filter.model_copy(update={"method": "vlm"})})
    in_process = served.model_copy(update={"vlm": served.vlm.model_copy(update={"backend": "vllm"})})
    assert "gpu" not in task_options(stage.name, stage.kind, stage.config_sections, config)["tags"]
    assert "gpu" not in task_options(stage.name, stage.kind, stage.config_sections, served)["tags"]
    assert "gpu" in task_options(stage.name, stage.kind, stage.config_sections, in_process)["tags"]


def test_a_slide_repeated_after_a_clip_boundary_shows_once_where_its_clip_keeps_images():
    # keyframe 0 in clip 0 is the slide; 1 and 2 repeat it in clip 1, 3 in clip 2; 4 is another slide in clip 2
    keyframes = [{"keyframe_id": i, "clip_id": clip} for i, clip in enumerate([0, 1, 1, 2, 2])]
    frames = [{"keyframe_id": 0, "keep": True, "duplicate_of": None}]
    frames += [{"keyframe_id": i, "keep": False, "duplicate_of": 0} for i in (1, 2, 3)]
    frames += [{"keyframe_id": 4, "keep": True, "duplicate_of": None}]

    def shown(*image_clips: int) -> list[int]:
        clips = [{"clip_id": clip, "keep_images": clip in image_clips, "dropped_frames": []} for clip in range(3)]
        return [row["keyframe_id"] for row in interleave.kept_images(keyframes, frames, clips)]

    assert shown(0, 1, 2) == [0, 4]  # first showing kept: the repeats stay out
    assert shown(1, 2) == [1, 4]  # clip 0 lost its images: the first repeat in the next clip shows the slide
    assert shown(2) == [3, 4]
    assert shown(0) == [0]


def test_garbled_ocr_is_no_evidence_against_a_clip_but_unrelated_words_are(config):
    speech = ["Gradient descent takes a small step against the gradient of the loss at every iteration."]
    garbled = [[{"text": "Thelophotrochozoanphylum nbosomes lInks cyloplasm", "has_text": True, "jpeg": _jpeg()}]]
    unrelated = [[{"text": "Quarterly sales report of the retail division, prices and stores", "has_text": True,
                   "jpeg": _jpeg()}]]  # fmt: skip
    (weak,) = clip_filter.judge_by_ocr(speech, garbled, config)
    (mismatch,) = clip_filter.judge_by_ocr(speech, unrelated, config)
    assert weak["similarity"] < config.clip_filter.min_ocr_asr_similarity
    assert (weak["keep_images"], weak["reason"]) == (True, clip_filter.KEPT_WEAK_EVIDENCE)
    assert mismatch["similarity"] < config.clip_filter.min_ocr_asr_similarity
    assert (mismatch["keep_images"], mismatch["reason"]) == (False, clip_filter.DROPPED_OCR_MISMATCH)
