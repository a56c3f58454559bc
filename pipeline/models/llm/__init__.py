"""The LLM layer every text stage shares (taxonomy, metadata filters, transcript refinement, instruction data).

Stages hold an `Llm` from `load_llm(cfg)` and never see which back-end answers: the embedded SmolLM2 on CPU
(`transformers`), any OpenAI-compatible server (`openai`, e.g. `vllm serve`), or vLLM's offline engine on GPUs
(`vllm`). Every call goes through the call cache first, so a rerun never asks the same question twice. A
vision-language model (clip_filter's `vlm` section) takes the same calls with images as content parts (`image_part`).
"""

from __future__ import annotations

import json
import logging
import math
import time
from concurrent.futures import ThreadPoolExecutor

from configs.schema import LlmConfig
from pipeline.models.llm.base import (
    Completion,
    ImageInputError,
    LlmBackend,
    LlmBackendError,
    Message,
    Prompt,
    SamplingParams,
    as_messages,
    image_part,
    text_part,
)
from pipeline.models.llm.cache import CallCache, call_key, call_request
from pipeline.models.loading import loaded_once

logger = logging.getLogger(__name__)

__all__ = [
    "Completion",
    "ImageInputError",
    "Llm",
    "LlmBackend",
    "LlmBackendError",
    "Message",
    "Prompt",
    "SamplingParams",
    "image_part",
    "load_backend",
    "load_llm",
    "text_part",
]


class Llm:
    """A back-end behind the call cache, fed in batches of at most `batch_size`, `parallel_batches` of them at once
    (balanced, so one call's prompts spread over every thread); only uncached prompts reach the model.

    `max_retries`, `prefill_json` and `json_max_new_tokens` are read by the structured calls (`structured.py`).
    """

    def __init__(
        self,
        backend: LlmBackend,
        params: SamplingParams,
        batch_size: int,
        max_retries: int,
        cache: CallCache | None = None,
        prefill_json: bool = False,
        json_max_new_tokens: int | None = None,
        parallel_batches: int = 1,
    ) -> None:
        self.backend = backend
        self.parallel_batches = parallel_batches
        self.params = params
        self.batch_size = batch_size
        self.max_retries = max_retries
        self.cache = cache
        self.prefill_json = prefill_json
        self.json_max_new_tokens = json_max_new_tokens

    @property
    def model_id(self) -> str:
        return self.backend.model_id

    def complete(self, prompt: Prompt, params: SamplingParams | None = None) -> Completion:
        return self.complete_batch([prompt], params)[0]

    def complete_batch(self, prompts: list[Prompt], params: SamplingParams | None = None) -> list[Completion]:
        params = params or self.params
        conversations = [as_messages(prompt) for prompt in prompts]
        requests = [call_request(self.model_id, messages, params) for messages in conversations]
        keys = [call_key(request) for request in requests]
        answers = self.cache.get_many(keys) if self.cache is not None else {}
        # the model is sent the conversation itself; the request (images as digests) is what the cache keeps
        todo = list(
            {
                key: (request, messages)
                for key, request, messages in zip(keys, requests, conversations, strict=True)
                if key not in answers
            }.items()
        )
        if not todo:
            return [answers[key] for key in keys]
        todo.sort(key=lambda item: len(json.dumps(item[1][0]["messages"])))  # alike lengths pad less
        started = time.perf_counter()
        count = max(min(self.parallel_batches, len(todo)), math.ceil(len(todo) / self.batch_size))
        size = math.ceil(len(todo) / count)
        chunks = [todo[start : start + size] for start in range(0, len(todo), size)]

        def generate(chunk: list) -> list[Completion]:
            return self.backend.complete([messages for _, (_, messages) in chunk], params)

        with ThreadPoolExecutor(min(self.parallel_batches, len(chunks))) as pool:
            for chunk, completions in zip(chunks, pool.map(generate, chunks), strict=True):
                if self.cache is not None:
                    done_requests = [request for _, (request, _) in chunk]
                    self.cache.put_many(list(zip(done_requests, completions, strict=True)))
                answers.update({key: done for (key, _), done in zip(chunk, completions, strict=True)})
        elapsed = time.perf_counter() - started
        logger.debug("%s: %d prompts, %d generated in %.1f s", self.model_id, len(prompts), len(todo), elapsed)
        return [answers[key] for key in keys]


def load_backend(cfg: LlmConfig) -> LlmBackend:
    """The configured back-end, its heavy imports (torch, vllm, httpx) done only when it is chosen."""
    if cfg.backend == "transformers":
        from pipeline.models.llm.transformers_backend import TransformersBackend

        return TransformersBackend(cfg)
    if cfg.backend == "openai":
        from pipeline.models.llm.openai_backend import OpenAiBackend

        return OpenAiBackend(cfg)
    from pipeline.models.llm.vllm_backend import VllmBackend

    return VllmBackend(cfg)


@loaded_once
def load_llm(cfg: LlmConfig) -> Llm:
    """One loaded model per config and process, shared by every stage and video."""
    cache = CallCache(cfg.cache_path) if cfg.cache_path else None
    return Llm(
        load_backend(cfg),
        SamplingParams.from_config(cfg),
        cfg.batch_size,
        cfg.max_retries,
        cache,
        prefill_json=cfg.prefill_json,
        json_max_new_tokens=cfg.json_max_new_tokens,
        parallel_batches=cfg.transformers.parallel_batches if cfg.backend == "transformers" else 1,
    )
