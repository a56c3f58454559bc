"""Training the tiny LLaVA of `configs/train-tiny.yaml` on shards of real keyframes: the loss falls, the images
matter, a resumed run continues the uninterrupted one, two processes train as one, and the saved model generates."""

from __future__ import annotations

import io
import json
import os
import random
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import torch
import yaml
from PIL import Image
from transformers import LlavaForConditionalGeneration, LlavaProcessor

from configs import CONFIG_DIR
from configs.schema import ConfigError
from configs.train import TrainConfig, load_train_config
from pipeline.frames import encode_jpeg
from pipeline.media import sample_frames
from storage.shards import ShardSet
from tests.test_train_stream import write_shard_set
from train import checkpoint
from train.batch import Batch, collate
from train.distributed import Processes
from train.flops import FlopsModel, peak_flops
from train.model import build_model
from train.parts import set_trainable
from train.run import MODEL_DIR, SAMPLES_LOG, train
from train.shardset import list_units
from train.stream import ShardStream

DATA = Path(__file__).parent / "data"
REAL_SLIDES = Path(__file__).parents[2] / "shared" / "data" / "real-slides"
CONFIG = CONFIG_DIR / "train-tiny.yaml"
SAMPLES = 48
PAIRS_PER_SAMPLE = 3
STEPS = 40
RESUME_AT = 30


WORDS_PER_TEXT = 4  # short texts: the tiny model learns which text follows which picture in a few dozen steps


def _slide_pairs(video: Path, segments: list[tuple[float, str]]) -> list[tuple[bytes, str]]:
    """(JPEG of the frame shown at each time, the first words of the narration over it)."""
    seconds = [int(time) for time, _ in segments]
    frames = sample_frames(str(video), 1.0, (224, 126), gray=False, only=seconds)
    by_second = dict(zip(sorted(set(seconds)), frames, strict=True))
    return [
        (encode_jpeg(by_second[second], 85), " ".join(text.split()[:WORDS_PER_TEXT]))
        for second, (_, text) in zip(seconds, segments, strict=True)
    ]


def _lecture_segments() -> list[tuple[float, str]]:
    """Mid-slide times and narrations of the bundled lecture, each picture once (no blank, no returning slide)."""
    truth = json.loads((DATA / "make_sample" / "lecture.json").read_text())
    segments = []
    for slide in truth["slides"]:
        words = [n["text"] for n in truth["narration"] if slide["start"] <= n["start"] < slide["end"]]
        if words and slide["kind"] not in ("blank", "return"):
            segments.append(((slide["start"] + slide["end"]) / 2, " ".join(words)))
    return segments


def _real_slides_segments() -> list[tuple[float, str]]:
    truth = json.loads((REAL_SLIDES / "truth.json").read_text())
    return [
        ((s["start"] + s["end"]) / 2, s["narration"])
        for s in truth["timeline"]
        if s.get("narration") and s["kind"] not in ("zoom", "return")
    ]


def _rows(pairs: list[tuple[bytes, str]], count: int, seed: int) -> list[dict]:
    """Samples of PAIRS_PER_SAMPLE (keyframe, its narration) pairs drawn at random: the text after an image is
    predictable from that image only."""
    rng = random.Random(seed)
    rows = []
    for n in range(count):
        chosen = rng.sample(range(len(pairs)), PAIRS_PER_SAMPLE)
        images, texts = [], []
        for index in chosen:
            jpeg, text = pairs[index]
            images += [{"bytes": jpeg, "path": f"pair{index}.jpg"}, None]
            texts += [None, text]
        rows.append({
            "images": images, "texts": texts, "text_ocr_list": texts, "image_num": PAIRS_PER_SAMPLE,
            "text_num": PAIRS_PER_SAMPLE, "token_num": 0, "metadata": json.dumps({"sample": n, "pairs": chosen}),
        })  # fmt: skip
    return rows


def keyframe_rows() -> list[dict]:
    pairs = _slide_pairs(DATA / "lecture.mp4", _lecture_segments())
    pairs += _slide_pairs(REAL_SLIDES / "real_slides.mp4", _real_slides_segments())
    return _rows(pairs, SAMPLES, seed=0)


@pytest.fixture(scope="session")
def keyframe_shards(tmp_path_factory: pytest.TempPathFactory) -> str:
    """48 samples of real keyframes (the bundled lecture and real-slides) in two shards."""
    if not REAL_SLIDES.is_dir():
        pytest.skip(f"{REAL_SLIDES} is missing (the shared development data)")
    return write_shard_set(tmp_path_factory.mktemp("train") / "shards", keyframe_rows(), SAMPLES // 2, SAMPLES)


@pytest.fixture(scope="session")
def tiny_config() -> TrainConfig:
    return load_train_config(CONFIG, {"run.max_steps": STEPS, "run.checkpoint_every": RESUME_AT,
                                      "run.keep_checkpoints": 3, "run.epochs": 3})  # fmt: skip


@pytest.fixture(scope="session")
def trained(tmp_path_factory: pytest.TempPathFactory, keyframe_shards: str, tiny_config: TrainConfig) -> Path:
    run = tmp_path_factory.mktemp("run") / "run"
    train(tiny_config, keyframe_shards, run)
    return run


def test_tiny_llava_trains_on_keyframe_shards_and_its_loss_falls(trained: Path):
    metrics = json.loads((trained / "metrics.json").read_text())
    losses = [entry["loss"] for entry in metrics["history"]]
    assert metrics["steps"] == STEPS and metrics["samples_in_shards"] == SAMPLES
    assert losses[0] > 10 and sum(losses[-5:]) / 5 < losses[0] - 5  # ln(49153) = 10.8 at random init
    assert metrics["tokens_per_s"] > 0 and metrics["images_per_s"] > 0 and metrics["images"] == STEPS * 2 * 3
    assert metrics["mfu"] is None and "unmeasured" in metrics["mfu_note"]  # no GPU here
    assert (trained / "loss.png").stat().st_size > 10_000


def _samples(run: Path) -> list[list[list[int]]]:
    """Per step, the sample ids each rank trained on."""
    return [json.loads(line)["sample_ids"] for line in (run / SAMPLES_LOG).read_text().splitlines()]


def _mean_loss(model, batch: Batch, pixel_values: torch.Tensor) -> float:
    """The mean loss per target token of `batch` when its images are `pixel_values`."""
    with torch.no_grad():
        inputs = {**batch.model_inputs(torch.device("cpu")), "pixel_values": pixel_values}
        return model(**inputs).loss.item()


def test_saved_model_scores_true_images_better_than_shuffled_ones(trained: Path, keyframe_shards, tiny_config):
    """A model that reads its images predicts the text after each one better with the right picture than with
    another sample's (a wrongly wired image token scores both alike)."""
    model = LlavaForConditionalGeneration.from_pretrained(trained / MODEL_DIR).eval()
    processor = LlavaProcessor.from_pretrained(trained / MODEL_DIR)
    data = tiny_config.data.model_copy(update={"shuffle": False})
    stream = ShardStream(list_units(ShardSet.at(keyframe_shards)), data, processor, 1024, rank=0, world_size=1,
                         epochs=1, seed=0)  # fmt: skip
    samples = [item.sample for item, _ in zip(stream, range(24), strict=False)]
    batch = collate(samples, processor.tokenizer.pad_token_id)  # 3 images each: the next sample's fit in
    true = _mean_loss(model, batch, batch.pixel_values)
    shuffled = _mean_loss(model, batch, torch.cat([samples[(i + 1) % 24].pixel_values for i in range(24)]))
    assert shuffled - true > 0.1, (true, shuffled)


def test_saved_model_loads_with_from_pretrained_and_generates(trained: Path, keyframe_shards: str):
    model = LlavaForConditionalGeneration.from_pretrained(trained / MODEL_DIR).eval()
    processor = LlavaProcessor.from_pretrained(trained / MODEL_DIR)
    assert model.config.image_token_id == processor.image_token_id
    first = pq.read_table(Path(keyframe_shards) / "shard-00000.parquet", columns=["images"]).to_pylist()[0]
    picture = Image.open(io.BytesIO(first["images"][0]["bytes"]))
    inputs = processor(text="<image>", images=[picture], return_tensors="pt")
    output = model.generate(**inputs, max_new_tokens=6, do_sample=False)
    new = output[0, inputs["input_ids"].shape[1] :]
    assert 1 <= len(new) <= 6 and processor.tokenizer.decode(new, skip_special_tokens=True).strip()


def test_resume_from_a_checkpoint_reproduces_the_next_losses(trained: Path, keyframe_shards, tiny_config, tmp_path):
    """A run resumed from step RESUME_AT's checkpoint (model, optimizer, scheduler, RNG, data position) repeats the
    uninterrupted run's losses after it, to 1e-5 (measured: identical on CPU)."""
    with pytest.raises(FileExistsError, match="--resume"):
        train(tiny_config, keyframe_shards, trained)  # a run folder with checkpoints is never trained over afresh
    resumed = tmp_path / "resumed"
    source = checkpoint.checkpoint_dir(trained, RESUME_AT)
    shutil.copytree(source, checkpoint.checkpoint_dir(resumed, RESUME_AT))
    metrics = train(tiny_config.model_copy(update={"run": tiny_config.run.model_copy(update={"save_model": False})}),
                    keyframe_shards, resumed, resume=True)  # fmt: skip
    whole = json.loads((trained / "metrics.json").read_text())["history"]
    again = metrics["history"]
    assert metrics["resumed_from"] == str(checkpoint.checkpoint_dir(resumed, RESUME_AT))
    assert _samples(resumed) == _samples(trained)[RESUME_AT:]
    assert max(abs(a["loss"] - b["loss"]) for a, b in zip(again[RESUME_AT:], whole[RESUME_AT:], strict=True)) < 1e-5
    assert [e["lr"] for e in again] == [e["lr"] for e in whole]


def test_a_killed_save_never_looks_complete(tmp_path, monkeypatch):
    model = torch.nn.Linear(4, 2)
    optimizer = torch.optim.AdamW(model.parameters())
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    processes = Processes(rank=0, world_size=1, device=torch.device("cpu"), owns_group=False)
    checkpoint.save(tmp_path, 1, model, optimizer, scheduler, {"step": 1}, processes, keep=2)

    def killed(folder, state):
        raise KeyboardInterrupt("killed while saving")

    monkeypatch.setattr(checkpoint, "_write_state", killed)
    with pytest.raises(KeyboardInterrupt):
        checkpoint.save(tmp_path, 2, model, optimizer, scheduler, {"step": 2}, processes, keep=2)
    assert (tmp_path / "checkpoints" / "step-00000002.partial").is_dir()
    assert checkpoint.latest(tmp_path) == checkpoint.checkpoint_dir(tmp_path, 1)
    monkeypatch.undo()
    checkpoint.save(tmp_path, 3, model, optimizer, scheduler, {"step": 3}, processes, keep=2)
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["step-00000001", "step-00000003"]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


TWO_PROCESS_SETTINGS = ["run.max_steps=4", "data.shuffle=false", "data.num_workers=0", "run.save_model=false",
                        "run.threads=1", "run.checkpoint_every=2", "run.keep_checkpoints=2"]  # fmt: skip


def _torchrun(shards: str, out: Path, *extra: str) -> dict:
    """`python -m train` under torchrun: 2 processes on 127.0.0.1 (gloo, FSDP2 full shard), 1 sample each a step."""
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-addr", "127.0.0.1",
               "--master-port", str(_free_port()), "-m", "train", "--config", str(CONFIG), "--shards", shards,
               "--out", str(out), "--set", "run.batch_size=1", *extra]  # fmt: skip
    for item in TWO_PROCESS_SETTINGS:
        command += ["--set", item]
    environment = {**os.environ, "GLOO_SOCKET_IFNAME": "lo", "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, env=environment, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads((out / "metrics.json").read_text())


@pytest.fixture(scope="session")
def one_group_shards(keyframe_shards: str, tmp_path_factory: pytest.TempPathFactory) -> str:
    """The samples in one row group: two ranks take every other sample, and one process reads them in order."""
    rows = [row for file in sorted(Path(keyframe_shards).glob("*.parquet")) for row in pq.read_table(file).to_pylist()]
    return write_shard_set(tmp_path_factory.mktemp("one-group") / "shards", rows, SAMPLES, SAMPLES)


@pytest.fixture(scope="session")
def two_process_run(one_group_shards: str, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("two") / "run"
    return out, _torchrun(one_group_shards, out)


def test_two_torchrun_processes_split_the_samples_and_match_one_process(one_group_shards, two_process_run, tmp_path):
    """The same global batch in 2 ranks of 1 sample or 1 process of 2 gives the same losses (to 1e-4: the padding of
    the one-process batch and the order of the reduction differ)."""
    run, two = two_process_run
    overrides = {
        key: yaml.safe_load(value) for key, _, value in (item.partition("=") for item in TWO_PROCESS_SETTINGS)
    }
    one = train(load_train_config(CONFIG, {**overrides, "run.batch_size": 2}), one_group_shards, tmp_path / "one")
    assert two["world_size"] == 2 and two["steps"] == one["steps"] == 4
    for (rank0, rank1), (both,) in zip(_samples(run), _samples(tmp_path / "one"), strict=True):
        assert not set(rank0) & set(rank1) and sorted(rank0 + rank1) == sorted(both)
    for step_two, step_one in zip(two["history"], one["history"], strict=True):
        assert abs(step_two["loss"] - step_one["loss"]) < 1e-4 * step_one["loss"]


def test_two_torchrun_processes_resume_from_their_sharded_checkpoint(one_group_shards, two_process_run, tmp_path):
    """Each rank loads its own FSDP shards, optimizer state and data position: steps 3-4 repeat to 1e-5."""
    run, whole = two_process_run
    shutil.copytree(checkpoint.checkpoint_dir(run, 2), checkpoint.checkpoint_dir(tmp_path, 2))
    again = _torchrun(one_group_shards, tmp_path, "--resume")
    assert again["resumed_from"] == str(checkpoint.checkpoint_dir(tmp_path, 2))
    assert _samples(tmp_path) == _samples(run)[2:]
    assert max(abs(a["loss"] - b["loss"]) for a, b in zip(again["history"], whole["history"], strict=True)) < 1e-5


@pytest.mark.parametrize("trainable", ["projector", "projector+llm", "all"])
def test_trainable_parts_follow_the_config(tiny_config, trainable):
    model, _ = build_model(tiny_config.model, 0)
    set_trainable(model, trainable, lora=False)
    groups = {"vision": model.model.vision_tower, "projector": model.model.multi_modal_projector,
              "language": model.model.language_model}  # fmt: skip
    trains = {name: {p.requires_grad for p in part.parameters()} for name, part in groups.items()}
    assert trains["projector"] == {True}
    assert trains["language"] == {trainable != "projector"}
    assert trains["vision"] == {trainable == "all"}


def test_lora_trains_adapters_only_and_saves_them_merged(keyframe_shards, tiny_config, tmp_path):
    lora = {"rank": 4, "alpha": 8, "dropout": 0.0, "target_modules": ["q_proj", "v_proj"]}
    cfg = load_train_config(CONFIG, {"model.lora": lora, "run.max_steps": 3, "data.num_workers": 0})
    train(cfg, keyframe_shards, tmp_path)
    saved = LlavaForConditionalGeneration.from_pretrained(tmp_path / MODEL_DIR)
    initial, _ = build_model(cfg.model, cfg.run.seed)
    assert not any("lora" in name for name, _ in saved.named_parameters())
    before, after = initial.model.language_model.layers[0], saved.model.language_model.layers[0]
    assert not torch.equal(before.self_attn.q_proj.weight, after.self_attn.q_proj.weight)  # adapters merged in
    assert torch.equal(before.self_attn.k_proj.weight, after.self_attn.k_proj.weight)  # no adapter: frozen
    assert torch.equal(before.mlp.up_proj.weight, after.mlp.up_proj.weight)
    projector = (initial.model.multi_modal_projector, saved.model.multi_modal_projector)
    assert not torch.equal(projector[0].linear_1.weight, projector[1].linear_1.weight)


def test_model_flops_count_trained_weights_six_times_frozen_twice_plus_attention(tiny_config):
    """The tiny model's figures by hand: Llama 64 wide (q, o 64x64; k, v 64x32 for 2 of 4 heads; MLP 3 x 64x128)
    in 2 layers and a 64 x 49153 head, all trained; projector 2 x 64x64 trained; CLIP 64 wide in 2 layers (4 x 64x64
    + 2 x 64x128) and a 14x14x3 -> 64 patch convolution, frozen, over 16 patches and CLS."""
    model, _ = build_model(tiny_config.model, 0)
    set_trainable(model, "projector+llm", lora=False)
    flops = FlopsModel.of(model)
    text_weights = 2 * (2 * 64 * 64 + 2 * 64 * 32 + 3 * 64 * 128) + 64 * 49153
    assert flops.text_per_position == 6 * text_weights
    assert flops.text_attention == 12 * 64 * 2
    assert flops.projector_per_embedding == 6 * 2 * 64 * 64
    vision_weights = 2 * (4 * 64 * 64 + 2 * 64 * 128) + 14 * 14 * 3 * 64
    assert flops.vision_per_image == 17 * 2 * vision_weights + 4 * 17**2 * 64 * 2
    assert flops.step([100, 50], images=3) == (
        6 * text_weights * 150 + 12 * 64 * 2 * (100**2 + 50**2) + 3 * (flops.vision_per_image + 16 * 6 * 2 * 64 * 64)
    )
    assert peak_flops(torch.device("cpu"), None) is None and peak_flops(torch.device("cpu"), 1e15) == 1e15


def test_a_whole_llava_checkpoint_is_a_model_source_and_positions_are_checked(trained: Path):
    """`model.source` (llava-hf/llava-1.5-7b-hf in production; here the run's own export) loads whole, with RoPE
    scaling applied before the model is built; a model_max_length past the positions fails before any training."""
    rope = {"rope_type": "linear", "factor": 2.0, "rope_theta": 10000.0}
    cfg = load_train_config(CONFIG, {"model.source": str(trained / MODEL_DIR), "model.model_max_length": 4096,
                                     "model.rope_parameters": rope})  # fmt: skip
    model, processor = build_model(cfg.model, 0)
    saved = LlavaForConditionalGeneration.from_pretrained(trained / MODEL_DIR)
    assert torch.equal(model.lm_head.weight, saved.lm_head.weight)
    assert model.config.text_config.max_position_embeddings == 4096 and processor.image_token_id == 49152
    too_long = load_train_config(CONFIG, {"model.model_max_length": 4096})
    with pytest.raises(ConfigError, match="rope_parameters"):
        build_model(too_long.model, 0)
