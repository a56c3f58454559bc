"""What every LLM back-end shares: the messages it takes, the sampling it obeys, the completion it returns.

A conversation that ends with an assistant message is a prefilled answer: the back-end continues that message
(vLLM's `continue_final_message`) instead of opening a new assistant turn, and returns only the text it adds.
"""

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
    later try may get an answer (the server was down or busy)."""

    def __init__(self, message: str, transient: bool = False) -> None:
        super().__init__(message)
        self.transient = transient


def as_messages(prompt: Prompt) -> list[Message]:
    """A bare string is one user turn; the chat template adds the system turn the model expects."""
    return [{"role": "user", "content": prompt}] if isinstance(prompt, str) else list(prompt)


def answer_prefix(messages: list[Message]) -> str | None:
    """The start of the answer a prefilled conversation asks the model to continue; None for a new turn."""
    return messages[-1]["content"] if messages and messages[-1]["role"] == "assistant" else None
