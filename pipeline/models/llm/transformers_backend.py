"""The embedded default: a small chat model run by transformers on CPU, from a GGUF file a package ships.

Reading a GGUF through transformers takes about 40 s (the `gguf` reader is pure Python), so the first load
converts it once to safetensors in a cache folder named by the file's sha256; later loads read that in a second.
"""

from __future__ import annotations

import logging
import os
import shutil
import threading
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

from configs.schema import LlmConfig
from pipeline.models.assets import file_digests, resolve_local
from pipeline.models.llm.base import Completion, Message, SamplingParams

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
    """Batched chat generation with left padding; greedy unless a temperature is set, so answers repeat."""

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
        with self._lock, torch.inference_mode():  # the lock covers the tokenizer too: it is not thread-safe
            texts = [
                self.tokenizer.apply_chat_template(c, tokenize=False, add_generation_prompt=True)
                for c in conversations
            ]
            batch = self.tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
            batch = batch.to(self.model.device)
            if sampling:
                torch.manual_seed(params.seed)
            output = self.model.generate(**batch, generation_config=generation)
            return [self._completion(row) for row in output[:, batch["input_ids"].shape[1] :].tolist()]

    def _completion(self, new_tokens: list[int]) -> Completion:
        end = next((i for i, token in enumerate(new_tokens) if token in self.stop_ids), None)
        kept = new_tokens if end is None else new_tokens[:end]
        text = self.tokenizer.decode(kept, skip_special_tokens=True).strip()
        return Completion(text, "length" if end is None else "stop")


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
