"""The paper's text, placeholder, label and truncation rules on hand-built samples, token by token."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import CLIPVisionConfig, LlavaConfig

from configs import CONFIG_DIR, ConfigError
from configs.train import load_train_config
from train.batch import collate
from train.model import build_model, build_processor, load_tokenizer
from train.sample import IGNORE, Document, encode, render

CONFIG = CONFIG_DIR / "train-tiny.yaml"
IMAGE = "<image>"
RUN = 16  # embeddings per image of the tiny tower: (56 / 14)^2 patches, CLS dropped


def _jpeg(width: int, height: int, colour: tuple[int, int, int]) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), colour).save(buffer, format="JPEG", quality=95)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def tiny():
    cfg = load_train_config(CONFIG)
    model, processor = build_model(cfg.model, cfg.run.seed)
    return model, processor


def _image(n: int = 0) -> dict:
    return {"bytes": _jpeg(40, 30, (10 * n, 100, 200)), "path": f"{n}.jpg"}


def _tokens(processor, text: str) -> list[int]:
    return processor.tokenizer(text, add_special_tokens=False)["input_ids"]


def test_segments_join_with_one_space_and_none_beside_a_placeholder():
    images = [None, _image(), None, _image(), _image(), None, None]
    texts = [" Leading text ", None, "first caption", None, None, "end", "more"]
    document = render(images, texts, IMAGE, max_images=12)
    assert document.text == "Leading text<image>first caption<image> <image>end more"
    assert len(document.images) == 3 and not document.dropped


def test_image_token_is_a_special_token_with_the_configs_id(tiny):
    model, processor = tiny
    tokenizer = processor.tokenizer
    image_id = model.config.image_token_id
    assert processor.image_token_id == image_id == tokenizer.convert_tokens_to_ids(IMAGE)
    assert image_id == len(tokenizer) - 1 and image_id != tokenizer.convert_tokens_to_ids("<")
    assert _tokens(processor, f"a{IMAGE}b")[1] == image_id


def test_placeholders_expand_to_whole_runs_and_labels_mask_images_and_the_lead(tiny):
    model, processor = tiny
    image_id = model.config.image_token_id
    document = render([None, _image(1), None, _image(2), _image(3), None],
                      ["Leading text", None, "first caption", None, None, "end"], IMAGE, 12)  # fmt: skip
    encoded = encode(document, processor, max_length=1024)
    eos = processor.tokenizer.eos_token_id
    lead, caption, space, end = (_tokens(processor, t) for t in ("Leading text", "first caption", " ", "end"))
    expected = lead + [image_id] * RUN + caption + [image_id] * RUN + space + [image_id] * RUN + end + [eos]
    assert encoded.input_ids.tolist() == expected  # SmolLM2 adds no BOS; EOS is appended
    labels = [IGNORE] * (len(lead) + RUN) + caption + [IGNORE] * RUN + space + [IGNORE] * RUN + end + [eos]
    assert encoded.labels.tolist() == labels
    assert encoded.pixel_values.shape == (3, 3, 56, 56)
    output = model(input_ids=encoded.input_ids[None], pixel_values=encoded.pixel_values, labels=encoded.labels[None])
    assert torch.isfinite(output.loss)  # the model found one embedding per image token


def test_at_most_twelve_images_the_first_ones_and_the_text_stays(tiny):
    _, processor = tiny
    images = [item for n in range(14) for item in (_image(n), None)]
    texts = [item for n in range(14) for item in (None, f"after {n}")]
    document = render(images, texts, IMAGE, max_images=12)
    assert document.images == [_image(n)["bytes"] for n in range(12)]
    assert document.dropped == {"over_max_images": 2}
    assert document.text.endswith("<image>after 11 after 12 after 13")
    encoded = encode(document, processor, max_length=4096)
    assert int((encoded.input_ids == processor.image_token_id).sum()) == 12 * RUN
    assert encoded.dropped == {"over_max_images": 2}


def test_truncation_drops_an_image_it_would_cut_and_keeps_filling_with_text(tiny):
    _, processor = tiny
    image_id = processor.image_token_id
    document = render([_image(1), None, _image(2), None], [None, "one two three", None, "four five six"], IMAGE, 12)
    full = encode(document, processor, max_length=1024).input_ids.tolist()
    first_text = _tokens(processor, "one two three")
    cut = RUN + len(first_text) + RUN // 2  # the limit falls inside the second image's run
    encoded = encode(document, processor, max_length=cut)
    after = full[2 * RUN + len(first_text) :]
    assert encoded.input_ids.tolist() == [image_id] * RUN + first_text + after[: RUN // 2]
    assert encoded.dropped == {"truncation": 1}
    assert encoded.pixel_values.shape[0] == 1
    assert encode(document, processor, max_length=RUN - 1) == "no_image_within_max_length"


def test_a_sample_without_images_is_skipped(tiny):
    _, processor = tiny
    assert encode(Document("just text", []), processor, 64) == "no_image"


def test_padding_is_masked_by_attention_not_by_pad_id_so_eos_stays_trained(tiny):
    _, processor = tiny
    tokenizer = processor.tokenizer
    assert tokenizer.pad_token_id == tokenizer.eos_token_id  # SmolLM2: the trap
    short = encode(render([_image(), None], [None, "a"], IMAGE, 12), processor, 1024)
    long = encode(render([_image(), None], [None, "a much longer text"], IMAGE, 12), processor, 1024)
    batch = collate([short, long], tokenizer.pad_token_id)
    length = len(short.input_ids)
    assert batch.labels[0, length - 1] == tokenizer.eos_token_id  # EOS trained
    assert (batch.labels[0, length:] == IGNORE).all() and (batch.attention_mask[0, length:] == 0).all()
    assert (batch.input_ids[0, length:] == tokenizer.pad_token_id).all()
    assert batch.lengths == [length, len(long.input_ids)]


def test_images_are_padded_to_a_square_in_the_mean_colour_not_cropped(tiny):
    _, processor = tiny
    wide = Image.new("RGB", (112, 56), (255, 255, 255))  # a 2:1 white picture
    pixels = processor.image_processor(wide, return_tensors="pt")["pixel_values"][0]
    mean, std = np.array(processor.image_processor.image_mean), np.array(processor.image_processor.image_std)
    white = (1 - mean) / std
    assert pixels.shape == (3, 56, 56)
    assert np.allclose(pixels[:, 28, 28].numpy(), white, atol=0.05)  # the picture in the middle
    assert np.abs(pixels[:, 2, :].numpy()).max() < 0.05  # the padding above it: the mean colour, 0 once normalised


def test_a_vit_l14_336_tower_gives_576_embeddings_per_placeholder():
    """LLaVA-1.5's count: 24 x 24 patches, CLS dropped; without patch size, CLS and select strategy the processor
    counts 575."""
    cfg = load_train_config(CONFIG)
    tower = CLIPVisionConfig(image_size=336, patch_size=14, hidden_size=1024, num_attention_heads=16)
    processor = build_processor(cfg.model, LlavaConfig(vision_config=tower), load_tokenizer(cfg.model))
    inputs = processor(text="x<image>", images=[Image.new("RGB", (640, 360))], return_tensors="pt")
    assert int((inputs["input_ids"] == processor.image_token_id).sum()) == 576
    assert inputs["pixel_values"].shape == (1, 3, 336, 336)


def test_the_shipped_train_configs_validate_and_a_wrong_key_is_named():
    llava = load_train_config(CONFIG_DIR / "train-llava.yaml")
    assert (llava.optim.lr, llava.optim.warmup_ratio, llava.optim.weight_decay) == (2e-5, 0.03, 0.0)
    assert llava.model.trainable == "projector+llm" and llava.data.max_images_per_sample == 12
    assert llava.model.model_max_length == 32768 and llava.model.vision_feature_layer == -2
    with pytest.raises(ConfigError, match="run.batch_sise"):
        load_train_config(CONFIG, {"run.batch_sise": 2})
    with pytest.raises(ConfigError, match="model.trainable"):
        lora = {"rank": 4, "alpha": 8, "dropout": 0.0, "target_modules": ["q_proj"]}
        load_train_config(CONFIG, {"model.trainable": "projector", "model.lora": lora})
