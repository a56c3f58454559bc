"""What every LLM back-end shares: the messages it takes, the sampling it obeys, the completion it returns."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from configs.schema import LlmConfig

Message = dict[str, str]
Prompt = str | list[Message]


@dataclass(frozen=True)
class SamplingParams:
    """Part of every cache key: the same messages under other params are another call."""

    max_new_tokens: int
    temperature: float
    top_p: float
    seed: int

    @classmethod
    def from_config(cls, cfg: LlmConfig) -> SamplingParams:
        return cls(cfg.max_new_tokens, cfg.temperature, cfg.top_p, cfg.seed)


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
    """A back-end that cannot answer: a missing package, an unreachable server, an error status."""


def as_messages(prompt: Prompt) -> list[Message]:
    """A bare string is one user turn; the chat template adds the system turn the model expects."""
    return [{"role": "user", "content": prompt}] if isinstance(prompt, str) else list(prompt)
