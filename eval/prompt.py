"""The llava_v1 conversation (LLaVA's conv_vicuna_v1) with in-context examples as earlier turns.

    <system> USER: <example 1> ASSISTANT: <answer 1><eos>USER: ... USER: <query> ASSISTANT:

Turns are separated as LLaVA's `get_prompt` does: a space after a user turn, the tokenizer's EOS after an
answer. Each turn holds one `<image>`; the images travel beside the text in the same order, padded to a square
as LLaVA's `expand2square` does, so a wide image is not cropped by the processor's centre crop.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

from PIL import Image

from configs.eval import BenchmarkConfig, PromptConfig
from eval.items import Example


@dataclass(frozen=True)
class Prompt:
    query_id: str
    example_ids: tuple[str, ...]
    text: str
    images: tuple[bytes, ...]
    max_new_tokens: int


def build_prompt(
    query: Example, shots: list[Example], benchmark: BenchmarkConfig, cfg: PromptConfig, eos: str
) -> Prompt:
    turns = [(benchmark.example_template.format(question=shot.question), shot.example_answer) for shot in shots]
    turns.append((benchmark.query_template.format(question=query.question), None))
    text = cfg.system + " "
    for user, answer in turns:
        text += f"{cfg.user_role}: {user} {cfg.assistant_role}:"
        text += f" {answer}{eos}" if answer is not None else ""
    return Prompt(
        query_id=query.id,
        example_ids=tuple(shot.id for shot in shots),
        text=text,
        images=tuple(shot.image for shot in shots) + (query.image,),
        max_new_tokens=benchmark.max_new_tokens,
    )


def pad_to_square(image: Image.Image, fill: tuple[int, int, int]) -> Image.Image:
    """The image centred on a square of `fill` (LLaVA fills with the image processor's mean colour)."""
    width, height = image.size
    if width == height:
        return image
    side = max(width, height)
    square = Image.new(image.mode, (side, side), fill)
    square.paste(image, ((side - width) // 2, (side - height) // 2))
    return square


def prompt_images(prompt: Prompt, fill: tuple[int, int, int] | None) -> list[Image.Image]:
    """The prompt's images decoded to RGB, padded to squares unless `fill` is None."""
    images = [Image.open(io.BytesIO(data)).convert("RGB") for data in prompt.images]
    return images if fill is None else [pad_to_square(image, fill) for image in images]
