"""vLLM's offline engine, for GPU machines: continuous batching and tensor parallelism over the whole batch.

vllm is imported only here, when this back-end is chosen, so CPU installs never need it.
"""

from __future__ import annotations

import threading

from configs.schema import LlmConfig
from pipeline.models.assets import resolve_local
from pipeline.models.llm.base import Completion, LlmBackendError, Message, SamplingParams, answer_prefix


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
        self.engine = vllm.LLM(
            model=str(local) if local is not None else cfg.model,
            tensor_parallel_size=cfg.vllm.tensor_parallel_size,
            gpu_memory_utilization=cfg.vllm.gpu_memory_utilization,
            max_model_len=cfg.vllm.max_model_len,
            dtype=cfg.vllm.dtype,
            seed=cfg.seed,
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
        done: dict[int, Completion] = {}
        with self._lock:
            for prefilled in (False, True):
                indices = [i for i, flag in enumerate(continued) if flag == prefilled]
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
