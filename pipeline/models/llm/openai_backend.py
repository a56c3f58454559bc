"""Any OpenAI-compatible chat endpoint: `vllm serve` in production, or this package's own `server.py`.

A prefilled answer (a conversation ending with an assistant message) is sent with vLLM's extra fields
`continue_final_message: true, add_generation_prompt: false`, and a repetition penalty as vLLM's extra
`repetition_penalty`; api.openai.com knows neither, so neither is sent when unused.

The API key comes from the environment variable the config names and lives only in the client's headers: it is
never logged, never in an error message, never in the call cache.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

import httpx

from configs.schema import LlmConfig
from pipeline.models.llm.base import Completion, LlmBackendError, Message, SamplingParams, answer_prefix


class OpenAiBackend:
    """Sends a batch as concurrent requests (`batch_size` in flight), which a vLLM server batches on the GPU."""

    def __init__(self, cfg: LlmConfig) -> None:
        key_env = cfg.openai.api_key_env
        api_key = os.environ.get(key_env) if key_env else None
        self.model_id = cfg.model
        self.concurrency = cfg.batch_size
        self.client = httpx.Client(
            base_url=cfg.openai.base_url,
            headers={"Authorization": f"Bearer {api_key}"} if api_key else {},
            timeout=cfg.openai.timeout_seconds,
        )

    def complete(self, conversations: list[list[Message]], params: SamplingParams) -> list[Completion]:
        with ThreadPoolExecutor(max_workers=max(1, min(self.concurrency, len(conversations)))) as pool:
            return list(pool.map(lambda messages: self._complete_one(messages, params), conversations))

    def _complete_one(self, messages: list[Message], params: SamplingParams) -> Completion:
        body = {
            "model": self.model_id,
            "messages": messages,
            "max_tokens": params.max_new_tokens,
            "temperature": params.temperature,
            "top_p": params.top_p,
            "seed": params.seed,
        }
        if params.repetition_penalty != 1.0:
            body["repetition_penalty"] = params.repetition_penalty
        if answer_prefix(messages) is not None:
            body["continue_final_message"], body["add_generation_prompt"] = True, False
        try:
            response = self.client.post("chat/completions", json=body)
        except httpx.TransportError as error:
            message = f"cannot reach {self.client.base_url}: {type(error).__name__}: {error}"
            raise LlmBackendError(message, transient=True, reason="endpoint_unreachable") from None
        if response.is_error:
            raise LlmBackendError(
                f"{self.client.base_url}chat/completions answered {response.status_code}: {response.text[:500]}",
                transient=response.status_code == 429 or response.status_code >= 500,
                reason=f"http_{response.status_code}",
            )
        try:
            choice = response.json()["choices"][0]
            return Completion(choice["message"].get("content") or "", choice.get("finish_reason") or "stop")
        except (ValueError, KeyError, IndexError, TypeError, AttributeError):  # not a chat completion at all
            message = f"{self.client.base_url}chat/completions sent no chat completion: {response.text[:200]!r}"
            raise LlmBackendError(message, reason="malformed_response") from None
