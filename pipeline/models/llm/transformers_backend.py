"""The embedded default: a small chat model run by transformers on CPU, from a GGUF file a package ships.

Reading a GGUF through transformers takes about 40 s (the `gguf` reader is pure Python), so the first load
converts it once to safetensors in a cache folder named by the file's sha256; later loads read that in a second.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import threading
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig, LogitsProcessor, LogitsProcessorList

from configs.schema import LlmConfig
from pipeline.models.assets import file_digests, resolve_local
from pipeline.models.llm.base import Completion, Message, SamplingParams, answer_prefix, text_only

logger = logging.getLogger(__name__)


def converted_model_dir(gguf: Path, cache_dir: Path) -> Path:
    """The GGUF as a transformers folder (safetensors, tokenizer.json, chat template), converted at most once.

    The conversion is written to a `.partial-<pid>` folder and renamed, so a killed run leaves no half model and
    two processes converting at once both end up with one complete folder.
    """
    target = cache_dir / f"{gguf.stem}-{file_digests(gguf)[str(gguf)][:16]}"
    if target.is_dir():
        return target
    logger.info("converting %s to safetensors in %s (once; later loads take seconds)", gguf.name, target)
    for stale in cache_dir.glob(f"{target.name}.partial-*"):
        if not _running(int(stale.name.rsplit("-", 1)[1])):  # left by a killed conversion
            shutil.rmtree(stale, ignore_errors=True)
    partial = target.with_name(f"{target.name}.partial-{os.getpid()}")
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
    # The weights are dequantized to plain tensors: drop the GGUF marks that make transformers refuse to save.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(partial)
    tokenizer.save_pretrained(partial)
    for file in partial.iterdir():
        with file.open("rb") as handle:
            os.fsync(handle.fileno())
    try:
        partial.rename(target)
    except OSError:  # another process renamed its conversion first
        shutil.rmtree(partial)
    return target


class TransformersBackend:
    """Batched chat generation with left padding; greedy unless a temperature is set, so answers repeat. Greedy
    calls may come from several threads at once (`parallel_batches`). Text only: a conversation with images is
    refused with `ImageInputError`."""

    def __init__(self, cfg: LlmConfig) -> None:
        local = resolve_local(cfg.model)
        if local is not None and local.suffix == ".gguf":
            local = converted_model_dir(local, Path(cfg.transformers.model_cache_dir).expanduser())
        source = str(local) if local is not None else cfg.model
        self.model_id = local.name if local is not None else cfg.model
        self.tokenizer = AutoTokenizer.from_pretrained(source, padding_side="left")
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.model = AutoModelForCausalLM.from_pretrained(source, dtype=getattr(torch, cfg.transformers.dtype))
        self.model.to(cfg.transformers.device).eval()
        if cfg.transformers.threads:
            torch.set_num_threads(cfg.transformers.threads)
        self.stop_ids = set(_as_list(self.model.generation_config.eos_token_id)) | {self.tokenizer.eos_token_id}
        self._lock = threading.Lock()

    def complete(self, conversations: list[list[Message]], params: SamplingParams) -> list[Completion]:
        conversations = [text_only(conversation, self.model_id) for conversation in conversations]
        sampling = params.temperature > 0
        generation = GenerationConfig(
            max_new_tokens=params.max_new_tokens,
            do_sample=sampling,
            temperature=params.temperature if sampling else None,
            top_p=params.top_p if sampling else None,
            top_k=None,
            pad_token_id=self.tokenizer.pad_token_id,
            eos_token_id=sorted(self.stop_ids),
        )
        prefixes = [answer_prefix(conversation) for conversation in conversations]
        with self._lock:  # the tokenizer is not thread-safe
            texts = [self._render(c, prefix) for c, prefix in zip(conversations, prefixes, strict=True)]
            batch = self.tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
        batch = batch.to(self.model.device)
        processors = LogitsProcessorList()
        if params.repetition_penalty != 1.0:
            prompt_length = batch["input_ids"].shape[1]  # left padding: every answer starts at this column
            processors.append(AnswerRepetitionPenalty(params.repetition_penalty, prompt_length, sorted(self.stop_ids)))
        # Greedy batches run side by side (each on its own thread); a sampled one holds the lock, since the seed
        # it sets is the whole process's.
        with self._lock if sampling else contextlib.nullcontext(), torch.inference_mode():
            if sampling:
                torch.manual_seed(params.seed)
            output = self.model.generate(**batch, generation_config=generation, logits_processor=processors)
        new_tokens = output[:, batch["input_ids"].shape[1] :].tolist()
        with self._lock:
            return [
                self._completion(row, prefix is not None) for row, prefix in zip(new_tokens, prefixes, strict=True)
            ]

    def _render(self, conversation: list[Message], prefix: str | None) -> str:
        """The chat template up to the assistant's turn, then the prefilled start of its answer, if any."""
        turns = conversation if prefix is None else conversation[:-1]
        text = self.tokenizer.apply_chat_template(turns, tokenize=False, add_generation_prompt=True)
        return text if prefix is None else text + prefix

    def _completion(self, new_tokens: list[int], continued: bool) -> Completion:
        end = next((i for i, token in enumerate(new_tokens) if token in self.stop_ids), None)
        kept = new_tokens if end is None else new_tokens[:end]
        text = self.tokenizer.decode(kept, skip_special_tokens=True)
        # A continuation keeps its leading space: it may be what separates it from the prefilled text.
        return Completion(text.rstrip() if continued else text.strip(), "length" if end is None else "stop")


class AnswerRepetitionPenalty(LogitsProcessor):
    """A repetition penalty over the answer being generated: a token it already holds has its logit divided by
    `penalty` (multiplied when negative), as transformers' and vLLM's penalty does, but the prompt is not counted
    and the end-of-turn tokens are spared. Counting the prompt would penalize the very keys and punctuation a JSON
    answer must repeat from its instruction (a second key never came), and the end of turn that the chat template
    puts in every prompt (the model then wrote on to max_new_tokens)."""

    def __init__(self, penalty: float, prompt_length: int, spared_ids: list[int]) -> None:
        self.penalty = penalty
        self.prompt_length = prompt_length
        self.spared_ids = spared_ids

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        vocab_size = scores.shape[-1]
        answer = input_ids[:, self.prompt_length :].clamp(max=vocab_size)  # ids past the vocab land in a spare column
        seen = torch.zeros((scores.shape[0], vocab_size + 1), dtype=torch.bool, device=scores.device)
        seen = seen.scatter_(1, answer, True)[:, :vocab_size]
        seen[:, self.spared_ids] = False
        penalized = torch.where(scores < 0, scores * self.penalty, scores / self.penalty)
        return torch.where(seen, penalized, scores)


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)  # signal 0 only asks whether the process exists
    except ProcessLookupError:
        return False
    except PermissionError:  # it does, as another user's
        pass
    return True


def _as_list(token_ids: int | list[int] | None) -> list[int]:
    if token_ids is None:
        return []
    return [token_ids] if isinstance(token_ids, int) else list(token_ids)
