"""Arrow schemas of every table the pipeline writes: the data contract between stages, in one place."""

from __future__ import annotations

import pyarrow as pa

WORD = pa.struct(
    [("start", pa.float64()), ("end", pa.float64()), ("word", pa.string()), ("probability", pa.float64())]
)
BOX = pa.list_(pa.list_(pa.float64()))

INPUTS = pa.schema(
    [
        ("video_id", pa.string()),
        ("source", pa.string()),
        ("topic", pa.string()),
        ("order", pa.int64()),
    ]
)

TAXONOMY = pa.schema(
    [
        ("point_id", pa.string()),
        ("subject", pa.string()),
        ("course", pa.string()),
        ("sub_course", pa.string()),
        ("knowledge_point", pa.string()),
        ("path", pa.string()),
    ]
)

_SEARCH_METADATA = [
    ("video_id", pa.string()),
    ("url", pa.string()),
    ("title", pa.string()),
    ("description", pa.string()),
    ("duration", pa.float64()),
    ("channel", pa.string()),
    ("upload_date", pa.string()),
    ("view_count", pa.int64()),
    ("language", pa.string()),
    ("license", pa.string()),
    ("live", pa.bool_()),
]
SEARCH = pa.schema([("point_id", pa.string()), ("rank", pa.int64()), *_SEARCH_METADATA])

# The videos table, like the published metadata: every search result, its scores, and why it was dropped.
VIDEOS = pa.schema(
    [
        *_SEARCH_METADATA,
        ("point_ids", pa.list_(pa.string())),
        ("knowledge_points", pa.list_(pa.string())),
        ("detected_language", pa.string()),
        ("language_confidence", pa.float64()),
        ("relevance", pa.int64()),
        ("knowledge_density", pa.int64()),
        ("llm_response", pa.string()),
        ("keep", pa.bool_()),
        ("reason", pa.string()),  # a code of the stage's fixed set (pipeline/verdicts.py)
        ("reason_detail", pa.string()),  # what was measured, for people
    ]
)

DOWNLOAD = pa.schema(
    [
        ("video_id", pa.string()),
        ("path", pa.string()),
        ("downloaded", pa.bool_()),
        ("url", pa.string()),
        ("title", pa.string()),
        ("channel", pa.string()),
        ("license", pa.string()),
        ("size_bytes", pa.int64()),
    ]
)

PROBE = pa.schema(
    [
        ("video_id", pa.string()),
        ("duration", pa.float64()),
        ("container", pa.string()),
        ("size_bytes", pa.int64()),
        ("width", pa.int64()),
        ("height", pa.int64()),
        ("fps", pa.float64()),
        ("video_codec", pa.string()),
        ("audio_codec", pa.string()),
        ("audio_sample_rate", pa.int64()),
        ("audio_channels", pa.int64()),
    ]
)

# One row per kept segment (`guards.action: drop` leaves suspect ones out; the stamp's stats list them). `language`
# is what the model heard, `text_language` what py3langid reads in the text; `flags` holds the guards' reasons, one
# of which later stages read: text Whisper wrote over no speech.
ASR_NO_SPEECH_FLAG = "no_speech"
ASR = pa.schema(
    [
        ("segment_id", pa.int64()),
        ("start", pa.float64()),
        ("end", pa.float64()),
        ("text", pa.string()),
        ("words", pa.list_(WORD)),
        ("avg_logprob", pa.float64()),
        ("no_speech_prob", pa.float64()),
        ("compression_ratio", pa.float64()),
        ("language", pa.string()),
        ("language_probability", pa.float64()),
        ("text_language", pa.string()),
        ("text_language_confidence", pa.float64()),
        ("flags", pa.list_(pa.string())),
    ]
)

# One row per video: the transcript's figures, the LLM's knowledge density with its raw answer, keep or why not.
FILTER_ASR = pa.schema(
    [
        ("video_id", pa.string()),
        ("duration", pa.float64()),
        ("words", pa.int64()),
        ("speech_seconds", pa.float64()),
        ("words_per_minute", pa.float64()),
        ("audio_language", pa.string()),
        ("audio_language_probability", pa.float64()),
        ("text_language", pa.string()),
        ("text_language_confidence", pa.float64()),
        ("asr_repetitive", pa.bool_()),
        ("knowledge_density", pa.int64()),
        ("llm_response", pa.string()),
        ("keep", pa.bool_()),
        ("reason", pa.string()),  # a code of the stage's fixed set (pipeline/verdicts.py)
        ("reason_detail", pa.string()),  # what was measured, for people
    ]
)

CLIPS = pa.schema(
    [
        ("clip_id", pa.int64()),
        ("start", pa.float64()),
        ("end", pa.float64()),
        ("asr", pa.string()),
        ("segment_ids", pa.list_(pa.int64())),
    ]
)

# One row per clip, in clip order: the source ASR, the LLM's rewrite (null when none was asked for), whether it was
# accepted and else why not, and the guards' figures. Downstream text is refined_asr where accepted, else asr.
REFINE = pa.schema(
    [
        ("clip_id", pa.int64()),
        ("asr", pa.string()),
        ("refined_asr", pa.string()),
        ("accepted", pa.bool_()),
        ("reason", pa.string()),
        ("similarity", pa.float64()),
        ("length_ratio", pa.float64()),
    ]
)

KEYFRAMES = pa.schema(
    [
        ("keyframe_id", pa.int64()),
        ("clip_id", pa.int64()),
        ("name", pa.string()),
        ("time", pa.float64()),
        ("ssim_to_previous", pa.float64()),
        ("jpeg", pa.binary()),
        ("width", pa.int64()),
        ("height", pa.int64()),
    ]
)

OCR = pa.schema(
    [
        ("keyframe_id", pa.int64()),
        ("text", pa.string()),
        ("lines", pa.list_(pa.string())),
        ("boxes", pa.list_(BOX)),
        ("confidences", pa.list_(pa.float64())),
        ("mean_confidence", pa.float64()),
    ]
)

# One row per keyframe: kept or why not. `duplicate_of` names the kept keyframe that holds the same text (a slide
# caught twice, or an earlier build-up step under `most_complete`); `similarity` and `new_chars` compare the OCR
# with the previous kept keyframe's.
FRAME_FILTER = pa.schema(
    [
        ("keyframe_id", pa.int64()),
        ("clip_id", pa.int64()),
        ("time", pa.float64()),
        ("keep", pa.bool_()),
        ("reason", pa.string()),
        ("duplicate_of", pa.int64()),
        ("pixel_std", pa.float64()),
        ("edge_density", pa.float64()),
        ("ocr_chars", pa.int64()),
        ("has_text", pa.bool_()),
        ("similarity", pa.float64()),
        ("new_chars", pa.int64()),
        ("changed_share", pa.float64()),  # of the picture against the previous kept keyframe's, once aligned
    ]
)

# One row per clip: whether its keyframes stay (its speech always does), by which method, and the evidence.
# `similarity` is OCR-vs-speech (ocr_asr) or caption-vs-speech (vlm); `caption` is the VLM's, null for ocr_asr.
CLIP_FILTER = pa.schema(
    [
        ("clip_id", pa.int64()),
        ("keep_images", pa.bool_()),
        ("reason", pa.string()),
        ("method", pa.string()),
        ("frames", pa.int64()),
        ("frames_with_text", pa.int64()),
        ("frames_with_face", pa.int64()),
        ("similarity", pa.float64()),
        ("caption", pa.string()),
        # Frames of a kept clip that go on their own evidence (a face, a picture unrelated to the speech).
        ("dropped_frames", pa.list_(pa.struct([("keyframe_id", pa.int64()), ("reason", pa.string())]))),
    ]
)

# A per-video fragment: positions in reading order; `kind` is "image" or "text". At a text position `text` is the
# clip's speech (refined where the rewrite was accepted) and `asr` its ASR; both are null at an image.
INTERLEAVE = pa.schema(
    [
        ("position", pa.int64()),
        ("clip_id", pa.int64()),
        ("clip_start", pa.float64()),
        ("clip_end", pa.float64()),
        ("kind", pa.string()),
        ("image_name", pa.string()),
        ("keyframe_id", pa.int64()),
        ("image_time", pa.float64()),
        ("text", pa.string()),
        ("text_ocr", pa.string()),
        ("asr", pa.string()),
    ]
)

# Packed samples of one topic; images are referenced by keyframe (`image_refs`, null at text positions), their
# bytes join only in the shards. Text positions are `segments`: only shards have `images` and `texts` columns.
IMAGE_REF = pa.struct(
    [("video_id", pa.string()), ("keyframe_id", pa.int64()), ("name", pa.string()), ("time", pa.float64()),
     ("clip_id", pa.int64())]
)  # fmt: skip
PACK = pa.schema(
    [
        ("sample_index", pa.int64()),
        ("image_refs", pa.list_(IMAGE_REF)),
        ("segments", pa.list_(pa.string())),
        ("text_ocr_list", pa.list_(pa.string())),
        ("metadata", pa.string()),
        ("image_num", pa.int64()),
        ("text_num", pa.int64()),
        ("token_num", pa.int64()),
    ]
)

# The product: OBELICS-compatible and self-contained (JPEG bytes inside).
SHARD_IMAGE = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
SHARD = pa.schema(
    [
        ("images", pa.list_(SHARD_IMAGE)),
        ("texts", pa.list_(pa.string())),
        ("text_ocr_list", pa.list_(pa.string())),
        ("metadata", pa.string()),
        ("image_num", pa.int64()),
        ("text_num", pa.int64()),
        ("token_num", pa.int64()),
    ]
)

# The shards stage's own table: the published shard files, each with the digest of its content.
SHARD_SET = pa.schema(
    [("file", pa.string()), ("samples", pa.int64()), ("bytes_estimate", pa.int64()), ("digest", pa.string())]
)

FAILURES = pa.schema(
    [
        ("video_id", pa.string()),
        ("stage", pa.string()),
        ("error_type", pa.string()),
        ("reason", pa.string()),  # a countable code: empty_file, no_audio_stream, http_404, timeout, ...
        ("message", pa.string()),
        ("source", pa.string()),
    ]
)

SHARD_FEATURES = {
    "images": [{"_type": "Image"}],
    "texts": [{"dtype": "string", "_type": "Value"}],
    "text_ocr_list": [{"dtype": "string", "_type": "Value"}],
    "metadata": {"dtype": "string", "_type": "Value"},
    "image_num": {"dtype": "int64", "_type": "Value"},
    "text_num": {"dtype": "int64", "_type": "Value"},
    "token_num": {"dtype": "int64", "_type": "Value"},
}

# The eval stage's table: one row per benchmark x shot count (its predictions are in OUT/predictions/).
EVAL_CELL = pa.schema(
    [
        ("benchmark", pa.string()),
        ("title", pa.string()),
        ("shots", pa.int64()),
        ("selection", pa.string()),
        ("model", pa.string()),
        ("count", pa.int64()),
        ("accuracy", pa.float64()),
        ("context_overflow", pa.int64()),
        ("scored_by", pa.list_(pa.string())),
        ("rope_scaled", pa.bool_()),
    ]
)

# The train stage's table: one row per training run (one shard set under one config); the run's own files are in
# OUT/runs/<unit>/ (checkpoints, metrics.json with every step, loss.png, model/).
TRAIN_RUN = pa.schema(
    [
        ("shard_set", pa.string()),
        ("samples_in_shards", pa.int64()),
        ("steps", pa.int64()),
        ("planned_steps", pa.int64()),
        ("first_loss", pa.float64()),
        ("final_loss", pa.float64()),
        ("tokens", pa.int64()),
        ("images", pa.int64()),
        ("tokens_per_s", pa.float64()),
        ("images_per_s", pa.float64()),
        ("mfu", pa.float64()),
        ("world_size", pa.int64()),
        ("device", pa.string()),
        ("resumed_from", pa.string()),
        ("run_folder", pa.string()),
        ("model", pa.string()),
    ]
)
