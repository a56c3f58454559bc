"""vLLM's offline engine, for GPU machines: continuous batching and tensor parallelism over the whole batch.

vllm is imported only here, when this back-end is chosen, so CPU installs never need it. A conversation with images
(a vision-language model such as Qwen2-VL) goes in as a prompt rendered by the model's chat template, with an
image placeholder per image part, and the decoded images beside it as vLLM's `multi_modal_data`.
"""

from __future__ import annotations

import io
import threading
from typing import Any

from PIL import Image

from configs.schema import LlmConfig
from pipeline.models.assets import resolve_local
from pipeline.models.llm.base import (
    Completion,
    LlmBackendError,
    Message,
    SamplingParams,
    answer_prefix,
    data_url_bytes,
    image_urls,
)


class VllmBackend:
    def __init__(self, cfg: LlmConfig) -> None:
        try:
            import vllm
        except ImportError:
            raise LlmBackendError(
                "llm.backend 'vllm' needs the vllm package and a GPU (pip install vllm); without them use "
                "backend 'openai' against a `vllm serve` endpoint, or the embedded 'transformers' back-end"
            ) from None
        self._vllm = vllm
        local = resolve_local(cfg.model)
        self.model_id = cfg.model
        # passed only when images are allowed: vLLM releases have refused limit_mm_per_prompt for text-only models
        images = cfg.vllm.max_images_per_prompt
        multimodal = {"limit_mm_per_prompt": {"image": images}} if images else {}
        self.engine = vllm.LLM(
            model=str(local) if local is not None else cfg.model,
            tensor_parallel_size=cfg.vllm.tensor_parallel_size,
            gpu_memory_utilization=cfg.vllm.gpu_memory_utilization,
            max_model_len=cfg.vllm.max_model_len,
            dtype=cfg.vllm.dtype,
            seed=cfg.seed,
            **multimodal,
        )
        self._lock = threading.Lock()

    def complete(self, conversations: list[list[Message]], params: SamplingParams) -> list[Completion]:
        sampling = self._vllm.SamplingParams(
            max_tokens=params.max_new_tokens,
            temperature=params.temperature,
            top_p=params.top_p,
            seed=params.seed,
            repetition_penalty=params.repetition_penalty,
        )
        # `LLM.chat` continues the final message for a whole batch or for none: prefilled answers go apart.
        continued = [answer_prefix(conversation) is not None for conversation in conversations]
        pictured = [i for i, conversation in enumerate(conversations) if image_urls(conversation)]
        done: dict[int, Completion] = {}
        with self._lock:
            if pictured:
                prompts = [self._multimodal_prompt(conversations[i]) for i in pictured]
                for index, out in zip(pictured, self.engine.generate(prompts, sampling, use_tqdm=False), strict=True):
                    done[index] = Completion(out.outputs[0].text.strip(), out.outputs[0].finish_reason or "stop")
            for prefilled in (False, True):
                indices = [i for i, flag in enumerate(continued) if flag == prefilled and i not in done]
                if not indices:
                    continue
                outputs = self.engine.chat(
                    [conversations[i] for i in indices],
                    sampling,
                    use_tqdm=False,
                    add_generation_prompt=not prefilled,
                    continue_final_message=prefilled,
                )
                for index, out in zip(indices, outputs, strict=True):
                    text = out.outputs[0].text
                    # A continuation keeps its leading space: it may be what separates it from the prefilled text.
                    done[index] = Completion(
                        text.rstrip() if prefilled else text.strip(), out.outputs[0].finish_reason or "stop"
                    )
        return [done[index] for index in range(len(conversations))]

    def _multimodal_prompt(self, messages: list[Message]) -> dict[str, Any]:
        """The chat template places the model's own image tokens (Qwen2-VL: <|vision_start|><|image_pad|>...) where
        each `{"type": "image"}` part stands; vLLM fills them from `multi_modal_data` in the same order."""
        if answer_prefix(messages) is not None:
            raise LlmBackendError("the vllm back-end does not continue a prefilled answer beside images")
        images: list[Image.Image] = []
        turns: list[Message] = []
        for message in messages:
            if isinstance(message["content"], str):
                turns.append(message)
                continue
            parts = []
            for part in message["content"]:
                if part.get("type") != "image_url":
                    parts.append(part)
                    continue
                data = data_url_bytes(part["image_url"]["url"])
                if data is None:
                    raise LlmBackendError("the vllm back-end reads inline images (base64 data URLs) only")
                images.append(Image.open(io.BytesIO(data)).convert("RGB"))
                parts.append({"type": "image"})
            turns.append({**message, "content": parts})
        prompt = self.engine.get_tokenizer().apply_chat_template(turns, tokenize=False, add_generation_prompt=True)
        return {"prompt": prompt, "multi_modal_data": {"image": images}}
