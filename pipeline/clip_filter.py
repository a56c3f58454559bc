"""clip_filter: whether a clip's keyframes stay beside its speech; the speech always stays (as in the paper).

The keyframes frame_filter kept are judged, with the repeats that may stand in for a kept frame of an earlier
clip (keyframe_views.stand_ins). A clip without any, or without speech to compare them with, keeps
no image. Then, by `clip_filter.method`:
- `vlm` (production, the paper's way): a vision-language model captions the clip's frames (the `vlm` section, images
  as content parts through the LLM layer) and the caption is compared with the speech by MiniLM cosine.
- `ocr_asr` (the embedded CPU default): the OCR text of the clip's frames is compared with the speech by MiniLM
  cosine, and a low score drops the frames only when the OCR holds at least `min_evidence_words` real words (noisy
  OCR of handwriting scores low against any speech: that is no evidence). Each frame without text is judged on its
  own, in any clip, by what it shows: a face or a person (Haar cascades) is a talking head, and a picture the
  ImageNet classifier names with confidence is compared with the speech by those names; either drops that frame
  only. Other textless frames cannot be compared, and `keep_textless_images` says what becomes of them where no
  OCR match carries the clip. See configs/default.yaml for where this falls short of `vlm`.
"""

from __future__ import annotations

import io
from collections import defaultdict
from typing import Any

import numpy as np
from PIL import Image

from configs import PipelineConfig
from configs.schema import ClipFilterConfig
from pipeline.engine.stage import UnitWork
from pipeline.frames import encode_jpeg, gray_at_width
from pipeline.keyframe_views import stand_ins, texts_by_keyframe
from pipeline.models.embed import TextEmbedder, load_picture_labeller, load_text_embedder
from pipeline.models.faces import load_face_detector
from pipeline.models.llm import image_part, load_llm, text_part
from pipeline.records import StageOutput, funnel

VERSION = 4

KEPT_OCR_MATCH = "ocr_matches_asr"
KEPT_CAPTION_MATCH = "caption_matches_asr"
KEPT_TEXTLESS = "textless_not_compared"
KEPT_WEAK_EVIDENCE = "ocr_too_sparse_to_judge"
DROPPED_NO_KEYFRAMES = "no_keyframes"
DROPPED_NO_KEPT_KEYFRAMES = "no_kept_keyframes"
DROPPED_NO_SPEECH = "no_speech"
DROPPED_OCR_MISMATCH = "ocr_asr_dissimilar"
DROPPED_CAPTION_MISMATCH = "caption_asr_dissimilar"
DROPPED_FACE = "face_without_text"
DROPPED_TEXTLESS = "no_text"
DROPPED_UNRELATED_PICTURE = "picture_unrelated_to_speech"

FACE_DETECTION_WIDTH = 640


def _row(clip_id: int, keep: bool, reason: str, method: str, frames: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "clip_id": clip_id,
        "keep_images": keep,
        "reason": reason,
        "method": method,
        "frames": len(frames),
        "frames_with_text": sum(frame["has_text"] for frame in frames),
        "frames_with_face": None,
        "similarity": None,
        "caption": None,
        "dropped_frames": [],
    }


def undecidable(clip: dict[str, Any], keyframes: list[dict[str, Any]], frames: list[dict[str, Any]]) -> str | None:
    """Why a clip keeps no image whatever its frames show, or None when they are to be judged."""
    if not keyframes:
        return DROPPED_NO_KEYFRAMES
    if not frames:
        return DROPPED_NO_KEPT_KEYFRAMES
    if not clip["asr"].strip():
        return DROPPED_NO_SPEECH
    return None


def textless_verdicts(
    speech: list[str], frames: list[list[dict[str, Any]]], embedder: TextEmbedder, config: PipelineConfig
) -> list[dict[int, str]]:
    """Per clip, the textless frames that show evidence against themselves, by keyframe id, with the reason: a
    face or a person, or a picture the classifier names with confidence (not as a page or a screen) whose best
    name is unrelated to the clip's speech. The names of a whole video are one batch for each model."""
    cfg = config.clip_filter
    labels_cfg = cfg.picture_labels
    detector = load_face_detector(tuple(cfg.face_cascades), cfg.min_face_area_share)
    against: list[dict[int, str]] = [{} for _ in frames]
    named: list[tuple[int, int, list[str]]] = []  # clip, keyframe id, the names to compare with the speech
    pictures = [(index, frame) for index, clip in enumerate(frames) for frame in clip if not frame["has_text"]]
    if not pictures:
        return against
    labeller = load_picture_labeller(labels_cfg.model, config.embeddings.device)
    graphic = set(labels_cfg.graphic_labels)
    for start in range(0, len(pictures), labeller.batch_size):  # decoded a batch at a time: memory flat in length
        batch = pictures[start : start + labeller.batch_size]
        images = [Image.open(io.BytesIO(frame["jpeg"])).convert("RGB") for _, frame in batch]
        for (index, frame), image, labels in zip(batch, images, labeller.labels(images, labels_cfg.top), strict=True):
            if detector.largest_share(gray_at_width(image, FACE_DETECTION_WIDTH)) > 0:
                against[index][frame["keyframe_id"]] = DROPPED_FACE
            elif labels[0][1] >= labels_cfg.min_confidence and labels[0][0] not in graphic:
                named.append((index, frame["keyframe_id"], [name for name, _ in labels if name not in graphic]))
    pairs = [(index, keyframe_id, name) for index, keyframe_id, names in named for name in names]
    if pairs:
        scores = embedder.similarity([name for _, _, name in pairs], [speech[index] for index, _, _ in pairs])
        best: dict[tuple[int, int], float] = {}
        for (index, keyframe_id, _), score in zip(pairs, scores, strict=True):
            best[index, keyframe_id] = max(best.get((index, keyframe_id), -1.0), float(score))
        for (index, keyframe_id), score in best.items():
            if score < labels_cfg.min_label_asr_similarity:
                against[index][keyframe_id] = DROPPED_UNRELATED_PICTURE
    return against


def judge_by_ocr(
    speech: list[str], frames: list[list[dict[str, Any]]], config: PipelineConfig
) -> list[dict[str, Any]]:
    """The verdict per clip (keep_images, reason, OCR-speech similarity, frames with a face, the frames dropped on
    their own); `frames` carry `text`, `has_text` and `jpeg`. The similarities of a whole video are one batch."""
    cfg = config.clip_filter
    ocr = ["\n".join(frame["text"] for frame in clip if frame["has_text"]) for clip in frames]
    with_text = [i for i, text in enumerate(ocr) if text]
    embedder = load_text_embedder(config.embeddings.text_model, config.embeddings.device)
    scores = embedder.similarity([ocr[i] for i in with_text], [speech[i] for i in with_text]) if with_text else []
    similarity = dict(zip(with_text, scores, strict=True))
    evidence = {i: len(embedder.known_words(ocr[i])) for i in with_text}
    verdicts = []
    for index, against in enumerate(textless_verdicts(speech, frames, embedder, config)):
        textless = [frame for frame in frames[index] if not frame["has_text"]]
        if index in similarity and similarity[index] >= cfg.min_ocr_asr_similarity:
            keep, reason = True, KEPT_OCR_MATCH
        elif index in similarity and evidence[index] < cfg.min_evidence_words:
            keep, reason = True, KEPT_WEAK_EVIDENCE  # garbled or sparse OCR is no evidence of a mismatch
        elif index in similarity:
            keep, reason = False, DROPPED_OCR_MISMATCH
        elif len(against) == len(textless):
            keep = False
            reason = DROPPED_FACE if DROPPED_FACE in against.values() else DROPPED_UNRELATED_PICTURE
        else:
            keep = cfg.keep_textless_images
            reason = KEPT_TEXTLESS if keep else DROPPED_TEXTLESS
        dropped = [{"keyframe_id": key, "reason": why} for key, why in sorted(against.items())] if keep else []
        faces = sum(why == DROPPED_FACE for why in against.values())
        verdicts.append({"keep_images": keep, "reason": reason, "similarity": similarity.get(index),
                         "frames_with_face": faces, "dropped_frames": dropped})  # fmt: skip
    return verdicts


def vlm_frames(frames: list[dict[str, Any]], cfg: ClipFilterConfig) -> list[bytes]:
    """At most `vlm_max_images` of a clip's frames, evenly spread, as JPEGs no larger than `vlm_image_max_side`."""
    count = min(len(frames), cfg.vlm_max_images)
    chosen = [frames[round(i * (len(frames) - 1) / max(1, count - 1))] for i in range(count)]
    images = []
    for frame in chosen:
        with Image.open(io.BytesIO(frame["jpeg"])) as image:
            rgb = image.convert("RGB")
        rgb.thumbnail((cfg.vlm_image_max_side, cfg.vlm_image_max_side))
        images.append(encode_jpeg(np.asarray(rgb), quality=90))
    return images


def judge_by_caption(
    speech: list[str], frames: list[list[dict[str, Any]]], config: PipelineConfig
) -> list[dict[str, Any]]:
    """The verdict per clip (keep_images, reason, caption-speech similarity, caption): one VLM call per clip, the
    calls of a video batched by the LLM layer."""
    cfg = config.clip_filter
    conversations = [
        [{"role": "user", "content": [*map(image_part, vlm_frames(clip, cfg)), text_part(cfg.caption_prompt)]}]
        for clip in frames
    ]
    captions = [completion.text for completion in load_llm(config.vlm).complete_batch(conversations)]
    embedder = load_text_embedder(config.embeddings.text_model, config.embeddings.device)
    verdicts = []
    for caption, score in zip(captions, embedder.similarity(captions, speech), strict=True):
        keep = score >= cfg.min_caption_asr_similarity
        reason = KEPT_CAPTION_MATCH if keep else DROPPED_CAPTION_MISMATCH
        verdicts.append({"keep_images": keep, "reason": reason, "similarity": score, "caption": caption})
    return verdicts


def filter_clips(
    clips: list[dict[str, Any]],
    keyframes: list[dict[str, Any]],
    frame_rows: list[dict[str, Any]],
    ocr_text: dict[int, str],
    config: PipelineConfig,
) -> list[dict[str, Any]]:
    """One row per clip in time order: keep_images, reason, method and the evidence."""
    method = config.clip_filter.method
    decisions = {row["keyframe_id"]: row for row in frame_rows}
    repeats = stand_ins(keyframes, frame_rows)
    keyframes_by_clip: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for keyframe in sorted(keyframes, key=lambda row: row["time"]):
        keyframes_by_clip[keyframe["clip_id"]].append(keyframe)
    rows: list[dict[str, Any]] = []
    to_judge: list[tuple[dict[str, Any], str, list[dict[str, Any]]]] = []
    for clip in sorted(clips, key=lambda row: row["start"]):
        all_frames = keyframes_by_clip[clip["clip_id"]]
        frames = [
            {**keyframe, "has_text": decision["has_text"], "text": ocr_text.get(keyframe["keyframe_id"], "")}
            for keyframe in all_frames
            if (decision := decisions[keyframe["keyframe_id"]])["keep"] or keyframe["keyframe_id"] in repeats
        ]
        reason = undecidable(clip, all_frames, frames)
        rows.append(_row(clip["clip_id"], False, reason or "", method, frames))
        if reason is None:
            to_judge.append((rows[-1], clip["asr"], frames))
    if to_judge:
        judge = judge_by_caption if method == "vlm" else judge_by_ocr
        verdicts = judge([speech for _, speech, _ in to_judge], [frames for _, _, frames in to_judge], config)
        for (row, _, _), verdict in zip(to_judge, verdicts, strict=True):
            row.update(verdict)
    return rows


def run(work: UnitWork) -> StageOutput:
    rows = filter_clips(
        work.inputs["clips"].to_pylist(),
        work.inputs["keyframes"].select(["keyframe_id", "clip_id", "time", "jpeg"]).to_pylist(),
        work.inputs["frame_filter"].select(["keyframe_id", "keep", "has_text", "duplicate_of"]).to_pylist(),
        texts_by_keyframe(work.inputs["ocr"]),
        work.config,
    )
    kept, reasons = [row["keep_images"] for row in rows], [row["reason"] for row in rows]
    return StageOutput(
        rows=rows, funnel=funnel("clips", kept, reasons), labels={"method": work.config.clip_filter.method}
    )
