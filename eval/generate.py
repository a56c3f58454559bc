"""Greedy generation for LLaVA-style models: transformers for a local HF-format checkpoint (CPU, our trained model),
vLLM for LLaVA-family hub models on GPUs (imported only when chosen).

Both count a prompt's tokens with the model's own processor (each `<image>` expanded to its patch tokens) and
compare prompt plus answer budget with the model's positions, times the RoPE factor when scaling is on. A prompt
that does not fit is not generated and comes back with `context_overflow`: nothing is truncated silently.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import Any, Protocol

from configs.eval import GenerationConfig, RopeScalingConfig
from eval.prompt import Prompt, prompt_images
from pipeline.models.assets import resolve_local

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Generation:
    text: str
    prompt_tokens: int
    context_overflow: bool


class Generator(Protocol):
    model_id: str
    eos_token: str

    def generate(self, prompts: list[Prompt], rope_scaled: bool) -> list[Generation]: ...


def _mean_fill(processor: Any) -> tuple[int, int, int]:
    mean = getattr(processor.image_processor, "image_mean", None) or (0.5, 0.5, 0.5)
    return tuple(int(round(value * 255)) for value in mean)


def _positions(text_config: Any) -> int:
    return int(text_config.max_position_embeddings)


def scaled_rope(text_config: Any, rope: RopeScalingConfig) -> dict[str, Any]:
    """The text model's RoPE parameters with the configured scaling type and factor."""
    current = dict(getattr(text_config, "rope_parameters", None) or {})
    return {**current, "rope_type": rope.type, "factor": rope.factor}


class TransformersLlava:
    """A local LlavaForConditionalGeneration and its processor; one model per RoPE setting, loaded when first
    needed. Batches are left-padded so every answer starts at the same column."""

    def __init__(self, model: str, cfg: GenerationConfig) -> None:
        import torch
        from transformers import AutoProcessor

        local = resolve_local(model)
        self.source = str(local) if local is not None else model
        self.model_id = local.name if local is not None else model
        self.cfg = cfg
        self.processor = AutoProcessor.from_pretrained(self.source)
        self.processor.tokenizer.padding_side = "left"
        self.eos_token = self.processor.tokenizer.eos_token
        self.fill = _mean_fill(self.processor)
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        self._models: dict[bool, Any] = {}
        self._lock = threading.Lock()

    def _model(self, rope_scaled: bool) -> Any:
        if rope_scaled not in self._models:
            import torch
            from transformers import AutoConfig, LlavaForConditionalGeneration

            config = AutoConfig.from_pretrained(self.source)
            if rope_scaled:
                config.text_config.rope_parameters = scaled_rope(config.text_config, self.cfg.rope_scaling)
            model = LlavaForConditionalGeneration.from_pretrained(
                self.source, config=config, dtype=getattr(torch, self.cfg.dtype)
            )
            self._models[rope_scaled] = model.to(self.cfg.device).eval()
        return self._models[rope_scaled]

    def _limit(self, rope_scaled: bool) -> int:
        positions = _positions(self._model(rope_scaled).config.text_config)
        return int(positions * self.cfg.rope_scaling.factor) if rope_scaled else positions

    def generate(self, prompts: list[Prompt], rope_scaled: bool) -> list[Generation]:
        import torch

        with self._lock, torch.inference_mode():
            model, limit = self._model(rope_scaled), self._limit(rope_scaled)
            batch = self._encode(prompts)
            lengths = [int(n) for n in batch["attention_mask"].sum(dim=1)]
            fits = [n + p.max_new_tokens <= limit for n, p in zip(lengths, prompts, strict=True)]
            runnable = [prompt for prompt, fit in zip(prompts, fits, strict=True) if fit]
            if runnable and len(runnable) < len(prompts):
                batch = self._encode(runnable)
            texts = iter(self._generate(model, batch, runnable) if runnable else [])
            return [
                Generation(next(texts) if fit else "", length, not fit)
                for length, fit in zip(lengths, fits, strict=True)
            ]

    def _encode(self, prompts: list[Prompt]) -> Any:
        images = [image for prompt in prompts for image in prompt_images(prompt, self.fill)]
        return self.processor(
            text=[prompt.text for prompt in prompts], images=images, return_tensors="pt", padding=True
        )

    def _generate(self, model: Any, batch: Any, prompts: list[Prompt]) -> list[str]:
        batch = batch.to(model.device)
        tokenizer = self.processor.tokenizer
        output = model.generate(
            **batch,
            do_sample=False,
            max_new_tokens=max(prompt.max_new_tokens for prompt in prompts),
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=tokenizer.eos_token_id,
        )
        new_tokens = output[:, batch["input_ids"].shape[1] :]
        return [text.strip() for text in tokenizer.batch_decode(new_tokens, skip_special_tokens=True)]


class VllmLlava:
    """vLLM's offline engine; RoPE scaling goes in through `hf_overrides` (a function of the HF config), so a
    scaled run is its own engine."""

    def __init__(self, model: str, cfg: GenerationConfig, max_images: int) -> None:
        from transformers import AutoProcessor

        try:
            import vllm
        except ImportError:
            raise RuntimeError("generation.backend 'vllm' needs the vllm package and a GPU") from None
        self._vllm = vllm
        local = resolve_local(model)
        self.source = str(local) if local is not None else model
        self.model_id = model
        self.cfg = cfg
        self.max_images = max_images
        self.processor = AutoProcessor.from_pretrained(self.source)
        self.eos_token = self.processor.tokenizer.eos_token
        self.fill = _mean_fill(self.processor)
        self._engines: dict[bool, Any] = {}

    def _engine(self, rope_scaled: bool) -> Any:
        if rope_scaled not in self._engines:
            self._engines.clear()  # one engine holds the GPU at a time
            self._engines[rope_scaled] = self._vllm.LLM(
                model=self.source,
                tensor_parallel_size=self.cfg.vllm.tensor_parallel_size,
                gpu_memory_utilization=self.cfg.vllm.gpu_memory_utilization,
                max_model_len=self.cfg.vllm.max_model_len,
                dtype=self.cfg.vllm.dtype,
                limit_mm_per_prompt={"image": self.max_images},
                hf_overrides=self._scale_rope if rope_scaled else None,
            )
        return self._engines[rope_scaled]

    def _scale_rope(self, config: Any) -> Any:
        config.text_config.rope_parameters = scaled_rope(config.text_config, self.cfg.rope_scaling)
        return config

    def generate(self, prompts: list[Prompt], rope_scaled: bool) -> list[Generation]:
        engine = self._engine(rope_scaled)
        limit = engine.llm_engine.model_config.max_model_len
        images = [prompt_images(prompt, self.fill) for prompt in prompts]
        lengths = [
            int(self.processor(text=[p.text], images=i, return_tensors="np")["input_ids"].shape[1])
            for p, i in zip(prompts, images, strict=True)
        ]
        fits = [n + p.max_new_tokens <= limit for n, p in zip(lengths, prompts, strict=True)]
        requests = [
            {"prompt": p.text, "multi_modal_data": {"image": i}}
            for p, i, fit in zip(prompts, images, fits, strict=True)
            if fit
        ]
        budgets = [p.max_new_tokens for p, fit in zip(prompts, fits, strict=True) if fit]
        sampling = [self._vllm.SamplingParams(temperature=0.0, max_tokens=budget) for budget in budgets]
        outputs = iter(engine.generate(requests, sampling, use_tqdm=False) if requests else [])
        return [
            Generation(next(outputs).outputs[0].text.strip() if fit else "", length, not fit)
            for length, fit in zip(lengths, fits, strict=True)
        ]


def load_generator(model: str, cfg: GenerationConfig, max_images: int) -> Generator:
    if cfg.backend == "transformers":
        return TransformersLlava(model, cfg)
    return VllmLlava(model, cfg, max_images)
