"""What every LLM back-end shares: the messages it takes, the sampling it obeys, the completion it returns.

A conversation that ends with an assistant message is a prefilled answer: the back-end continues that message
(vLLM's `continue_final_message`) instead of opening a new assistant turn, and returns only the text it adds.

A message's content is a string, or OpenAI content parts: `{"type": "text", ...}` and `{"type": "image_url",
"image_url": {"url": "data:image/jpeg;base64,..."}}` for a vision-language model. A text-only model refuses images
with `ImageInputError`.
"""

from __future__ import annotations

import base64
import binascii
import io
from dataclasses import dataclass
from typing import Any, Protocol

from PIL import Image, UnidentifiedImageError

from configs.schema import LlmConfig

Message = dict[str, Any]
Prompt = str | list[Message]


@dataclass(frozen=True)
class SamplingParams:
    """Part of every cache key: the same messages under other params are another call."""

    max_new_tokens: int
    temperature: float
    top_p: float
    seed: int
    repetition_penalty: float = 1.0  # 1.0 = off

    @classmethod
    def from_config(cls, cfg: LlmConfig) -> SamplingParams:
        return cls(cfg.max_new_tokens, cfg.temperature, cfg.top_p, cfg.seed, cfg.repetition_penalty)


@dataclass(frozen=True)
class Completion:
    """An answer and why it ended: "stop" (the model finished) or "length" (cut at max_new_tokens)."""

    text: str
    finish_reason: str


class LlmBackend(Protocol):
    """Answers a batch of chat conversations; `model_id` names the weights, for cache keys and `/v1/models`."""

    model_id: str

    def complete(self, conversations: list[list[Message]], params: SamplingParams) -> list[Completion]: ...


class LlmBackendError(RuntimeError):
    """A back-end that cannot answer: a missing package, an unreachable server, an error status. `transient`: a
    later try may get an answer (the server was down or busy); `reason` is the failure's countable code."""

    def __init__(self, message: str, transient: bool = False, reason: str = "llm_backend_error") -> None:
        super().__init__(message)
        self.transient = transient
        self.reason = reason


class ImageInputError(LlmBackendError):
    """Images sent to a model that reads text only: a bad request, not a broken back-end."""


def as_messages(prompt: Prompt) -> list[Message]:
    """A bare string is one user turn; the chat template adds the system turn the model expects."""
    return [{"role": "user", "content": prompt}] if isinstance(prompt, str) else list(prompt)


def answer_prefix(messages: list[Message]) -> str | None:
    """The start of the answer a prefilled conversation asks the model to continue; None for a new turn."""
    return messages[-1]["content"] if messages and messages[-1]["role"] == "assistant" else None


def text_part(text: str) -> dict[str, Any]:
    return {"type": "text", "text": text}


def image_part(image: bytes, mime: str = "image/jpeg") -> dict[str, Any]:
    """An image as a base64 data URL, the form every OpenAI-compatible server (vLLM's too) reads inline."""
    return {"type": "image_url", "image_url": {"url": f"data:{mime};base64,{base64.b64encode(image).decode()}"}}


def image_urls(messages: list[Message]) -> list[str]:
    """The URLs of every image part, in order."""
    return [
        part["image_url"]["url"]
        for message in messages
        if isinstance(message["content"], list)
        for part in message["content"]
        if part.get("type") == "image_url"
    ]


def data_url_bytes(url: str) -> bytes | None:
    """The bytes of a base64 data URL; None for any other URL."""
    head, _, data = url.partition(",")
    if not (head.startswith("data:") and head.endswith(";base64")):
        return None
    try:
        return base64.b64decode(data, validate=True)
    except binascii.Error:
        return None


def describe_image(url: str) -> str:
    """`640x360 JPEG` for an inline image, or what else the URL is, for error messages."""
    data = data_url_bytes(url)
    if data is None:
        return "an undecodable data URL" if url.startswith("data:") else "a URL"
    try:
        with Image.open(io.BytesIO(data)) as image:
            return f"{image.width}x{image.height} {image.format}"
    except UnidentifiedImageError:
        return f"{len(data)} bytes that are no image"


def text_only(messages: list[Message], model_id: str) -> list[Message]:
    """The conversation with content parts joined into plain strings, for a model that reads text only; images
    raise `ImageInputError` saying what was sent and what to use instead."""
    urls = image_urls(messages)
    if urls:
        raise ImageInputError(
            f"{model_id} is a text-only model: it cannot read the {len(urls)} image(s) of this request "
            f"({', '.join(describe_image(url) for url in urls)}); image input needs a vision-language model "
            "(backend 'openai' against `vllm serve <VLM>`, or backend 'vllm')"
        )
    return [
        message
        if isinstance(message["content"], str)
        else {**message, "content": "".join(part["text"] for part in message["content"])}
        for message in messages
    ]
